"""``staycheck verify-online``, ``batch`` and ``certs demo``: partner provinces calling the
partner listener over mutual TLS, and throwaway certificates to try it with.

``verify-online`` and ``batch`` need the ``client`` extra; imported inside the commands."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from staycheck.cli.calls import reachable, rpc_failed
from staycheck.cli.common import (
    EXIT_OK,
    fail,
    print_json,
    read,
    rfc3339,
    server_address,
)
from staycheck.cli.traveller import load_itinerary
from staycheck.cli.verifier import add_identity_flags


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _partner_client(args: argparse.Namespace) -> Any:
    from staycheck.client.client import PartnerClient, tls_credentials

    credentials = tls_credentials(
        ca=read(args.ca, "ca"), cert=read(args.cert, "cert"), key=read(args.key, "key")
    )
    client = PartnerClient(args.server, credentials=credentials)
    reachable(args.server, client.channel, tls=True)
    return client


def cmd_verify_online(args: argparse.Namespace) -> int:
    """The online check: the server verifies the token; the binding, when checked, is
    derived here (the ID number never leaves this process) with the salt the presentation
    carries and the parameters the token names, and the server compares it. Those
    parameters come from a token not verified yet; they are held to the same bounds as
    everywhere (well under a second of Argon2id)."""
    import grpc
    from staycheck.cli.verifier import (
        HOW_TO_CHECK,
        binding_outcome,
        check_identity_flags,
        choose_identity,
        refused,
    )
    from staycheck.geo.errors import SignedDataError
    from staycheck.geo.itinerary import Status
    from staycheck.trust.presentation import read_presentation
    from staycheck.trust.verifier import SubjectId, reason

    check_identity_flags(args)
    text = sys.stdin.read().strip() if args.presentation == "-" else args.presentation
    try:
        presentation = read_presentation(text)
        claims = presentation.verdict()  # not verified: only to learn the binding's inputs
    except SignedDataError as e:
        return refused(f"{reason(e)}: {e}")
    outcome = binding_outcome(args, bool(claims.binding))
    if outcome is None:
        return refused(f"identity not checked: {HOW_TO_CHECK}")
    binding = b""
    identity = choose_identity(args, presentation)
    if isinstance(identity, SubjectId):
        if claims.binding_params is None:
            return refused("binding mismatch: token: not bound to anyone")
        if not identity.salt:
            return refused("binding mismatch: token: bound, but no salt was given")
        binding = identity.derive(claims.binding_params)
    with _partner_client(args) as c:
        try:
            r = c.verify_verdict(
                presentation.token_text,
                subject_binding=binding,
                min_riskset_version=args.min_riskset_version or 0,
            )
        except grpc.RpcError as e:
            rpc_failed(e)
    if not r.valid:
        return refused(r.reason)
    status = Status(r.status)
    print_json(
        {
            "status": status.name,
            "label": status.label_zh,
            "binding": outcome,
            "issuer": r.issuer,
            "issued_at": rfc3339(r.issued_at.seconds),
            "expires_at": rfc3339(r.expires_at.seconds),
            "riskset_version": r.riskset_version,
        }
    )
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    """One itinerary per line in, one JSON result per line out, in order. A line that is
    not an itinerary gets its own error here and is not sent."""
    import grpc
    from staycheck.geo.itinerary import Status

    try:
        lines = open(args.itineraries, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        fail(f"batch: cannot read {args.itineraries} ({e.strerror})")
    local_errors: dict[int, str] = {}
    sent: list[int] = []

    def itineraries() -> Any:
        for n, line in enumerate(lines):
            if not line.strip():
                local_errors[n] = "empty line"
                continue
            try:
                itinerary = load_itinerary(line)
            except ValueError as e:
                local_errors[n] = str(e)
                continue
            sent.append(n)
            yield itinerary

    def emit(obj: dict[str, Any]) -> None:
        print(json.dumps(obj, ensure_ascii=False), flush=False)

    next_line = 0

    def flush_local(upto: int) -> None:
        nonlocal next_line
        while next_line < upto:
            if next_line in local_errors:
                emit(
                    {
                        "line": next_line + 1,
                        "error": {"code": "INVALID_ARGUMENT", "message": local_errors[next_line]},
                    }
                )
            next_line += 1

    failures = 0
    with lines, _partner_client(args) as c:
        try:
            for r in c.submit_itineraries(itineraries()):
                line_no = sent[r.index]
                flush_local(line_no)
                next_line = line_no + 1
                if r.HasField("verdict"):
                    status = Status(r.verdict.status)
                    emit({"line": line_no + 1, "status": status.name, "token": r.verdict.token})
                else:
                    failures += 1
                    emit(
                        {
                            "line": line_no + 1,
                            "error": {"code": r.error.code, "message": r.error.message},
                        }
                    )
        except grpc.RpcError as e:
            rpc_failed(e)
        flush_local(max(local_errors, default=-1) + 1)
    sys.stdout.flush()
    failures += len(local_errors)
    total = len(sent) + len(local_errors)
    print(f"batch: {_count(total, 'line')}, {_count(failures, 'error')}", file=sys.stderr)
    return EXIT_OK


def cmd_certs_demo(args: argparse.Namespace) -> int:
    from staycheck.cli.certs import write_demo

    out = pathlib.Path(args.out)
    for path in write_demo(out):
        print(path)
    return EXIT_OK


def _partner_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        required=True,
        metavar="HOST:PORT",
        type=server_address,
        help="partner listener",
    )
    p.add_argument("--cert", required=True, metavar="PEM", help="partner certificate")
    p.add_argument("--key", required=True, metavar="PEM", help="its private key")
    p.add_argument("--ca", required=True, metavar="PEM", help="CA of the server certificate")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify-online",
        help="partners: verify a presentation through the server",
        description="Verify a presentation (or a bare token) through the issuer's partner "
        "listener. A verdict bound to a person needs --subject-id (the binding is derived "
        "here, never the ID sent) or --no-binding-check.",
    )
    p.add_argument(
        "presentation", metavar="PRESENTATION", help="SCP1:... or SC1:..., or - to read stdin"
    )
    add_identity_flags(p)
    _partner_flags(p)
    p.add_argument("--min-riskset-version", type=int, metavar="N")
    p.set_defaults(func=cmd_verify_online, extra="client")

    p = sub.add_parser("batch", help="partners: submit itineraries in bulk (JSON lines)")
    _partner_flags(p)
    p.add_argument("--itineraries", required=True, metavar="FILE.jsonl", help="one per line")
    p.set_defaults(func=cmd_batch, extra="client")

    p = sub.add_parser("certs", help="throwaway certificates for demos and tests")
    csub = p.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    c = csub.add_parser("demo", help="a CA, a server and two partner certificates")
    c.add_argument("--out", required=True, metavar="DIR")
    c.set_defaults(func=cmd_certs_demo, extra=None)

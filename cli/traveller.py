"""``staycheck submit`` and ``staycheck keys``: the traveller's side of a server.

Needs the ``client`` extra (grpc, protobuf); imported inside the commands only."""

from __future__ import annotations

import argparse
from typing import Any

from staycheck.cli.common import (
    EXIT_OK,
    fail,
    print_json,
    read,
    rfc3339,
    rpc_failed,
)


def _client(server: str, ca: str | None = None) -> Any:
    from staycheck.client.client import StayCheckClient, tls_credentials

    credentials = None if ca is None else tls_credentials(ca=read(ca, "ca"))
    return StayCheckClient(server, credentials=credentials)


def load_itinerary(data: bytes) -> Any:
    """Parse the proto3 JSON form of ``staycheck.v1.Itinerary``."""
    from google.protobuf import json_format
    from staycheck.v1 import verification_pb2 as pb

    try:
        return json_format.Parse(data, pb.Itinerary())
    except json_format.ParseError:
        # The parser's message may quote the input: say only where to look.
        raise ValueError("itinerary: not the proto3 JSON form of staycheck.v1.Itinerary") from None


def cmd_submit(args: argparse.Namespace) -> int:
    import grpc
    from staycheck.geo.itinerary import Status
    from staycheck.trust.binding import compute_binding, new_salt

    try:
        itinerary = load_itinerary(read(args.itinerary, "itinerary"))
    except ValueError as e:
        fail(f"submit: {e}")
    salt = binding = b""
    if args.subject_id is not None:
        salt = new_salt()
        try:
            binding = compute_binding(args.subject_id, salt)
        except ValueError as e:
            fail(f"submit: --subject-id: {e}")
    with _client(args.server, args.ca) as c:
        try:
            response = c.submit(itinerary, subject_binding=binding)
        except grpc.RpcError as e:
            rpc_failed(e)
    status = Status(response.status)
    out = {
        "status": status.name,
        "label": status.label_zh,
        "token": response.token,
        "issued_at": rfc3339(response.issued_at.seconds),
        "expires_at": rfc3339(response.expires_at.seconds),
        "riskset_version": response.riskset_version,
    }
    if salt:
        out["salt"] = salt.hex()
    print_json(out)
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    import grpc

    if args.server is None:
        fail("keys: --server is required (or use `staycheck keys rotate`)")
    with _client(args.server, args.ca) as c:
        try:
            text = c.verdict_keys_json()
        except grpc.RpcError as e:
            rpc_failed(e)
    print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``submit`` and ``keys``; returns the subcommands of ``keys`` (``rotate`` is added by
    the operator's module)."""
    p = sub.add_parser("submit", help="submit an itinerary, print the verdict")
    p.add_argument("--server", required=True, metavar="HOST:PORT")
    p.add_argument("--itinerary", required=True, metavar="FILE.json")
    p.add_argument(
        "--subject-id", metavar="ID", help="bind the verdict to this ID (hashed here, never sent)"
    )
    p.add_argument("--ca", metavar="PEM", help="use TLS, trusting this CA")
    p.set_defaults(func=cmd_submit, extra="client")

    p = sub.add_parser("keys", help="print the server's verdict keys (JWKS); rotate them")
    p.add_argument("--server", metavar="HOST:PORT")
    p.add_argument("--ca", metavar="PEM", help="use TLS, trusting this CA")
    p.set_defaults(func=cmd_keys, extra="client")
    return p.add_subparsers(dest="keys_command", metavar="COMMAND")

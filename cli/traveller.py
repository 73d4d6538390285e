"""``staycheck submit`` and ``staycheck keys``: the traveller's side of a server.

Needs the ``client`` extra (grpc, protobuf); imported inside the commands only."""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from typing import Any

from staycheck.cli.calls import oblivious_failed, reachable, rpc_failed
from staycheck.cli.common import (
    EXIT_OK,
    check_writable,
    fail,
    print_json,
    read,
    rfc3339,
    server_address,
)


def _client(server: str, ca: str | None = None) -> Any:
    from staycheck.client.client import StayCheckClient, tls_credentials

    credentials = None if ca is None else tls_credentials(ca=read(ca, "ca"))
    client = StayCheckClient(server, credentials=credentials)
    reachable(server, client.channel, tls=ca is not None)
    return client


STAY_FIELDS = {
    "city_code": "city_code",
    "cityCode": "city_code",
    "location": "location",
    "arrival": "arrival",
    "departure": "departure",
}
# RFC 3339 with a zone offset (proto3 JSON's Timestamp form).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def load_itinerary(data: bytes) -> Any:
    """Parse the proto3 JSON form of ``staycheck.v1.Itinerary``. A mistake is a
    ``ValueError`` naming the field and the rule; these are the user's own values, so a
    value may be shown (the server never shows one)."""
    from google.protobuf import json_format
    from staycheck.v1 import verification_pb2 as pb

    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("itinerary: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"itinerary: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    if not isinstance(doc, dict):
        raise ValueError('itinerary: must be a JSON object {"stays": [...]}')
    for name in doc:
        if name != "stays":
            raise ValueError(f'itinerary: unknown field {name!r} (the one field is "stays")')
    stays = doc.get("stays", [])
    if not isinstance(stays, list):
        raise ValueError("stays: must be a list of stays")
    for i, stay in enumerate(stays):
        _check_stay(f"stays[{i}]", stay)
    try:
        return json_format.ParseDict(doc, pb.Itinerary())
    except json_format.ParseError:
        # Not reached for the shapes checked above; the parser's text may be long.
        raise ValueError("itinerary: not the proto3 JSON form of staycheck.v1.Itinerary") from None


def _check_stay(where: str, stay: Any) -> None:
    if not isinstance(stay, dict):
        raise ValueError(f"{where}: must be an object with city_code, arrival, departure")
    for name in stay:
        if name not in STAY_FIELDS:
            known = ", ".join(sorted({*STAY_FIELDS.values()}))
            raise ValueError(f"{where}: unknown field {name!r} (known: {known})")
    code = stay.get("city_code", stay.get("cityCode"))
    if code is not None and not isinstance(code, str):
        raise ValueError(f'{where}.city_code: a text of six digits, e.g. "110100"')
    for name in ("arrival", "departure"):
        value = stay.get(name)
        if value is not None and (not isinstance(value, str) or not _RFC3339.fullmatch(value)):
            raise ValueError(
                f"{where}.{name}: an RFC 3339 time with a zone, e.g. 2026-11-28T08:00:00Z "
                f"(got {value!r})"
            )
    location = stay.get("location")
    if location is not None:
        if not isinstance(location, dict) or set(location) - {"latitude", "longitude"}:
            raise ValueError(f"{where}.location: an object with latitude and longitude")
        for name in ("latitude", "longitude"):
            value = location.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where}.location.{name}: a number of degrees")


def cmd_submit(args: argparse.Namespace) -> int:
    import grpc
    from staycheck.geo.itinerary import Status

    try:
        itinerary = load_itinerary(read(args.itinerary, "itinerary"))
    except ValueError as e:
        fail(f"submit: {e}")
    if args.qr == "-":
        import segno  # noqa: F401 (the qr extra, checked before submitting)
    elif args.qr is not None:
        _check_qr_target(args.qr)
    if args.oblivious:
        submitted = _submit_oblivious(args, itinerary)
    else:
        if args.server is None:
            fail("submit: give --server HOST:PORT, or --oblivious with --relay and --gateway-keys")
        with _client(args.server, args.ca) as c:
            try:
                submitted = c.submit_for(itinerary, subject_id=args.subject_id)
            except ValueError as e:  # an empty identity number
                fail(f"submit: --subject-id: {e}")
            except grpc.RpcError as e:
                rpc_failed(e)
    response = submitted.response
    status = Status(response.status)
    out = {
        "status": status.name,
        "label": status.label_zh,
        "presentation": submitted.presentation,
        "token": response.token,
        "issued_at": rfc3339(response.issued_at.seconds),
        "expires_at": rfc3339(response.expires_at.seconds),
        "riskset_version": response.riskset_version,
    }
    if submitted.salt:
        out["salt"] = submitted.salt.hex()
    if args.qr == "-":
        from staycheck.client.qr import draw_qr

        draw_qr(submitted.presentation, sys.stdout)
        print(f"{status.label_zh} {status.name}")
        return EXIT_OK
    print_json(out)  # first: the verdict is kept even if the image cannot be written
    if args.qr is not None:
        from staycheck.client.qr import write_qr

        try:
            write_qr(submitted.presentation, pathlib.Path(args.qr))
        except OSError as e:
            fail(f"submit: --qr: cannot write {args.qr} ({e.strerror or e}); the verdict is above")
    return EXIT_OK


def _submit_oblivious(args: argparse.Namespace, itinerary: Any) -> Any:
    """Through the relay: the relay learns the address and ciphertext, the gateway the
    itinerary and the relay's address (docs/rules.md, section 6)."""
    import ssl

    from staycheck.client.oblivious import (
        ObliviousCallError,
        ObliviousClient,
        load_key_configs,
    )

    if args.server is not None or args.relay is None or args.gateway_keys is None:
        fail("submit: --oblivious takes --relay URL and --gateway-keys URL|FILE, not --server")
    context = None if args.ca is None else ssl.create_default_context(cafile=args.ca)
    try:
        configs = load_key_configs(args.gateway_keys, context=context)
        client = ObliviousClient(args.relay, configs, context=context)
        return client.submit_for(itinerary, subject_id=args.subject_id)
    except ValueError as e:  # an empty identity number, or unusable gateway keys
        fail(f"submit: {e}")
    except ObliviousCallError as e:
        oblivious_failed(e)


def _check_qr_target(path: str) -> None:
    import segno  # noqa: F401 (the qr extra, before a verdict is issued that could be lost)
    from staycheck.client.qr import IMAGE_SUFFIXES

    if pathlib.Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        fail(f"submit: --qr {path}: the image must be a .png or .svg file, or - for the terminal")
    check_writable(pathlib.Path(path))


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
    p.add_argument("--server", metavar="HOST:PORT", type=server_address)
    p.add_argument("--itinerary", required=True, metavar="FILE.json")
    p.add_argument(
        "--subject-id",
        metavar="ID",
        help="bind the verdict to this ID number (derived here with Argon2id; never sent)",
    )
    p.add_argument(
        "--qr",
        metavar="FILE.png|FILE.svg|-",
        help="also write the presentation as a QR image, or draw it on the terminal (-)",
    )
    p.add_argument("--ca", metavar="PEM", help="use TLS, trusting this CA")
    p.add_argument(
        "--oblivious",
        action="store_true",
        help="submit through an Oblivious HTTP relay (RFC 9458) instead of --server: the "
        "relay sees your address but not the itinerary, the gateway the reverse",
    )
    p.add_argument("--relay", metavar="URL", help="with --oblivious: the relay's URL")
    p.add_argument(
        "--gateway-keys",
        metavar="URL|FILE",
        help="with --oblivious: the gateway's key configuration (its "
        "/.well-known/ohttp-gateway, or a file of application/ohttp-keys)",
    )
    p.set_defaults(func=cmd_submit, extra="client")

    p = sub.add_parser("keys", help="print the server's verdict keys (JWKS); rotate them")
    p.add_argument("--server", metavar="HOST:PORT", type=server_address)
    p.add_argument("--ca", metavar="PEM", help="use TLS, trusting this CA")
    p.set_defaults(func=cmd_keys, extra="client")
    return p.add_subparsers(dest="keys_command", metavar="COMMAND")

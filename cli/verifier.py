"""``staycheck verify``: a verdict token checked offline, against one issuer's key set or a
trust store of several.

Needs nothing but the base install (no grpc, no shapely, no numpy: an import-linter
contract holds this module to it)."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from staycheck.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    fail,
    now,
    print_json,
    read,
    rfc3339,
)
from staycheck.client.files import load_trust_store
from staycheck.geo.errors import ConfigurationError, SignedDataError
from staycheck.trust.binding import SALT_LENGTH, compute_binding
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.verifier import reason, verify_token


def cmd_verify(args: argparse.Namespace) -> int:
    token = sys.stdin.read().strip() if args.token == "-" else args.token  # noqa: S105
    trusted: Any
    try:
        if args.trust_store is not None:
            trusted = load_trust_store(pathlib.Path(args.trust_store))
        else:
            trusted = VerdictKeySet(KeySet.from_jwks(read(args.keys, "keys")))
    except ConfigurationError as e:
        fail(f"verify: {e}")
    binding = None
    if (args.subject_id is None) != (args.salt is None):
        fail("verify: --subject-id and --salt go together")
    if args.subject_id is not None:
        try:
            salt = bytes.fromhex(args.salt)
            if len(salt) != SALT_LENGTH:
                raise ValueError
            binding = compute_binding(args.subject_id, salt)
        except ValueError:
            fail(f"verify: --salt must be {SALT_LENGTH} bytes in hex; --subject-id non-empty")
    try:
        verdict = verify_token(
            token,
            trusted,
            now=now(),
            subject_binding=binding,
            min_riskset_version=args.min_riskset_version,
        )
    except SignedDataError as e:
        print(f"refused: {reason(e)}: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print_json(
        {
            "status": verdict.status.name,
            "label": verdict.status.label_zh,
            "issuer": verdict.issuer,
            "issued_at": rfc3339(verdict.issued_at),
            "expires_at": rfc3339(verdict.expires_at),
            "riskset_version": verdict.riskset_version,
            "bound": bool(verdict.binding),
        }
    )
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify a verdict token offline")
    p.add_argument("token", metavar="TOKEN", help="SC1:... or - to read stdin")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keys", metavar="JWKS.json", help="one issuer's keys")
    which.add_argument("--trust-store", metavar="TOML", help="several issuers (federation)")
    p.add_argument("--subject-id", metavar="ID")
    p.add_argument("--salt", metavar="HEX")
    p.add_argument("--min-riskset-version", type=int, metavar="N")
    p.set_defaults(func=cmd_verify, extra=None)

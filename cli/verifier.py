"""``staycheck verify``: a presentation (or a bare token) checked offline, against one
issuer's key set or a trust store of several.

The identity check is the clerk's explicit choice: a verdict bound to a person is accepted
only with ``--subject-id`` (checked against the binding, with the salt the presentation
carries) or ``--no-binding-check``; the output always says which (``binding: checked``,
``binding: not checked``, or ``binding: none`` for an unbound verdict).

Needs nothing but the base install (no grpc, no shapely, no numpy: an import-linter
contract holds this module to it); ``--qr`` needs the ``qr`` extra."""

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
from staycheck.trust.binding import SALT_LENGTH
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.presentation import Presentation, read_presentation
from staycheck.trust.truststore import TrustStore
from staycheck.trust.verifier import (
    NO_BINDING_CHECK,
    Identity,
    SubjectId,
    reason,
    verify_token,
)

HOW_TO_CHECK = (
    "this verdict is bound to a person: give --subject-id ID (the number on the ID card "
    "of the person showing it), or --no-binding-check to accept it without checking who "
    "shows it"
)


def _presentation_text(args: argparse.Namespace) -> str:
    if args.qr is not None:
        from staycheck.client.qr import read_qr

        if args.presentation is not None:
            fail("verify: give the presentation as text or as --qr IMAGE, not both")

        try:
            return read_qr(pathlib.Path(args.qr))
        except ValueError as e:  # the image's fault: an input error, like a bad file
            fail(f"verify: --qr: {e}")
        except OSError as e:
            fail(f"verify: --qr: cannot read {args.qr} ({e.strerror or e})")
    if args.presentation is None:
        fail("verify: give the presentation (SCP1:... or SC1:...), - to read it, or --qr IMAGE")
    text: str = sys.stdin.read() if args.presentation == "-" else args.presentation
    return text.strip()


def _salt(args: argparse.Namespace, presentation: Presentation) -> bytes:
    if args.salt is None:
        return presentation.salt
    if presentation.salt:
        fail(f"{args.command}: the presentation carries its salt; drop --salt")
    try:
        salt = bytes.fromhex(args.salt)
    except ValueError:
        salt = b""
    if len(salt) != SALT_LENGTH:
        fail(f"{args.command}: --salt must be {SALT_LENGTH} bytes in hex")
    return salt


def check_identity_flags(args: argparse.Namespace) -> None:
    """Usage errors of the identity flags, before anything is read (exit 2 first)."""
    if args.salt is not None and args.subject_id is None:
        fail(f"{args.command}: --salt goes with --subject-id")


def choose_identity(args: argparse.Namespace, presentation: Presentation) -> Identity:
    """The clerk's choice as the verifier takes it: ``SubjectId`` with the presentation's
    salt (or ``--salt`` for a bare token), else ``NO_BINDING_CHECK``; whether that was an
    explicit choice is for :func:`binding_outcome` to say."""
    if args.subject_id is None:
        return NO_BINDING_CHECK
    try:
        return SubjectId(args.subject_id, _salt(args, presentation))
    except ValueError as e:
        fail(f"{args.command}: --subject-id: {e}")


def binding_outcome(args: argparse.Namespace, bound: bool) -> str | None:
    """What the output says of identity: ``checked``, ``not checked`` (explicitly chosen),
    ``none`` (an unbound verdict); None when a bound verdict came with no choice at all."""
    if not bound:
        return "none"
    if args.subject_id is not None:
        return "checked"
    return "not checked" if args.no_binding_check else None


def add_identity_flags(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--subject-id", metavar="ID", help="check the binding against this ID number"
    )
    which.add_argument(
        "--no-binding-check",
        action="store_true",
        help="accept a bound verdict without checking who shows it",
    )
    p.add_argument(
        "--salt", metavar="HEX", help="the salt, for a bare SC1: token (a presentation has it)"
    )


def _from_repository(args: argparse.Namespace, issuer: str) -> Any:
    """The issuer's key set from the TUF repository, refreshed now (``--repository``)."""
    import hashlib

    from staycheck.client.repository import RepositoryClient, issuer_keys_path
    from tuf.api.exceptions import DownloadError, RepositoryError

    if args.trusted_root is None:
        fail("verify: --repository needs --trusted-root ROOT.json (the root you were given)")
    root = read(args.trusted_root, "trusted root")
    cache = (
        pathlib.Path(args.cache)
        if args.cache
        else _cache_dir() / hashlib.sha256(root).hexdigest()[:16]
    )
    try:
        client = RepositoryClient(cache, args.repository, trusted_root=root)
        client.refresh()
        keys = KeySet.from_jwks(client.target(issuer_keys_path(issuer)))
        if keys.issuer != issuer:
            raise ConfigurationError(f"names issuer {keys.issuer}, not {issuer}")
        return VerdictKeySet(keys)
    except (RepositoryError, DownloadError) as e:
        fail(f"verify: --repository: {type(e).__name__}: {e}")
    except ConfigurationError as e:
        fail(f"verify: --repository: the key set of {issuer}: {e}")
    except OSError as e:
        fail(f"verify: --repository: {e.strerror or e}")


def _cache_dir() -> pathlib.Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "staycheck" / "repositories"


def _trusted(args: argparse.Namespace) -> Any:
    try:
        if args.trust_store is not None:
            return load_trust_store(pathlib.Path(args.trust_store))
        return VerdictKeySet(KeySet.from_jwks(read(args.keys, "keys")))
    except ConfigurationError as e:
        fail(f"verify: {e}")


def evaluation_time(text: str) -> int:
    """``--at``: Unix seconds, or an RFC 3339 time with a zone (argparse type)."""
    import datetime as dt

    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give Unix seconds or an RFC 3339 time with a zone, e.g. "
            "2026-12-01T08:00:00Z"
        )
    return int(moment.timestamp())


def _warn_if_stale(args: argparse.Namespace, trusted: Any, p: Presentation, at: int) -> None:
    """Warn (never refuse) when the key set is older than the refresh interval its issuer
    asks for: a new verdict key is published a day before it signs, so a stale key set is
    what makes "unknown key" after a rotation."""
    keys = trusted
    if isinstance(trusted, TrustStore):
        try:
            keys = trusted.key_set_for(p.verdict().issuer)
        except SignedDataError:
            return  # the verification says what is wrong
    if keys.refresh_interval_s is None or keys.published_at is None:
        return
    age = at - keys.published_at
    if age > keys.refresh_interval_s:
        where = args.keys if args.keys is not None else args.trust_store
        print(
            f"staycheck: warning: the key set ({where}) was published {_hours(age)} ago; its "
            f"issuer asks verifiers to fetch it every {_hours(keys.refresh_interval_s)} "
            "(staycheck keys --server HOST:PORT > FILE)",
            file=sys.stderr,
        )


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.0f} h" if seconds >= 3600 else f"{seconds // 60} min"


def refused(message: str) -> int:
    print(f"refused: {message}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_verify(args: argparse.Namespace) -> int:
    check_identity_flags(args)
    text = _presentation_text(args)
    if args.repository is None:
        trusted = _trusted(args)
    try:
        presentation = read_presentation(text)
    except SignedDataError as e:
        return refused(f"{reason(e)}: {e}")
    if args.repository is not None:
        # The issuer the token names picks the key set to fetch; the signature check that
        # follows decides whether that was the truth.
        trusted = _from_repository(args, presentation.verdict().issuer)
    identity = choose_identity(args, presentation)
    at = now() if args.at is None else args.at
    _warn_if_stale(args, trusted, presentation, at)
    try:
        verdict = verify_token(
            presentation.token,
            trusted,
            now=at,
            identity=identity,
            min_riskset_version=args.min_riskset_version,
        )
    except SignedDataError as e:
        return refused(f"{reason(e)}: {e}")
    binding = binding_outcome(args, bool(verdict.binding))
    if binding is None:
        return refused(f"identity not checked: {HOW_TO_CHECK}")
    result = {
        "status": verdict.status.name,
        "label": verdict.status.label_zh,
        "binding": binding,
        "issuer": verdict.issuer,
        "issued_at": rfc3339(verdict.issued_at),
        "expires_at": rfc3339(verdict.expires_at),
        "riskset_version": verdict.riskset_version,
    }
    if args.json:
        print_json(result)
    else:
        print(f"{verdict.status.label_zh} {verdict.status.name}")
        print(f"binding: {binding}")
        print(f"issuer: {verdict.issuer}")
        print(f"issued at: {result['issued_at']}")
        print(f"expires at: {result['expires_at']}")
        print(f"risk-area version: {verdict.riskset_version}")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="verify a presentation (QR) or a token offline",
        description="Verify a presentation offline: the issuer's signature and key, the "
        "times, and, for a verdict bound to a person, the binding against their ID number "
        "(--subject-id) unless --no-binding-check says not to. Exit 0 accepted, 1 refused, "
        "2 usage error.",
    )
    p.add_argument(
        "presentation",
        nargs="?",
        metavar="PRESENTATION",
        help="SCP1:... (or a bare SC1: token); - reads it from standard input",
    )
    p.add_argument("--qr", metavar="IMAGE", help="read the presentation from a QR image")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keys", metavar="JWKS.json", help="one issuer's keys")
    which.add_argument("--trust-store", metavar="TOML", help="several issuers (federation)")
    which.add_argument(
        "--repository",
        metavar="URL|DIR",
        help="fetch the issuer's keys from the TUF repository, checked from --trusted-root "
        "(needs the repository extra)",
    )
    p.add_argument("--trusted-root", metavar="ROOT.json", help="with --repository")
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="with --repository: where TUF's trusted metadata is kept "
        "(default ~/.cache/staycheck/repositories/...)",
    )
    add_identity_flags(p)
    p.add_argument("--min-riskset-version", type=int, metavar="N")
    p.add_argument(
        "--at",
        type=evaluation_time,
        metavar="TIME",
        help="verify as of TIME (RFC 3339 or Unix seconds) instead of now: audits, and the "
        "conformance vectors",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_verify, extra=None)

"""The ``staycheck`` command line.

Subcommands: ``authority keygen|sign|inspect`` (the health authority's tools), ``serve``
(the server, imported only for that subcommand), ``submit``, ``keys`` and ``verify`` (the
traveller's and verifier's side), and ``demo`` (the whole story on embedded sample data).

Exit codes: 0 success; 1 a refusal (a token or bundle that does not verify, a call the
server refused); 2 a usage or input error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from geo.errors import Error, SignedDataError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _now() -> int:
    return int(time.time())


def _rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"staycheck: {message}", file=sys.stderr)
    raise SystemExit(code)


def _read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        _fail(f"{what}: cannot read {path} ({e.strerror})")


def _check_writable(*paths: pathlib.Path) -> None:
    """Fail before writing anything if a target's folder is missing or not writable."""
    for path in paths:
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            _fail(f"cannot write {path} (folder missing or not writable)")


def _write_atomic(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Write beside ``path`` and rename over it: readers never see half a file."""
    from client.fsutil import atomic_write

    _check_writable(path)
    try:
        atomic_write(path, data, mode=mode)
    except OSError as e:
        _fail(f"cannot write {path} ({e.strerror})")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False))


# --- authority --------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from geo.keys import Ed25519Signer

    signer = Ed25519Signer.generate()
    private, public = pathlib.Path(args.private), pathlib.Path(args.public)
    if not args.force and (private.exists() or public.exists()):
        _fail("keygen: refusing to overwrite an existing key file (use --force)")
    _check_writable(private, public)
    _write_atomic(private, signer.to_pem(), 0o600)
    _write_atomic(public, signer.public_key.to_pem(), 0o644)
    print(f"authority key {signer.kid.hex()}: private {private} (0600), public {public}")
    return EXIT_OK


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total >= 1000:
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(f"\rbuilding [{bar}] {done}/{total} areas", end=end, file=sys.stderr, flush=True)


def cmd_sign(args: argparse.Namespace) -> int:
    from geo.authoring import build_bundle, parse_time
    from geo.bundle import Level, Policy
    from geo.keys import Ed25519Signer
    from geo.trust import sign_bundle

    try:
        expires = parse_time(args.expires)
        issued = parse_time(args.issued_at) if args.issued_at else _now()
    except ValueError:
        _fail("sign: --expires and --issued-at must be RFC 3339 times with an offset")
    try:
        levels = frozenset(Level.parse(x) for x in args.flag_levels.split(",") if x.strip())
    except ValueError:
        _fail("sign: --flag-levels must be a comma-separated list of low, medium, high")
    policy = Policy(
        window_days=args.window_days,
        min_stay_s=round(args.min_stay_hours * 3600),
        flagged_levels=levels,
        tolerance_m=args.tolerance_m,
    )
    try:
        collection = json.loads(_read(args.areas, "areas"))
    except ValueError:
        _fail("sign: --areas is not valid JSON")
    signer = Ed25519Signer.from_pem(_read(args.key, "key"))
    out = pathlib.Path(args.out)
    _check_writable(out)
    msg = build_bundle(
        collection,
        version=args.version,
        issued_at=issued,
        expires_at=expires,
        policy=policy,
        progress=_progress,
    )
    data = sign_bundle(msg.SerializeToString(deterministic=True), signer)
    _write_atomic(out, data, 0o644)
    print(
        f"signed bundle version {args.version}: {len(msg.areas)} areas, expires "
        f"{_rfc3339(expires)}, sha256 {hashlib.sha256(data).hexdigest()} -> {out}"
    )
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from geo.keys import AuthorityKeySet, KeySet, PublicKey
    from geo.trust import open_bundle

    key = PublicKey.from_pem(_read(args.authority_key, "authority key"))
    try:
        bundle = open_bundle(_read(args.bundle, "bundle"), AuthorityKeySet(KeySet([key])))
    except SignedDataError as e:
        _fail(f"inspect: bundle refused: {e}", EXIT_REFUSED)
    policy = bundle.policy
    _print_json(
        {
            "version": bundle.version,
            "issued_at": _rfc3339(bundle.issued_at),
            "expires_at": _rfc3339(bundle.expires_at),
            "expired": bundle.expires_at <= _now(),
            "policy": {
                "window_days": policy.window_days,
                "min_stay_hours": policy.min_stay_s / 3600,
                "flagged_levels": sorted(lv.label for lv in policy.flagged_levels),
                "tolerance_m": policy.tolerance_m,
            },
            "area_count": bundle.area_count,
            "flagged_area_count": len(bundle.index),
            "sha256": bundle.digest,
            "signed_by": key.kid.hex(),
        }
    )
    return EXIT_OK


def _authority_keys(path: str) -> Any:
    from geo.keys import AuthorityKeySet, KeySet, PublicKey

    return AuthorityKeySet(KeySet([PublicKey.from_pem(_read(path, "authority key"))]))


def _verified_bundle_message(path: str, keys: Any, what: str) -> Any:
    """The ``RiskAreaBundle`` message of a bundle file whose signature verifies."""
    from geo import cose
    from geo._pb import bundle_pb2
    from geo.trust import DEFAULT_MAX_BUNDLE_SIZE, open_bundle

    data = _read(path, what)
    try:
        open_bundle(data, keys)  # signature, content type and the bundle's invariants
    except SignedDataError as e:
        _fail(f"{what}: bundle refused: {e}", EXIT_REFUSED)
    # The same bytes that were just verified: decode their payload for the whole message.
    payload = cose.decode_sign1(data, max_size=DEFAULT_MAX_BUNDLE_SIZE).payload
    return bundle_pb2.RiskAreaBundle.FromString(payload)


def cmd_render(args: argparse.Namespace) -> int:
    from client.samples import cities
    from geo.render import CityMarker, render_svg

    msg = _verified_bundle_message(args.bundle, _authority_keys(args.authority_key), "render")
    # Beijing, Tianjin and Hebei, plus any shipped city that holds an area.
    held = {area.city_code for area in msg.areas}
    markers = [
        CityMarker(c.code, c.name_en, c.lat, c.lon)
        for c in cities().values()
        if c.code[:2] in ("11", "12", "13") or c.code in held
    ]
    out = pathlib.Path(args.out)
    _write_atomic(out, render_svg(msg, markers).encode("utf-8"), 0o644)
    print(
        f"drew {len(msg.areas)} areas of bundle version {msg.version} "
        f"over {len(markers)} cities -> {out}"
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from geo.diff import diff_bundles, format_diff

    keys = _authority_keys(args.authority_key)
    old = _verified_bundle_message(args.old, keys, "diff: OLD")
    new = _verified_bundle_message(args.new, keys, "diff: NEW")
    print(format_diff(diff_bundles(old, new)), end="")
    return EXIT_OK


# --- server -----------------------------------------------------------------------------


SERVE_FLAGS = (
    "listen", "bundle", "authority_key", "state_dir", "issuer", "tls_cert", "tls_key",
    "insecure", "partner_listen", "partner_ca", "partners", "trust_store", "metrics_listen",
    "access_log", "log_level", "log_format", "workers",
)  # fmt: skip


def _server_config(args: argparse.Namespace, config_file: str | None) -> Any:
    """Flags > STAYCHECK_* environment > config file > defaults (read here, in the entry
    point, and nowhere else)."""
    import tomllib

    from server.config import build_config

    file = None
    if config_file is not None:
        try:
            file = tomllib.loads(_read(config_file, "config").decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            _fail(f"config: {config_file} is not valid TOML")
    flags = {name: getattr(args, name, None) for name in SERVE_FLAGS}
    return build_config(file=file, env=os.environ, flags=flags)


def cmd_serve(args: argparse.Namespace) -> int:
    from server import logs
    from server.app import run

    config = _server_config(args, args.config)
    logs.setup(config.log_level, config.log_format)
    return run(config)


def cmd_config_check(args: argparse.Namespace) -> int:
    from server.config import effective

    config = _server_config(argparse.Namespace(), args.file)
    _print_json(effective(config))
    return EXIT_OK


# --- traveller and verifier ---------------------------------------------------------------


def _client(server: str, ca: str | None = None) -> Any:
    from client.client import StayCheckClient, tls_credentials

    credentials = None if ca is None else tls_credentials(ca=_read(ca, "ca"))
    return StayCheckClient(server, credentials=credentials)


def _partner_client(args: argparse.Namespace) -> Any:
    from client.client import PartnerClient, tls_credentials

    credentials = tls_credentials(
        ca=_read(args.ca, "ca"), cert=_read(args.cert, "cert"), key=_read(args.key, "key")
    )
    return PartnerClient(args.server, credentials=credentials)


def _rpc_failed(e: Any) -> NoReturn:
    _fail(f"server refused: {e.code().name}: {e.details()}", EXIT_REFUSED)


def load_itinerary(data: bytes) -> Any:
    """Parse the proto3 JSON form of ``staycheck.v1.Itinerary``."""
    from google.protobuf import json_format

    from client._pb import verification_pb2 as pb

    try:
        return json_format.Parse(data, pb.Itinerary())
    except json_format.ParseError:
        # The parser's message may quote the input: say only where to look.
        raise ValueError("itinerary: not the proto3 JSON form of staycheck.v1.Itinerary") from None


def cmd_submit(args: argparse.Namespace) -> int:
    import grpc

    from client.binding import compute_binding, new_salt
    from geo.matching import Status

    try:
        itinerary = load_itinerary(_read(args.itinerary, "itinerary"))
    except ValueError as e:
        _fail(f"submit: {e}")
    salt = binding = b""
    if args.subject_id is not None:
        salt = new_salt()
        try:
            binding = compute_binding(args.subject_id, salt)
        except ValueError as e:
            _fail(f"submit: --subject-id: {e}")
    with _client(args.server, args.ca) as c:
        try:
            response = c.submit(itinerary, subject_binding=binding)
        except grpc.RpcError as e:
            _rpc_failed(e)
    status = Status(response.status)
    out = {
        "status": status.name,
        "label": status.label_zh,
        "token": response.token,
        "issued_at": _rfc3339(response.issued_at.seconds),
        "expires_at": _rfc3339(response.expires_at.seconds),
        "riskset_version": response.riskset_version,
    }
    if salt:
        out["salt"] = salt.hex()
    _print_json(out)
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    import grpc

    if args.server is None:
        _fail("keys: --server is required (or use `staycheck keys rotate`)")
    with _client(args.server, args.ca) as c:
        try:
            text = c.verdict_keys_json()
        except grpc.RpcError as e:
            _rpc_failed(e)
    print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from client.binding import SALT_LENGTH, compute_binding
    from client.truststore import TrustStore
    from client.verifier import reason, verify_token
    from geo.errors import ConfigurationError
    from geo.keys import KeySet, VerdictKeySet

    token = sys.stdin.read().strip() if args.token == "-" else args.token  # noqa: S105
    trusted: Any
    try:
        if args.trust_store is not None:
            trusted = TrustStore.load(pathlib.Path(args.trust_store))
        else:
            trusted = VerdictKeySet(KeySet.from_jwks(_read(args.keys, "keys")))
    except ConfigurationError as e:
        _fail(f"verify: {e}")
    binding = None
    if (args.subject_id is None) != (args.salt is None):
        _fail("verify: --subject-id and --salt go together")
    if args.subject_id is not None:
        try:
            salt = bytes.fromhex(args.salt)
            if len(salt) != SALT_LENGTH:
                raise ValueError
            binding = compute_binding(args.subject_id, salt)
        except ValueError:
            _fail(f"verify: --salt must be {SALT_LENGTH} bytes in hex; --subject-id non-empty")
    try:
        verdict = verify_token(
            token,
            trusted,
            now=_now(),
            subject_binding=binding,
            min_riskset_version=args.min_riskset_version,
        )
    except SignedDataError as e:
        print(f"refused: {reason(e)}: {e}", file=sys.stderr)
        return EXIT_REFUSED
    _print_json(
        {
            "status": verdict.status.name,
            "label": verdict.status.label_zh,
            "issuer": verdict.issuer,
            "issued_at": _rfc3339(verdict.issued_at),
            "expires_at": _rfc3339(verdict.expires_at),
            "riskset_version": verdict.riskset_version,
            "bound": bool(verdict.binding),
        }
    )
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    from server.keystore import ROTATION_GRACE_S, VerdictKeyStore

    store = VerdictKeyStore(pathlib.Path(args.state_dir), issuer="")
    kid = store.rotate(now=_now())
    print(
        f"new verdict key {kid} signs from now on; the old key stops signing within "
        f"{ROTATION_GRACE_S} s and stays published until its verdicts have expired"
    )
    return EXIT_OK


def cmd_verify_online(args: argparse.Namespace) -> int:
    import grpc

    from geo.matching import Status

    token = sys.stdin.read().strip() if args.token == "-" else args.token  # noqa: S105
    with _partner_client(args) as c:
        try:
            r = c.verify_verdict(token, min_riskset_version=args.min_riskset_version or 0)
        except grpc.RpcError as e:
            _rpc_failed(e)
    if not r.valid:
        print(f"refused: {r.reason}", file=sys.stderr)
        return EXIT_REFUSED
    status = Status(r.status)
    _print_json(
        {
            "status": status.name,
            "label": status.label_zh,
            "issuer": r.issuer,
            "issued_at": _rfc3339(r.issued_at.seconds),
            "expires_at": _rfc3339(r.expires_at.seconds),
            "riskset_version": r.riskset_version,
        }
    )
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    """One itinerary per line in, one JSON result per line out, in order. A line that is
    not an itinerary gets its own error here and is not sent."""
    import grpc

    from geo.matching import Status

    try:
        lines = open(args.itineraries, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        _fail(f"batch: cannot read {args.itineraries} ({e.strerror})")
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
            _rpc_failed(e)
        flush_local(max(local_errors, default=-1) + 1)
    sys.stdout.flush()
    failures += len(local_errors)
    print(f"batch: {len(sent) + len(local_errors)} lines, {failures} errors", file=sys.stderr)
    return EXIT_OK


def cmd_certs_demo(args: argparse.Namespace) -> int:
    from client.certs import write_demo

    out = pathlib.Path(args.out)
    for path in write_demo(out):
        print(path)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from client.demo import run_demo

    return run_demo()


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="staycheck",
        description="Privacy-preserving itinerary verification: signed risk areas in, "
        "signed verdicts out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    authority = sub.add_parser("authority", help="health authority tools: keys, bundles")
    asub = authority.add_subparsers(dest="authority_command", required=True, metavar="COMMAND")
    p = asub.add_parser("keygen", help="make an Ed25519 authority key pair")
    p.add_argument("--private", required=True, metavar="PATH", help="private key (PEM, 0600)")
    p.add_argument("--public", required=True, metavar="PATH", help="public key (PEM)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_keygen)

    p = asub.add_parser("sign", help="build and sign a risk-area bundle from GeoJSON")
    p.add_argument("--areas", required=True, metavar="AREAS.geojson")
    p.add_argument("--version", required=True, type=int, metavar="N", help="strictly increasing")
    p.add_argument("--expires", required=True, metavar="RFC3339")
    p.add_argument("--issued-at", metavar="RFC3339", help="default: now")
    p.add_argument("--key", required=True, metavar="PRIVATE", help="authority private key")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="written atomically")
    p.add_argument("--window-days", type=int, default=14, metavar="DAYS")
    p.add_argument("--min-stay-hours", type=float, default=4.0, metavar="HOURS")
    p.add_argument("--tolerance-m", type=float, default=0.0, metavar="METRES")
    p.add_argument("--flag-levels", default="medium,high", metavar="LEVELS")
    p.set_defaults(func=cmd_sign)

    p = asub.add_parser("inspect", help="check a bundle's signature and show what it holds")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--authority-key", required=True, metavar="PUBLIC")
    p.set_defaults(func=cmd_inspect)

    p = asub.add_parser("render", help="draw a bundle's areas over the shipped cities as SVG")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--authority-key", required=True, metavar="PUBLIC")
    p.add_argument("--out", required=True, metavar="MAP.svg", help="written atomically")
    p.set_defaults(func=cmd_render)

    p = asub.add_parser("diff", help="list areas added, removed or changed between two bundles")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--authority-key", required=True, metavar="PUBLIC")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the server. Every flag can also come from --config FILE (TOML, the "
        "same names with underscores) or STAYCHECK_<NAME> environment variables; flags win, "
        "then the environment, then the file.",
    )
    p.add_argument("--config", metavar="TOML", help="configuration file")
    p.add_argument("--listen", metavar="HOST:PORT", help="public listener; port 0: any free")
    p.add_argument("--bundle", metavar="BUNDLE", help="signed bundle, watched; SIGHUP reloads")
    p.add_argument("--authority-key", metavar="PUBLIC", help="authority public key (PEM)")
    p.add_argument("--state-dir", metavar="DIR", help="verdict keys, bundle version floor")
    p.add_argument("--issuer", metavar="CODE", help="province code, e.g. 110000")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate: TLS on --listen")
    p.add_argument("--tls-key", metavar="PEM", help="server certificate's private key")
    p.add_argument(
        "--insecure", action="store_true", help="allow plaintext on a non-loopback address"
    )
    p.add_argument("--partner-listen", metavar="HOST:PORT", help="mutual-TLS partner listener")
    p.add_argument("--partner-ca", metavar="PEM", help="CA that signs partner certificates")
    p.add_argument("--partners", metavar="TOML", help="partners file: identities, methods, budget")
    p.add_argument("--trust-store", metavar="TOML", help="other issuers VerifyVerdict accepts")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus endpoint (off)")
    p.add_argument("--access-log", action="store_true", help="one log line per call (no body)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text", "auto"])
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the port (default 1; 0: one per core)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("submit", help="submit an itinerary, print the verdict")
    p.add_argument("--server", required=True, metavar="HOST:PORT")
    p.add_argument("--itinerary", required=True, metavar="FILE.json")
    p.add_argument(
        "--subject-id", metavar="ID", help="bind the verdict to this ID (hashed here, never sent)"
    )
    p.add_argument("--ca", metavar="PEM", help="use TLS, trusting this CA")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("keys", help="print the server's verdict keys (JWKS); rotate them")
    p.add_argument("--server", metavar="HOST:PORT")
    p.add_argument("--ca", metavar="PEM", help="use TLS, trusting this CA")
    p.set_defaults(func=cmd_keys)
    ksub = p.add_subparsers(dest="keys_command", metavar="COMMAND")
    r = ksub.add_parser("rotate", help="make a new verdict key; running servers pick it up")
    r.add_argument("--state-dir", required=True, metavar="DIR")
    r.set_defaults(func=cmd_rotate)

    p = sub.add_parser("verify", help="verify a verdict token offline")
    p.add_argument("token", metavar="TOKEN", help="SC1:... or - to read stdin")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keys", metavar="JWKS.json", help="one issuer's keys")
    which.add_argument("--trust-store", metavar="TOML", help="several issuers (federation)")
    p.add_argument("--subject-id", metavar="ID")
    p.add_argument("--salt", metavar="HEX")
    p.add_argument("--min-riskset-version", type=int, metavar="N")
    p.set_defaults(func=cmd_verify)

    def partner_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", required=True, metavar="HOST:PORT", help="partner listener")
        p.add_argument("--cert", required=True, metavar="PEM", help="partner certificate")
        p.add_argument("--key", required=True, metavar="PEM", help="its private key")
        p.add_argument("--ca", required=True, metavar="PEM", help="CA of the server certificate")

    p = sub.add_parser("verify-online", help="partners: verify a token through the server")
    p.add_argument("token", metavar="TOKEN", help="SC1:... or - to read stdin")
    partner_flags(p)
    p.add_argument("--min-riskset-version", type=int, metavar="N")
    p.set_defaults(func=cmd_verify_online)

    p = sub.add_parser("batch", help="partners: submit itineraries in bulk (JSON lines)")
    partner_flags(p)
    p.add_argument("--itineraries", required=True, metavar="FILE.jsonl", help="one per line")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("config", help="server configuration tools")
    cfg = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    c = cfg.add_parser(
        "check", help="validate a configuration file (with the environment) and print it"
    )
    c.add_argument("file", metavar="FILE")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("certs", help="throwaway certificates for demos and tests")
    csub = p.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    c = csub.add_parser("demo", help="a CA, a server and two partner certificates")
    c.add_argument("--out", required=True, metavar="DIR")
    c.set_defaults(func=cmd_certs_demo)

    p = sub.add_parser("demo", help="the whole story on embedded sample data")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except Error as e:
        _fail(str(e))
    return result


if __name__ == "__main__":
    sys.exit(main())

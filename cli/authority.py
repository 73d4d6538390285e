"""``staycheck authority``: the health authority's tools: keys, signed bundles from GeoJSON,
inspection, maps and differences between bundles.

Needs the ``server`` extra (bundles hold shapely geometries in protobuf); the imports are
inside the commands, so that ``staycheck --help`` works without it."""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
from typing import Any

from staycheck.cli import authority_repo
from staycheck.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    check_writable,
    fail,
    now,
    print_json,
    read,
    rfc3339,
    write_atomic,
)
from staycheck.geo.errors import SignedDataError


def _is_uri(text: str) -> bool:
    return text[:7].lower() == "pkcs11:"


def _signer(key: str) -> Any:
    """The authority's signer: a PEM private key file, or a key on a PKCS#11 token."""
    if _is_uri(key):
        from staycheck.server.pkcs11 import Pkcs11Signer

        return Pkcs11Signer(key)
    from staycheck.trust.keys import Ed25519Signer

    return Ed25519Signer.from_pem(read(key, "key"))


def cmd_keygen(args: argparse.Namespace) -> int:
    from staycheck.trust.keys import Ed25519Signer

    if _is_uri(args.private):
        from staycheck.server.pkcs11 import generate_key_pair

        public = pathlib.Path(args.public)
        if not args.force and public.exists():
            fail("keygen: refusing to overwrite an existing key file (use --force)")
        check_writable(public)
        token_signer = generate_key_pair(args.private)
        write_atomic(public, token_signer.public_key.to_pem(), 0o644)
        print(
            f"authority key {token_signer.kid.hex()}: private key on the token, sensitive and "
            f"not extractable ({token_signer.uri}), public {public}"
        )
        return EXIT_OK
    signer = Ed25519Signer.generate()
    private, public = pathlib.Path(args.private), pathlib.Path(args.public)
    if not args.force and (private.exists() or public.exists()):
        fail("keygen: refusing to overwrite an existing key file (use --force)")
    check_writable(private, public)
    write_atomic(private, signer.to_pem(), 0o600)
    write_atomic(public, signer.public_key.to_pem(), 0o644)
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
    from staycheck.geo.authoring import build_bundle, parse_time
    from staycheck.geo.bundle import Level, Policy
    from staycheck.trust.bundles import sign_bundle

    try:
        expires = parse_time(args.expires)
        issued = parse_time(args.issued_at) if args.issued_at else now()
    except ValueError:
        fail("sign: --expires and --issued-at must be RFC 3339 times with an offset")
    try:
        levels = frozenset(Level.parse(x) for x in args.flag_levels.split(",") if x.strip())
    except ValueError:
        fail("sign: --flag-levels must be a comma-separated list of low, medium, high")
    policy = Policy(
        window_days=args.window_days,
        min_stay_s=round(args.min_stay_hours * 3600),
        flagged_levels=levels,
        tolerance_m=args.tolerance_m,
    )
    try:
        collection = json.loads(read(args.areas, "areas"))
    except ValueError:
        fail("sign: --areas is not valid JSON")
    signer = _signer(args.key)
    out = pathlib.Path(args.out)
    if out.exists() and not args.force:
        fail(f"sign: {out} exists; use --force to replace it (atomically, as a publication)")
    check_writable(out)
    msg = build_bundle(
        collection,
        version=args.version,
        issued_at=issued,
        expires_at=expires,
        policy=policy,
        progress=_progress,
    )
    data = sign_bundle(msg.SerializeToString(deterministic=True), signer)
    write_atomic(out, data, 0o644)
    print(
        f"signed bundle version {args.version}: {len(msg.areas)} areas, expires "
        f"{rfc3339(expires)}, sha256 {hashlib.sha256(data).hexdigest()} -> {out}"
    )
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from staycheck.trust.bundles import open_bundle
    from staycheck.trust.keys import AuthorityKeySet, KeySet, PublicKey

    key = PublicKey.from_pem(read(args.authority_key, "authority key"))
    try:
        bundle = open_bundle(read(args.bundle, "bundle"), AuthorityKeySet(KeySet([key])))
    except SignedDataError as e:
        fail(f"inspect: bundle refused: {e}", EXIT_REFUSED)
    policy = bundle.policy
    print_json(
        {
            "version": bundle.version,
            "issued_at": rfc3339(bundle.issued_at),
            "expires_at": rfc3339(bundle.expires_at),
            "expired": bundle.expires_at <= now(),
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
    from staycheck.trust.keys import AuthorityKeySet, KeySet, PublicKey

    return AuthorityKeySet(KeySet([PublicKey.from_pem(read(path, "authority key"))]))


def _verified_bundle_message(path: str, keys: Any, what: str) -> Any:
    """The ``RiskAreaBundle`` message of a bundle file whose signature verifies."""
    from staycheck.trust import cose
    from staycheck.trust.bundles import DEFAULT_MAX_BUNDLE_SIZE, open_bundle
    from staycheck.v1 import bundle_pb2

    data = read(path, what)
    try:
        open_bundle(data, keys)  # signature, content type and the bundle's invariants
    except SignedDataError as e:
        fail(f"{what}: bundle refused: {e}", EXIT_REFUSED)
    # The same bytes that were just verified: decode their payload for the whole message.
    payload = cose.decode_sign1(data, max_size=DEFAULT_MAX_BUNDLE_SIZE).payload
    return bundle_pb2.RiskAreaBundle.FromString(payload)


def cmd_render(args: argparse.Namespace) -> int:
    from staycheck.cli.samples import cities
    from staycheck.geo.render import CityMarker, render_svg

    data = read(args.bundle, "render")
    unsigned = data.lstrip()[:1] == b"{"
    if unsigned:  # GeoJSON: the areas as they will be signed, to look at first
        from staycheck.geo.authoring import build_bundle
        from staycheck.geo.bundle import Policy

        try:
            collection = json.loads(data)
        except ValueError:
            fail("render: the GeoJSON file is not valid JSON")
        # The same checks as `authority sign`; version and dates only label the drawing.
        msg = build_bundle(collection, version=1, issued_at=now(), expires_at=now() + 1,
                           policy=Policy())  # fmt: skip
    elif args.authority_key is None:
        fail("render: a signed bundle needs --authority-key (a GeoJSON file does not)")
    else:
        msg = _verified_bundle_message(args.bundle, _authority_keys(args.authority_key), "render")
    # Beijing, Tianjin and Hebei, plus any shipped city that holds an area.
    held = {area.city_code for area in msg.areas}
    markers = [
        CityMarker(c.code, c.name_en, c.lat, c.lon)
        for c in cities().values()
        if c.code[:2] in ("11", "12", "13") or c.code in held
    ]
    out = pathlib.Path(args.out)
    write_atomic(out, render_svg(msg, markers).encode("utf-8"), 0o644)
    print(
        f"drew {len(msg.areas)} areas of "
        + ("the GeoJSON file (unsigned)" if unsigned else f"bundle version {msg.version}")
        + f" over {len(markers)} cities -> {out}"
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from staycheck.geo.diff import diff_bundles, format_diff

    keys = _authority_keys(args.authority_key)
    old = _verified_bundle_message(args.old, keys, "diff: OLD")
    new = _verified_bundle_message(args.new, keys, "diff: NEW")
    print(format_diff(diff_bundles(old, new)), end="")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    authority = sub.add_parser(
        "authority", help="health authority tools: the repository, keys, bundles"
    )
    authority.set_defaults(extra="server")
    asub = authority.add_subparsers(dest="authority_command", required=True, metavar="COMMAND")
    authority_repo.add_parsers(asub)
    p = asub.add_parser("keygen", help="make an Ed25519 authority key pair")
    p.add_argument(
        "--private",
        required=True,
        metavar="PATH|URI",
        help="private key (PEM, 0600), or a PKCS#11 URI: made on the token, sensitive and "
        "not extractable (the hsm extra)",
    )
    p.add_argument("--public", required=True, metavar="PATH", help="public key (PEM)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_keygen)

    p = asub.add_parser("sign", help="build and sign a risk-area bundle from GeoJSON")
    p.add_argument("--areas", required=True, metavar="AREAS.geojson")
    p.add_argument("--version", required=True, type=int, metavar="N", help="strictly increasing")
    p.add_argument("--expires", required=True, metavar="RFC3339")
    p.add_argument("--issued-at", metavar="RFC3339", help="default: now")
    p.add_argument(
        "--key",
        required=True,
        metavar="PRIVATE|URI",
        help="authority private key: a PEM file, or a PKCS#11 URI of a key on a token",
    )
    p.add_argument("--out", required=True, metavar="BUNDLE", help="written atomically")
    p.add_argument(
        "--force", action="store_true", help="replace an existing BUNDLE (publishing a new one)"
    )
    p.add_argument("--window-days", type=int, default=14, metavar="DAYS")
    p.add_argument("--min-stay-hours", type=float, default=4.0, metavar="HOURS")
    p.add_argument("--tolerance-m", type=float, default=0.0, metavar="METRES")
    p.add_argument("--flag-levels", default="medium,high", metavar="LEVELS")
    p.set_defaults(func=cmd_sign)

    p = asub.add_parser("inspect", help="check a bundle's signature and show what it holds")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--authority-key", required=True, metavar="PUBLIC")
    p.set_defaults(func=cmd_inspect)

    p = asub.add_parser(
        "render",
        help="draw a bundle's areas (or a GeoJSON file's, before signing) as SVG",
    )
    p.add_argument("bundle", metavar="BUNDLE|AREAS.geojson")
    p.add_argument("--authority-key", metavar="PUBLIC", help="needed for a signed bundle")
    p.add_argument("--out", required=True, metavar="MAP.svg", help="written atomically")
    p.set_defaults(func=cmd_render)

    p = asub.add_parser("diff", help="list areas added, removed or changed between two bundles")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--authority-key", required=True, metavar="PUBLIC")
    p.set_defaults(func=cmd_diff)

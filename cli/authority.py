"""``staycheck authority``: the health authority's tools: the TUF repository of risk areas
(``authority repo``, :mod:`staycheck.cli.authority_repo`), signing keys, and maps and
differences of GeoJSON files before they are published.

Needs the ``server`` extra (areas hold shapely geometries in protobuf); the imports are
inside the commands, so that ``staycheck --help`` works without it."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from staycheck.cli import authority_repo
from staycheck.cli.common import (
    EXIT_OK,
    check_writable,
    fail,
    now,
    read,
    write_atomic,
)


def cmd_keygen(args: argparse.Namespace) -> int:
    from staycheck.server.pkcs11 import is_uri
    from staycheck.trust.keys import Ed25519Signer

    if is_uri(args.private):
        from staycheck.server.pkcs11 import generate_key_pair

        public = pathlib.Path(args.public)
        if not args.force and public.exists():
            fail("keygen: refusing to overwrite an existing key file (use --force)")
        check_writable(public)
        token_signer = generate_key_pair(args.private)
        write_atomic(public, token_signer.public_key.to_pem(), 0o644)
        print(
            f"key {token_signer.kid.hex()}: private key on the token, sensitive and "
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
    print(f"key {signer.kid.hex()}: private {private} (0600), public {public}")
    return EXIT_OK


def progress(done: int, total: int) -> None:
    """A progress bar on a terminal while a large GeoJSON file is checked."""
    if sys.stderr.isatty() and total >= 1000:
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        print(f"\rbuilding [{bar}] {done}/{total} areas", end=end, file=sys.stderr, flush=True)


def read_geojson(path: str, what: str) -> Any:
    """The parsed JSON of the GeoJSON file at ``path`` (checked later, by the rules of
    ``staycheck.geo.authoring``); not JSON: an input error naming the file."""
    try:
        return json.loads(read(path, what))
    except ValueError:
        fail(f"{what}: {path} is not valid JSON")


def geojson_message(path: str, what: str) -> Any:
    """The areas of a GeoJSON file as a bundle message, after every check of publishing
    (``staycheck.geo.authoring``); version and dates only label it."""
    from staycheck.geo.authoring import build_bundle
    from staycheck.geo.bundle import Policy

    collection = read_geojson(path, what)
    from staycheck.geo.errors import InvalidInputError

    t = now()
    try:
        return build_bundle(
            collection, version=1, issued_at=t, expires_at=t + 1, policy=Policy(),
            progress=progress,
        )  # fmt: skip
    except InvalidInputError as e:  # which file, for diff's two
        raise InvalidInputError(f"{what}: {e.field}", e.rule) from None


def write_map(msg: Any, out_path: str, label: str) -> None:
    """Draw ``msg``'s areas over Beijing, Tianjin and Hebei (and any shipped city that
    holds an area) to ``out_path``."""
    from staycheck.cli.samples import cities
    from staycheck.geo.render import CityMarker, render_svg

    held = {area.city_code for area in msg.areas}
    markers = [
        CityMarker(c.code, c.name_en, c.lat, c.lon)
        for c in cities().values()
        if c.code[:2] in ("11", "12", "13") or c.code in held
    ]
    out = pathlib.Path(out_path)
    write_atomic(out, render_svg(msg, markers).encode("utf-8"), 0o644)
    print(f"drew {len(msg.areas)} areas of {label} over {len(markers)} cities -> {out}")


def cmd_render(args: argparse.Namespace) -> int:
    write_map(geojson_message(args.areas, "render"), args.out, "the GeoJSON file (unpublished)")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from staycheck.geo.diff import diff_bundles, format_diff

    old = geojson_message(args.old, "diff: OLD")
    new = geojson_message(args.new, "diff: NEW")
    print(format_diff(diff_bundles(old, new)), end="")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    authority = sub.add_parser(
        "authority", help="health authority tools: the risk-area repository, keys, maps"
    )
    authority.set_defaults(extra="server")
    asub = authority.add_subparsers(dest="authority_command", required=True, metavar="COMMAND")
    authority_repo.add_parsers(asub)
    p = asub.add_parser(
        "keygen",
        help="make an Ed25519 key pair (e.g. a department's key on a token, for "
        "repo add-department --key-uri)",
    )
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

    p = asub.add_parser(
        "render",
        help="draw a GeoJSON file's areas as SVG, before publishing (a repository's: repo render)",
    )
    p.add_argument("areas", metavar="AREAS.geojson")
    p.add_argument("--out", required=True, metavar="MAP.svg", help="written atomically")
    p.set_defaults(func=cmd_render)

    p = asub.add_parser(
        "diff",
        help="areas added, removed or changed between two GeoJSON files (against what a "
        "department has published: repo diff)",
    )
    p.add_argument("old", metavar="OLD.geojson")
    p.add_argument("new", metavar="NEW.geojson")
    p.set_defaults(func=cmd_diff)

"""``staycheck authority repo ...``: the health authority's TUF repository of risk areas.

The commands only parse arguments and print; the repository itself is
:mod:`staycheck.cli.repository` (python-tuf's Metadata API), imported inside each command
so that ``staycheck verify`` on the base install never imports TUF.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from staycheck.cli.common import EXIT_OK, fail, now, print_json, read, rfc3339


def _policy(args: argparse.Namespace) -> Any:
    from staycheck.geo.bundle import Level, Policy

    try:
        levels = frozenset(Level.parse(x) for x in args.flag_levels.split(",") if x.strip())
    except ValueError:
        fail("repo: --flag-levels must be a comma-separated list of low, medium, high")
    policy = Policy(
        window_days=args.window_days,
        min_stay_s=round(args.min_stay_hours * 3600),
        flagged_levels=levels,
        tolerance_m=args.tolerance_m,
    )
    policy.check()
    return policy


def _open(args: argparse.Namespace) -> Any:
    from staycheck.cli.repository import AuthorityRepository

    return AuthorityRepository.open(pathlib.Path(args.workspace))


def cmd_create(args: argparse.Namespace) -> int:
    from staycheck.cli.repository import AuthorityRepository

    repo = AuthorityRepository(pathlib.Path(args.workspace))
    repo.create(
        now=now(),
        policy=_policy(args),
        root_keys=args.root_keys,
        root_threshold=args.root_threshold,
        targets_keys=args.targets_keys,
        targets_threshold=args.targets_threshold,
    )
    print(f"repository in {repo.published} (serve this folder as it is)")
    print(f"trusted root for servers and verifiers: {repo.metadata_dir / '1.root.json'}")
    print(f"private keys in {repo.keys_dir}: move the root and targets keys offline")
    return EXIT_OK


def cmd_add_department(args: argparse.Namespace) -> int:
    repo = _open(args)
    uris = args.key_uri or []
    keys = len(uris) or args.keys
    repo.add_department(args.name, now=now(), keys=keys, threshold=args.threshold, key_uris=uris)
    where = "on tokens" if uris else f"in {repo.keys_dir}"
    print(f"department {args.name}: may publish areas/{args.name}.pb ({args.threshold} of "
          f"{keys} keys, {where}); its areas file is empty until it publishes")  # fmt: skip
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from staycheck.cli.authority import progress, read_geojson

    collection = read_geojson(args.areas, "repo publish: --areas")

    repo = _open(args)
    count = repo.publish_areas(args.name, collection, now=now(), progress=progress)
    print(f"department {args.name}: published {count} areas")
    return EXIT_OK


def cmd_add_issuer(args: argparse.Namespace) -> int:
    repo = _open(args)
    uris = args.key_uri or []
    keys = len(uris) or args.keys
    repo.add_issuer(args.code, now=now(), keys=keys, threshold=args.threshold, key_uris=uris)
    print(f"issuer {args.code}: may publish keys/{args.code}.jwks.json ({args.threshold} of "
          f"{keys} keys); verifiers follow it with verify --repository")  # fmt: skip
    return EXIT_OK


def cmd_publish_keys(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.publish_keys(args.code, read(args.jwks, "jwks"), now=now())
    print(f"issuer {args.code}: key set published")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from staycheck.cli.authority import write_map

    repo = _open(args)
    t = now()
    msg = repo.merged(now=t)
    label = f"risk areas version {msg.version} ({len(repo.departments())} departments)"
    if args.department is not None:
        prefix = f"{args.department}/"
        repo.areas(args.department)  # names a department of the repository
        kept = [a for a in msg.areas if a.id.startswith(prefix)]
        del msg.areas[:]
        msg.areas.extend(kept)
        label = f"department {args.department}, risk areas version {msg.version}"
    write_map(msg, args.out, label)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """What publishing ``--areas`` for a department would change, area by area."""
    from staycheck.cli.authority import progress, read_geojson
    from staycheck.geo.diff import diff_bundles, format_diff
    from staycheck.v1 import bundle_pb2

    collection = read_geojson(args.areas, "repo diff: --areas")
    repo = _open(args)
    policy = repo.policy().policy
    old = bundle_pb2.RiskAreaBundle(policy=policy, areas=repo.areas(args.name).areas)
    new = bundle_pb2.RiskAreaBundle(
        policy=policy,
        areas=repo.candidate(args.name, collection, now=now(), progress=progress).areas,
    )
    print(format_diff(diff_bundles(old, new)), end="")
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.set_policy(_policy(args), now=now())
    print("policy published")
    return EXIT_OK


def cmd_refresh(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.refresh(now=now())
    ts = next(r for r in repo.roles() if r.name == "timestamp")
    print(f"timestamp version {ts.version}, expires {rfc3339(ts.expires)}")
    return EXIT_OK


def cmd_rotate_root(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.rotate_root(now=now(), keys=args.keys, threshold=args.threshold)
    repo.refresh(now=now())
    root = next(r for r in repo.roles() if r.name == "root")
    print(f"root version {root.version}: {args.threshold} of {args.keys} new keys")
    return EXIT_OK


def cmd_rotate_online_key(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.rotate_online_key(now=now())
    print("new snapshot/timestamp key named in a new root version")
    return EXIT_OK


def cmd_rotate_department(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.rotate_department_keys(args.name, now=now(), keys=args.keys, threshold=args.threshold)
    print(f"department {args.name}: new keys ({args.threshold} of {args.keys})")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    repo = _open(args)
    policy = repo.policy()
    print_json(
        {
            "roles": [
                {
                    "role": r.name,
                    "version": r.version,
                    "expires": rfc3339(r.expires),
                    "threshold": r.threshold,
                    "keys": len(r.keyids),
                }
                for r in repo.roles()
            ],
            "departments": [{"name": d.name, "path": d.path} for d in policy.departments],
            "policy": {
                "window_days": policy.policy.window_days,
                "min_stay_seconds": policy.policy.min_stay_seconds,
                "tolerance_m": policy.policy.tolerance_m,
            },
        }
    )
    return EXIT_OK


def _policy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window-days", type=int, default=14, metavar="DAYS")
    p.add_argument("--min-stay-hours", type=float, default=4.0, metavar="HOURS")
    p.add_argument("--tolerance-m", type=float, default=0.0, metavar="METRES")
    p.add_argument("--flag-levels", default="medium,high", metavar="LEVELS")


def _keys_flags(p: argparse.ArgumentParser, keys: int, threshold: int) -> None:
    p.add_argument("--keys", type=int, default=keys, metavar="N", help=f"default {keys}")
    p.add_argument(
        "--threshold", type=int, default=threshold, metavar="K", help=f"default {threshold}"
    )


def add_parsers(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``repo`` and its commands, under ``staycheck authority``."""
    repo = asub.add_parser(
        "repo",
        help="the TUF repository of risk areas: roles, departments, publications",
        description="The health authority's TUF repository (docs/adr/0011): offline root "
        "keys with a threshold, the authority's targets role holding the policy and one "
        "delegation per department, and an online snapshot/timestamp key.",
    )
    rsub = repo.add_subparsers(dest="repo_command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p = rsub.add_parser(name, help=help, description=help)
        p.add_argument("--workspace", required=True, metavar="DIR", help="keys/ and repository/")
        p.set_defaults(func=func)
        return p

    p = command("create", "a new repository: root, targets, snapshot, timestamp", cmd_create)
    p.add_argument("--root-keys", type=int, default=3, metavar="N")
    p.add_argument("--root-threshold", type=int, default=2, metavar="K")
    p.add_argument("--targets-keys", type=int, default=3, metavar="N")
    p.add_argument(
        "--targets-threshold",
        type=int,
        default=2,
        metavar="K",
        help="the authority's targets role (policy, delegations): K of N keys (default 2 of 3)",
    )
    _policy_flags(p)
    p = command("add-department", "a delegated role for a department, one path", cmd_add_department)
    p.add_argument("name", metavar="NAME", help="e.g. police, health, rail")
    _keys_flags(p, 1, 1)
    p.add_argument(
        "--key-uri",
        action="append",
        metavar="URI",
        help="a key on a PKCS#11 token (RFC 7512, with pin-source=file:...; the hsm extra) "
        "instead of a new key file; repeat for several",
    )
    p = command(
        "add-issuer",
        "a delegated role for an issuer's verdict key set, one path (keys/CODE.jwks.json)",
        cmd_add_issuer,
    )
    p.add_argument("code", metavar="CODE", help="the issuer's six-digit code, e.g. 110000")
    _keys_flags(p, 1, 1)
    p.add_argument("--key-uri", action="append", metavar="URI", help="a key on a PKCS#11 token")
    p = command(
        "publish-keys",
        "an issuer publishes its verdict key set (the JWKS of `staycheck keys`), checked",
        cmd_publish_keys,
    )
    p.add_argument("code", metavar="CODE")
    p.add_argument("--jwks", required=True, metavar="JWKS.json")
    p = command("publish", "a department publishes its areas (GeoJSON, validated)", cmd_publish)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--areas", required=True, metavar="AREAS.geojson")
    p = command("policy", "publish a new matching policy", cmd_policy)
    _policy_flags(p)
    command("refresh", "re-sign snapshot and timestamp (the online key; run hourly)", cmd_refresh)
    p = command("rotate-root", "new root keys, signed by the old and the new", cmd_rotate_root)
    _keys_flags(p, 3, 2)
    command("rotate-online-key", "a new snapshot/timestamp key", cmd_rotate_online_key)
    p = command("rotate-department", "new keys for a department", cmd_rotate_department)
    p.add_argument("name", metavar="NAME")
    _keys_flags(p, 1, 1)
    command("inspect", "roles, versions, expiries, thresholds, departments", cmd_inspect)
    p = command(
        "render", "draw the published areas (every department's, or one's) as SVG", cmd_render
    )
    p.add_argument("--department", metavar="NAME", help="only this department's areas")
    p.add_argument("--out", required=True, metavar="MAP.svg", help="written atomically")
    p = command("diff", "what publishing a GeoJSON file would change for a department", cmd_diff)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--areas", required=True, metavar="AREAS.geojson")

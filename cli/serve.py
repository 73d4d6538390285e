"""``staycheck serve``, ``config check`` and ``keys rotate``: the operator's commands.

Needs the ``server`` extra; the server is imported inside the commands only."""

from __future__ import annotations

import argparse
import os
import pathlib
import re
from typing import Any

from staycheck.cli.common import (
    EXIT_OK,
    fail,
    now,
    print_json,
    read,
    rfc3339,
)

SERVE_FLAGS = (
    "listen", "repository", "trusted_root", "repository_refresh_s", "repository_timeout_s",
    "state_dir", "issuer",
    "tls_cert", "tls_key",
    "insecure", "partner_listen", "partner_ca", "partners", "trust_store", "metrics_listen",
    "ohttp_listen", "max_workers", "max_concurrent_rpcs",
    "access_log", "log_level", "log_format", "workers", "scrub_freed_memory",
    "key_refresh_interval_s", "key_publish_ahead_s", "verdict_key",
)  # fmt: skip
DEFAULT_PUBLISH_AHEAD = "24h"  # staycheck.server.keystore.DEFAULT_PUBLISH_AHEAD_S
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _server_config(args: argparse.Namespace, config_file: str | None) -> Any:
    """Flags > STAYCHECK_* environment > config file > defaults (read here, in the entry
    point, and nowhere else)."""
    import tomllib

    from staycheck.server.config import build_config

    file = None
    if config_file is not None:
        try:
            file = tomllib.loads(read(config_file, "config").decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            fail(f"config: {config_file} is not valid TOML")
    flags = {name: getattr(args, name, None) for name in SERVE_FLAGS}
    return build_config(file=file, env=os.environ, flags=flags)


def cmd_serve(args: argparse.Namespace) -> int:
    from staycheck.server import logs
    from staycheck.server.process import run

    config = _server_config(args, args.config)
    if config.scrub_freed_memory:
        import sys

        from staycheck.server.process import scrub_environment

        environment = scrub_environment(os.environ)
        if environment is not None:  # malloc reads its tunables at start: start again
            argv = [sys.executable, "-m", "staycheck.cli.main", *sys.argv[1:]]
            os.execve(sys.executable, argv, environment)  # noqa: S606 (ourselves)
    logs.setup(config.log_level, config.log_format)
    return run(config)


def cmd_config_check(args: argparse.Namespace) -> int:
    from staycheck.server.config import effective

    config = _server_config(argparse.Namespace(), args.file)
    print_json(effective(config))
    return EXIT_OK


def duration_s(text: str) -> int:
    """Seconds from ``90``, ``90s``, ``45m``, ``24h`` or ``2d`` (an argparse type)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds or a number with s, m, h or d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.1f} h" if seconds % 3600 else f"{seconds // 3600} h"


def _next_key(args: argparse.Namespace) -> Any:
    """The token key ``--next-key`` names (made now with ``--create``), or None."""
    if args.next_key is None:
        if args.create:
            fail("keys rotate: --create needs --next-key URI (where to make the key)")
        return None
    from staycheck.server.keystore import NextKey
    from staycheck.server.pkcs11 import Pkcs11Signer, generate_key_pair

    signer = generate_key_pair(args.next_key) if args.create else Pkcs11Signer(args.next_key)
    if args.create:
        print(
            f"made key {signer.kid.hex()} on the token: {signer.uri} (sensitive, not extractable)"
        )
    return NextKey(signer)


def _next_rotation(pending_kid: str | None) -> str:
    if pending_kid is None:
        return "The next rotation names its next key (--next-key URI)."
    return f"Next key {pending_kid} is published now for the next rotation."


def cmd_rotate(args: argparse.Namespace) -> int:
    from staycheck.server.keystore import VerdictKeyStore, bucket_ceil

    store = VerdictKeyStore(pathlib.Path(args.state_dir), issuer="")
    next_key = _next_key(args)
    t = now()
    if args.now:
        r = store.rotate(now=t, emergency=True, next_key=next_key)
        print(
            f"emergency rotation: revoked verdict key(s) {', '.join(r.revoked) or '(none)'}; "
            f"new key {r.kid} signs from now on (servers on this state dir switch within "
            "seconds). Every verifier must fetch the key set again now: until it does, it "
            "still accepts what the revoked keys sign, and it refuses the new key's verdicts. "
            + _next_rotation(r.pending_kid)
        )
        return EXIT_OK
    r = store.rotate(now=t, publish_ahead_s=args.publish_ahead, next_key=next_key)
    later = (
        " (not earlier: verifiers hold this key with that start already)"
        if r.signs_from > bucket_ceil(t + args.publish_ahead)
        else ""
    )
    replaced = (
        f" From then on key {r.replaces} signs no more; it stays published until its "
        "verdicts have expired."
        if r.replaces is not None
        else ""
    )
    print(
        f"verdict key {r.kid} is in the published key set now and starts signing at "
        f"{rfc3339(r.signs_from)}, in {_hours(max(r.signs_from - t, 0))}{later}.{replaced} "
        f"Verifiers that fetch the key set again before {rfc3339(r.signs_from)} need nothing "
        f"else. {_next_rotation(r.pending_kid)}"
    )
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the server. Every flag can also come from --config FILE (TOML, the "
        "same names with underscores) or STAYCHECK_<NAME> environment variables; flags win, "
        "then the environment, then the file.",
    )
    p.add_argument("--config", metavar="TOML", help="configuration file")
    p.add_argument("--listen", metavar="HOST:PORT", help="public listener; port 0: any free")
    p.add_argument(
        "--repository",
        metavar="URL|DIR",
        help="the TUF repository of risk areas (http(s) or a folder), refreshed every "
        "--repository-refresh-s (default 60); SIGHUP refreshes now",
    )
    p.add_argument(
        "--trusted-root", metavar="ROOT.json", help="the repository's root, for the first start"
    )
    p.add_argument(
        "--repository-refresh-s",
        type=float,
        metavar="SECONDS",
        help="how often the repository is refreshed (default 60)",
    )
    p.add_argument(
        "--repository-timeout-s",
        type=float,
        metavar="SECONDS",
        help="give a refresh up after this long, the last good set serving (default 30)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="verdict keys and TUF's trusted metadata",
    )
    p.add_argument("--issuer", metavar="CODE", help="province code, e.g. 110000")
    p.add_argument(
        "--verdict-key",
        metavar="URI",
        help="the verdict key on a PKCS#11 token or HSM (RFC 7512 URI, pkcs11:token=...;"
        "object=...?module-path=...&pin-source=file:...; the hsm extra): the state dir then "
        "holds no private key",
    )
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
    p.add_argument(
        "--max-workers", type=int, metavar="N", help="threads handling calls (default 16)"
    )
    p.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        metavar="N",
        help="calls in progress beyond this get RESOURCE_EXHAUSTED (default 1000)",
    )
    p.add_argument(
        "--ohttp-listen",
        metavar="HOST:PORT",
        help="the Oblivious HTTP gateway (RFC 9458; off): POST message/ohttp-req at /, keys "
        "at /.well-known/ohttp-gateway; reach it only through a relay run by someone else",
    )
    p.add_argument("--access-log", action="store_true", help="one log line per call (no body)")
    p.add_argument(
        "--scrub-freed-memory",
        action="store_true",
        help="overwrite freed memory, so freed request buffers keep no itinerary (costs CPU)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text", "auto"])
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the port (default 1; 0: one per core)",
    )
    p.add_argument(
        "--key-refresh-interval-s",
        type=int,
        metavar="SECONDS",
        help="how often verifiers should fetch the key set again, published in it (default "
        "21600, 6 h); must be shorter than --key-publish-ahead-s",
    )
    p.add_argument(
        "--key-publish-ahead-s",
        type=int,
        metavar="SECONDS",
        help="how long a new verdict key is published before it signs (default 86400, 24 h)",
    )
    p.set_defaults(func=cmd_serve, extra="server")

    p = sub.add_parser("config", help="server configuration tools")
    cfg = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    c = cfg.add_parser(
        "check", help="validate a configuration file (with the environment) and print it"
    )
    c.add_argument("file", metavar="FILE")
    c.set_defaults(func=cmd_config_check, extra="server")


def cmd_rotate_gateway(args: argparse.Namespace) -> int:
    from staycheck.server.gateway_keys import GatewayKeyStore

    store = GatewayKeyStore(pathlib.Path(args.state_dir))
    key_id = store.rotate(now=now(), grace_s=args.grace)
    print(f"gateway key {key_id} published; the previous one opens requests for {args.grace} s")
    return EXIT_OK


def add_rotate_parser(ksub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keys rotate``, under the traveller's ``keys`` command."""
    r = ksub.add_parser(
        "rotate",
        help="schedule the next verdict key (published ahead); --now: emergency rotation",
        description="Schedule the next verdict key. The pending key, published in the key set "
        "since the last rotation (or first start), starts signing after the publish-ahead "
        "period, rounded up to 5 minutes; the key signing now stops then, and a fresh "
        "pending key is published for the next rotation. Verifiers that fetch the key set "
        "at least once within the publish-ahead period never meet an unknown key. Running "
        "servers on this state dir pick the change up within seconds and switch at the "
        "scheduled time. With --now (a compromised key), every key still published is "
        "revoked and a brand-new key signs at once; every verifier must fetch the key set "
        "again. Once the signing key is on a PKCS#11 token, --next-key URI names the next "
        "key (made beforehand, e.g. with pkcs11-tool, or here with --create).",
    )
    r.add_argument("--state-dir", required=True, metavar="DIR")
    r.add_argument(
        "--next-key",
        metavar="URI",
        help="the next key on a PKCS#11 token (RFC 7512 URI; the hsm extra): published now, "
        "it signs after the publish-ahead period (with --now: at once)",
    )
    r.add_argument(
        "--create",
        action="store_true",
        help="make the --next-key key pair on the token first (Ed25519; private key "
        "sensitive and not extractable; labelled by the URI's object)",
    )
    when = r.add_mutually_exclusive_group()
    when.add_argument(
        "--publish-ahead",
        type=duration_s,
        default=DEFAULT_PUBLISH_AHEAD,
        metavar="DURATION",
        help="how long the new key is published before it signs: seconds, or a number with "
        f"s, m, h or d (default {DEFAULT_PUBLISH_AHEAD}); longer than the verifiers' refresh "
        "interval (the servers' key_refresh_interval_s, default 6 h)",
    )
    when.add_argument(
        "--now",
        action="store_true",
        help="emergency: revoke every published key (marked revoked in the key set) and sign "
        "with a new key at once; every verifier must fetch the key set again",
    )
    r.set_defaults(func=cmd_rotate, extra="server")

    g = ksub.add_parser(
        "rotate-gateway",
        help="a new Oblivious HTTP gateway key; the old one still opens requests for --grace",
        description="Make a new Oblivious HTTP gateway key (the next free key id) and publish "
        "it at /.well-known/ohttp-gateway in place of the old one, which is no longer listed "
        "but still opens requests for the grace period (clients that fetched the old "
        "configuration); keys past their grace are deleted. Running servers on this state "
        "dir pick the change up within seconds. Every replica must get the same keys.",
    )
    g.add_argument("--state-dir", required=True, metavar="DIR")
    g.add_argument(
        "--grace",
        type=duration_s,
        default="7d",
        metavar="DURATION",
        help="how long a retired key still opens requests (default 7d; longer than clients "
        "keep the configuration, a day)",
    )
    g.set_defaults(func=cmd_rotate_gateway, extra="server")

"""``staycheck serve``, ``config check`` and ``keys rotate``: the operator's commands.

Needs the ``server`` extra; the server is imported inside the commands only."""

from __future__ import annotations

import argparse
import os
import pathlib
from typing import Any

from staycheck.cli.common import (
    EXIT_OK,
    fail,
    now,
    print_json,
    read,
)

SERVE_FLAGS = (
    "listen", "bundle", "authority_key", "state_dir", "issuer", "tls_cert", "tls_key",
    "insecure", "partner_listen", "partner_ca", "partners", "trust_store", "metrics_listen",
    "access_log", "log_level", "log_format", "workers", "scrub_freed_memory",
)  # fmt: skip


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


def cmd_rotate(args: argparse.Namespace) -> int:
    from staycheck.server.keystore import ROTATION_GRACE_S, VerdictKeyStore

    store = VerdictKeyStore(pathlib.Path(args.state_dir), issuer="")
    kid = store.rotate(now=now())
    print(
        f"new verdict key {kid} signs from now on; the old key stops signing within "
        f"{ROTATION_GRACE_S} s and stays published until its verdicts have expired"
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
    p.set_defaults(func=cmd_serve, extra="server")

    p = sub.add_parser("config", help="server configuration tools")
    cfg = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    c = cfg.add_parser(
        "check", help="validate a configuration file (with the environment) and print it"
    )
    c.add_argument("file", metavar="FILE")
    c.set_defaults(func=cmd_config_check, extra="server")


def add_rotate_parser(ksub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keys rotate``, under the traveller's ``keys`` command."""
    r = ksub.add_parser("rotate", help="make a new verdict key; running servers pick it up")
    r.add_argument("--state-dir", required=True, metavar="DIR")
    r.set_defaults(func=cmd_rotate, extra="server")

"""The ``staycheck`` command line: one parser, each audience's commands in a module of its
own.

- ``authority ...`` (:mod:`staycheck.cli.authority`): the health authority's tools.
- ``serve``, ``config check``, ``keys rotate`` (:mod:`staycheck.cli.serve`): the operator's.
- ``submit``, ``keys`` (:mod:`staycheck.cli.traveller`): the traveller's side.
- ``verify`` (:mod:`staycheck.cli.verifier`): a hotel's or venue's offline check.
- ``verify-online``, ``batch``, ``certs demo`` (:mod:`staycheck.cli.partner`): partners.
- ``relay`` (:mod:`staycheck.cli.relay`): an Oblivious HTTP relay, for tests and the demo.
- ``demo`` (:mod:`staycheck.cli.demo`): the whole story on embedded sample data.

Building the parser imports no third-party package: each command imports what it needs when
it runs, so ``pip install staycheck`` (no extras) runs ``staycheck verify``, and a command
whose extra is missing says which one to install.

Exit codes: 0 success; 1 a refusal (a token or bundle that does not verify, a call the
server refused); 2 a usage or input error.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

from staycheck.cli import authority, partner, relay, serve, traveller, verifier
from staycheck.cli.common import EXIT_USAGE, fail, missing_extra
from staycheck.geo.errors import Error


def cmd_demo(args: argparse.Namespace) -> int:
    from staycheck.cli.demo import run_demo

    return run_demo(keep=None if args.keep is None else pathlib.Path(args.keep))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="staycheck",
        description="Privacy-preserving itinerary verification: signed risk areas in, "
        "signed verdicts out.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    authority.add_parsers(sub)
    serve.add_parsers(sub)
    serve.add_rotate_parser(traveller.add_parsers(sub))
    verifier.add_parsers(sub)
    partner.add_parsers(sub)
    relay.add_parsers(sub)
    p = sub.add_parser("demo", help="the whole story on embedded sample data")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="leave the TUF repository workspace (repository/, throwaway keys) in DIR",
    )
    p.set_defaults(func=cmd_demo, extra="server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.extra == "client":
        # Before grpc is imported: its C-core log lines stay off the caller's terminal
        # (our messages say what failed); an operator's own GRPC_VERBOSITY wins.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        result: int = args.func(args)
    except Error as e:
        fail(str(e))
    except ModuleNotFoundError as e:
        extra = missing_extra(e, default=args.extra or "client")
        if extra is None:
            raise
        fail(
            f"`staycheck {args.command}` needs the {extra} extra: pip install 'staycheck[{extra}]'",
            EXIT_USAGE,
        )
    return result


if __name__ == "__main__":
    sys.exit(main())

"""``staycheck relay``: an Oblivious HTTP relay (RFC 9458) for tests, the demo and trying
the protocol out (``staycheck.server.relay``). Production uses a relay run by an operator
independent of the gateway's (docs/deploy.md).

Needs the ``server`` extra (aiohttp); imported inside the command only."""

from __future__ import annotations

import argparse

from staycheck.cli.common import EXIT_OK, fail


def cmd_relay(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import ssl
    import sys

    from staycheck.server.relay import serve

    if not args.gateway.startswith(("http://", "https://")):
        fail("relay: --gateway must be an http(s) URL")
    context = None if args.ca is None else ssl.create_default_context(cafile=args.ca)

    async def main() -> None:
        try:
            runner, port = await serve(args.listen, args.gateway, ssl_context=context)
        except OSError as e:
            fail(f"relay: --listen: cannot listen on {args.listen} ({e.strerror})")
        host = args.listen.rpartition(":")[0]
        print(f"serving on {host}:{port} (relay to {args.gateway})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    sys.stdout.flush()
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "relay",
        help="an Oblivious HTTP relay: forwards encrypted requests to a gateway, keeps nothing",
        description="Forward every POST of message/ohttp-req to the gateway unchanged, and "
        "its answer back, adding and keeping nothing (no forwarded-for header, no log line "
        "per request). For tests and trying it out: in production, the relay is run by "
        "someone other than the gateway's operator.",
    )
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="port 0: any free")
    p.add_argument("--gateway", required=True, metavar="URL", help="the gateway's URL")
    p.add_argument("--ca", metavar="PEM", help="trust this CA for an https gateway")
    p.set_defaults(func=cmd_relay, extra="server")

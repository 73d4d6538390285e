"""Which HTTP/1.1 server library for the Oblivious HTTP gateway and relay: data for the choice.

Each variant runs in a process of its own (this module with ``--serve VARIANT``), on all CPUs
but the last, beside a sync ``grpc.server`` (a ThreadPoolExecutor of 16, as the StayCheck
server has) when grpcio is installed. It serves what the gateway serves: ``POST`` of a
700-byte ``message/ohttp-req`` body answered with 400 bytes of ``message/ohttp-res``, either
at once (``/empty``) or after ~300 µs of pure-Python CPU work (``/burn``, the HPKE decrypt +
handler + encrypt stand-in, calibrated here), and ``GET /.well-known/ohttp-gateway`` (a
small static body). ``h2load --h1`` (Debian package nghttp2-client) drives it from the last
CPU with 1, 8 and 32 keep-alive connections; for each run the server's CPU time per request
is read from /proc (utime + stime), p50/p99 latency from h2load's per-request log, and
correctness from three sides: every request answered 2xx with exactly 400 bytes, the server
saw every body whole, and it saw exactly as many client connections as h2load opened (a
dropped keep-alive connection shows up as more). Meanwhile a thread of this process sends
one gRPC call every 10 ms to the server's gRPC port and times it: the gateway must not
starve the gRPC threads of the GIL. Variants are started anew each round, in rotated order,
and the median of ``--rounds`` rounds is kept (the machine is shared: the load average is
printed with the table).

The relay variants (``relay-*``) forward each POST body unchanged over keep-alive
connections to an upstream gateway (the fastest installed variant serving ``/empty``, run
on the load generator's CPU so that only the relay's own CPU is counted), and are measured
the same way.

``--checks`` also tries each gateway variant with its limits set (64 KiB bodies, 3 s
timeouts) the way a gateway module would set them: an oversized Content-Length, an oversized
chunked body, 1 MiB of header lines, headers that stall, headers that trickle (one line a
second), a body that stalls, an idle keep-alive connection, and SIGTERM with an idle
keep-alive connection open.

Variants: ``stdlib``; ``aiohttp`` (``-pool``: the work in a thread pool; ``-uvloop``: on
uvloop); ``uvicorn`` (httptools + uvloop, i.e. ``uvicorn[standard]``; ``-asyncio``: httptools
on the stock loop; ``-h11``: plain ``uvicorn``; ``-pool``); ``hypercorn``; ``granian``
(embedded); relays ``relay-stdlib``, ``relay-aiohttp``, ``relay-uvicorn``, ``relay-granian``.

The libraries are not project dependencies: run this with an interpreter that has them
(a variant whose library is missing is skipped, with a message)::

    python3 -m venv /tmp/httpbench
    /tmp/httpbench/bin/pip install aiohttp uvicorn httptools uvloop hypercorn granian grpcio
    /tmp/httpbench/bin/python -m bench.http_servers --checks
    /tmp/httpbench/bin/python -m bench.http_servers --variants stdlib,uvicorn --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.stats import median, percentile

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

REQUEST_BYTES = 700
RESPONSE = bytes(range(256)) + bytes(144)  # 400 bytes
assert len(RESPONSE) == 400
KEY_CONFIG = bytes(41)  # the size of one X25519/HKDF-SHA256/AES-128-GCM key config
MAX_BODY = 64 * 1024
REQ_TYPE = "message/ohttp-req"
RES_TYPE = "message/ohttp-res"
CONFIG_TYPE = "application/ohttp-keys"
GRPC_PROBE = "/bench.Probe/Ping"

# variant -> (modules it needs, what it is)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "stdlib": ((), "http.server.ThreadingHTTPServer, HTTP/1.1, a thread per connection"),
    "aiohttp": (("aiohttp",), "aiohttp.web on an event loop in a thread, work inline"),
    "aiohttp-pool": (("aiohttp",), "aiohttp.web, work in a ThreadPoolExecutor(4)"),
    "aiohttp-uvloop": (("aiohttp", "uvloop"), "aiohttp.web on a uvloop loop, work inline"),
    "uvicorn-h11": (("uvicorn", "h11"), "uvicorn, h11 + asyncio (plain `uvicorn`), raw ASGI"),
    "uvicorn": (("uvicorn", "httptools", "uvloop"), "uvicorn, httptools + uvloop, raw ASGI"),
    "uvicorn-pool": (("uvicorn", "httptools", "uvloop"), "uvicorn as above, work in a pool(4)"),
    "uvicorn-asyncio": (("uvicorn", "httptools"), "uvicorn, httptools + the asyncio loop"),
    "hypercorn": (("hypercorn",), "hypercorn (h11, asyncio), raw ASGI"),
    "granian": (("granian",), "granian embedded (Rust I/O, asyncio loop in a thread), RSGI"),
    "relay-stdlib": ((), "ThreadingHTTPServer + http.client, one upstream conn per conn"),
    "relay-aiohttp": (("aiohttp",), "aiohttp.web + aiohttp.ClientSession"),
    "relay-uvicorn": (("uvicorn", "httptools", "uvloop", "aiohttp"), "uvicorn + aiohttp client"),
    "relay-granian": (("granian", "aiohttp"), "granian embedded + aiohttp client"),
}
GATEWAYS = [v for v in VARIANTS if not v.startswith("relay-")]
RELAYS = [v for v in VARIANTS if v.startswith("relay-")]
UPSTREAM_PREFERENCE = ["granian", "uvicorn", "aiohttp", "stdlib"]
DISTRIBUTIONS = ["aiohttp", "uvicorn", "h11", "httptools", "uvloop", "hypercorn", "granian"]


def missing_modules(variant: str) -> list[str]:
    return [m for m in VARIANTS[variant][0] if importlib.util.find_spec(m) is None]


# ---------------------------------------------------------------------------------------
# The server side: what every variant serves, the same Python code behind each library.


def burn(iterations: int) -> int:
    """Pure-Python CPU work holding the GIL throughout (the HPKE + handler stand-in)."""
    x = 0
    for i in range(iterations):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


class Gateway:
    """The application behind every variant: answers a POST, counts what it saw."""

    def __init__(self, burn_iterations: int, timeout_s: float) -> None:
        self.burn_iterations = burn_iterations
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.posts = 0
        self.bad_bodies = 0
        self.peers: set[int] = set()
        self.burn_cpu_s = 0.0

    def post(self, path: str, body: bytes, peer: int) -> tuple[int, bytes]:
        ok = len(body) == REQUEST_BYTES
        with self._lock:
            self.posts += 1
            self.bad_bodies += not ok
            self.peers.add(peer)
        if not ok:
            return 400, b""
        if path == "/burn":
            t0 = time.thread_time()
            burn(self.burn_iterations)
            spent = time.thread_time() - t0
            with self._lock:
                self.burn_cpu_s += spent
        return 200, RESPONSE

    def stats(self, reset: bool) -> bytes:
        with self._lock:
            out = {
                "posts": self.posts,
                "bad_bodies": self.bad_bodies,
                "peers": len(self.peers),
                "burn_cpu_s": self.burn_cpu_s,
            }
            if reset:
                self.posts = self.bad_bodies = 0
                self.burn_cpu_s = 0.0
                self.peers.clear()
        return json.dumps(out).encode()

    def get(self, target: str) -> tuple[int, str, bytes]:
        path, _, query = target.partition("?")
        if path == "/.well-known/ohttp-gateway":
            return 200, CONFIG_TYPE, KEY_CONFIG
        if path == "/stats":
            return 200, "application/json", self.stats("reset" in query)
        return 404, "text/plain", b"not found\n"


class Relay(Gateway):
    """The relay's application: the same counters; the forwarding is per library."""

    def __init__(self, upstream: tuple[str, int], timeout_s: float) -> None:
        super().__init__(0, timeout_s)
        self.upstream = upstream
        self.url = f"http://{upstream[0]}:{upstream[1]}/empty"

    def count(self, body: bytes, peer: int) -> bool:
        ok = len(body) == REQUEST_BYTES
        with self._lock:
            self.posts += 1
            self.bad_bodies += not ok
            self.peers.add(peer)
        return ok


Running = Callable[[], None]  # stops the server it came from


def _loop_thread(
    make_loop: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Any]
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """An event loop in a daemon thread running ``main()`` (a coroutine) to completion."""
    loop = make_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())

    thread = threading.Thread(target=run, name="http", daemon=True)
    thread.start()
    return loop, thread


def _new_loop(uv: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if uv:
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


# --- stdlib ------------------------------------------------------------------------------


def serve_stdlib(app: Gateway, port: int) -> Running:
    import http.client
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    relay = app if isinstance(app, Relay) else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        wbufsize = -1  # status line, headers and body leave in one send (flushed per request)
        disable_nagle_algorithm = True
        timeout = app.timeout_s  # socket timeout on every recv: idle, headers and body
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.reply(*app.get(self.path))

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():  # chunked bodies are not read by http.server
                self.close_connection = True
                return self.reply(411, "text/plain", b"length required\n")
            if int(length) > MAX_BODY:
                self.close_connection = True
                return self.reply(413, "text/plain", b"too large\n")
            body = self.rfile.read(int(length))
            if relay is None:
                status, out = app.post(self.path, body, self.client_address[1])
            else:
                relay.count(body, self.client_address[1])
                status, out = self.forward(body)
            self.reply(status, RES_TYPE, out)

        def forward(self, body: bytes) -> tuple[int, bytes]:
            assert relay is not None
            for attempt in (0, 1):  # a kept-alive upstream connection may have been closed
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(*relay.upstream, timeout=5)
                try:
                    self.upstream.request("POST", "/empty", body, {"Content-Type": REQ_TYPE})
                    response = self.upstream.getresponse()
                    return response.status, response.read()
                except (OSError, http.client.HTTPException):
                    self.upstream.close()
                    self.upstream = None
                    if attempt:
                        return 502, b""
            return 502, b""

        def finish(self) -> None:
            super().finish()
            if self.upstream is not None:
                self.upstream.close()

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default listen backlog of 5 drops SYNs of 32 connects
        daemon_threads = True

    server = Server(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()  # stops accepting; connection threads are daemons
        server.server_close()

    return stop


# --- aiohttp -----------------------------------------------------------------------------


def serve_aiohttp(app: Gateway, port: int, *, pool: bool = False, uv: bool = False) -> Running:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    executor = ThreadPoolExecutor(4, thread_name_prefix="work") if pool else None
    relay = app if isinstance(app, Relay) else None
    state: dict[str, Any] = {}
    started = threading.Event()

    async def post(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername")[1] if request.transport else 0
        if (request.content_length or 0) > MAX_BODY:
            return web.Response(status=413, headers={"Connection": "close"})
        try:
            async with asyncio.timeout(app.timeout_s):
                body = await request.read()  # client_max_size also bounds it (chunked too)
        except TimeoutError:
            return web.Response(status=408, headers={"Connection": "close"})
        if relay is not None:
            relay.count(body, peer)
            session: ClientSession = state["session"]
            async with session.post(
                relay.url, data=body, headers={"Content-Type": REQ_TYPE}
            ) as upstream:
                out = await upstream.read()
                return web.Response(status=upstream.status, body=out, content_type=RES_TYPE)
        if executor is not None:
            loop = asyncio.get_running_loop()
            status, out = await loop.run_in_executor(executor, app.post, request.path, body, peer)
        else:
            status, out = app.post(request.path, body, peer)
        return web.Response(status=status, body=out, content_type=RES_TYPE)

    async def get(request: web.Request) -> web.Response:
        status, ctype, out = app.get(request.path_qs)
        return web.Response(status=status, body=out, content_type=ctype)

    async def main() -> None:
        web_app = web.Application(client_max_size=MAX_BODY)
        web_app.router.add_post("/{tail:.*}", post)
        web_app.router.add_get("/{tail:.*}", get)
        runner = web.AppRunner(
            web_app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=app.timeout_s,
            shutdown_timeout=app.timeout_s,
            lingering_time=1.0,  # the default reads an unwanted body for up to 10 s
        )
        await runner.setup()
        if relay is not None:
            state["session"] = ClientSession(
                connector=TCPConnector(limit=64, keepalive_timeout=30),
                timeout=ClientTimeout(total=5),
                skip_auto_headers=("User-Agent",),
            )
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=128)
        await site.start()
        state["stop"] = asyncio.Event()
        started.set()
        await state["stop"].wait()
        await runner.cleanup()  # closes the listener, lets in-flight requests finish
        if relay is not None:
            await state["session"].close()

    loop, thread = _loop_thread(_new_loop(uv), main)
    started.wait(30)

    def stop() -> None:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(app.timeout_s + 5)
        if executor is not None:
            executor.shutdown(wait=False)

    return stop


# --- ASGI (uvicorn, hypercorn) -----------------------------------------------------------


def make_asgi(app: Gateway, executor: ThreadPoolExecutor | None) -> Callable[..., Any]:
    relay = app if isinstance(app, Relay) else None
    state: dict[str, Any] = {}

    async def respond(send: Any, status: int, ctype: str, body: bytes, close: bool) -> None:
        headers = [(b"content-type", ctype.encode()), (b"content-length", b"%d" % len(body))]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            target = scope["path"] + (
                "?" + scope["query_string"].decode() if scope["query_string"] else ""
            )
            status, ctype, out = app.get(target)
            return await respond(send, status, ctype, out, False)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
        if int(length or b"0") > MAX_BODY:
            return await respond(send, 413, "text/plain", b"too large\n", True)
        chunks = bytearray()
        try:
            async with asyncio.timeout(app.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunks += message.get("body", b"")
                    if len(chunks) > MAX_BODY:
                        return await respond(send, 413, "text/plain", b"too large\n", True)
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            return await respond(send, 408, "text/plain", b"timeout\n", True)
        body = bytes(chunks)
        peer = scope["client"][1] if scope.get("client") else 0
        if relay is not None:
            relay.count(body, peer)
            status, out = await _aiohttp_forward(relay, state, body)
        elif executor is not None:
            loop = asyncio.get_running_loop()
            status, out = await loop.run_in_executor(executor, app.post, scope["path"], body, peer)
        else:
            status, out = app.post(scope["path"], body, peer)
        await respond(send, status, RES_TYPE, out, False)

    return asgi


async def _aiohttp_forward(relay: Relay, state: dict[str, Any], body: bytes) -> tuple[int, bytes]:
    """Forward with one aiohttp.ClientSession per event loop (made on first use)."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    if "session" not in state:
        state["session"] = ClientSession(
            connector=TCPConnector(limit=64, keepalive_timeout=30),
            timeout=ClientTimeout(total=5),
            skip_auto_headers=("User-Agent",),
        )
    async with state["session"].post(
        relay.url, data=body, headers={"Content-Type": REQ_TYPE}
    ) as upstream:
        return upstream.status, await upstream.read()


def serve_uvicorn(
    app: Gateway, port: int, *, h11: bool = False, pool: bool = False, uv: bool = True
) -> Running:
    import uvicorn

    executor = ThreadPoolExecutor(4, thread_name_prefix="work") if pool else None
    config = uvicorn.Config(
        make_asgi(app, executor),
        host="127.0.0.1",
        port=port,
        http="h11" if h11 else "httptools",
        loop="uvloop" if uv and not h11 else "asyncio",
        lifespan="off",
        access_log=False,
        log_config=None,  # leave the host process's logging alone
        log_level="warning",
        backlog=128,
        timeout_keep_alive=int(app.timeout_s),
        timeout_graceful_shutdown=int(app.timeout_s),
        h11_max_incomplete_event_size=16 * 1024,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()  # not the main thread: uvicorn installs no signal handlers
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True  # polled every 0.1 s; drains, then closes idle conns
        thread.join(app.timeout_s + 5)

    return stop


def serve_hypercorn(app: Gateway, port: int) -> Running:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 128
    config.keep_alive_timeout = app.timeout_s
    config.read_timeout = int(app.timeout_s)  # every read, headers and body alike
    config.graceful_timeout = app.timeout_s
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_max_requests = 2**31  # the default, 1000, closes busy relay connections
    _hypercorn_reason_phrase()
    state: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        state["stop"] = asyncio.Event()
        started.set()
        await serve(make_asgi(app, None), config, shutdown_trigger=state["stop"].wait)

    loop, thread = _loop_thread(asyncio.new_event_loop, main)
    started.wait(30)
    _wait_listening(port)

    def stop() -> None:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(app.timeout_s + 5)

    return stop


def _hypercorn_reason_phrase() -> None:
    """Have hypercorn send "200 OK", not "200 " (h11's default of an empty reason phrase is
    valid HTTP/1.1, but h2load 1.52 counts such a response as failed)."""
    import http
    import types

    import h11
    import hypercorn.protocol.h11 as hypercorn_h11

    proxy = types.ModuleType("h11")
    proxy.__dict__.update(vars(h11))

    def response(**kwargs: Any) -> h11.Response:
        kwargs.setdefault("reason", http.HTTPStatus(kwargs["status_code"]).phrase)
        return h11.Response(**kwargs)

    proxy.Response = response  # type: ignore[attr-defined]
    hypercorn_h11.h11 = proxy  # type: ignore[attr-defined]


# --- granian -----------------------------------------------------------------------------


def serve_granian(app: Gateway, port: int) -> Running:
    import logging

    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    logging.getLogger("_granian").setLevel(logging.ERROR)
    logging.getLogger("granian").setLevel(logging.ERROR)
    relay = app if isinstance(app, Relay) else None
    state: dict[str, Any] = {}

    async def rsgi(scope: Any, proto: Any) -> None:
        if scope.method != "POST":
            target = scope.path + ("?" + scope.query_string if scope.query_string else "")
            status, ctype, out = app.get(target)
            proto.response_bytes(status, [("content-type", ctype)], out)
            return
        if int(scope.headers.get("content-length") or 0) > MAX_BODY:
            proto.response_bytes(413, [("connection", "close")], b"too large\n")
            return
        chunks = bytearray()
        try:
            async with asyncio.timeout(app.timeout_s):
                async for chunk in proto:
                    chunks += chunk
                    if len(chunks) > MAX_BODY:
                        proto.response_bytes(413, [("connection", "close")], b"")
                        return
        except TimeoutError:
            proto.response_bytes(408, [("connection", "close")], b"timeout\n")
            return
        body = bytes(chunks)
        peer = int(scope.client.rsplit(":", 1)[1])
        if relay is not None:
            relay.count(body, peer)
            status, out = await _aiohttp_forward(relay, state, body)
        else:
            status, out = app.post(scope.path, body, peer)
        proto.response_bytes(status, [("content-type", RES_TYPE)], out)

    servers: list[Any] = []

    async def main() -> None:
        server = Server(
            rsgi,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.RSGI,
            http=HTTPModes.http1,
            websockets=False,
            backlog=128,
            runtime_threads=1,
            log_enabled=False,
            http1_settings=HTTP1Settings(header_read_timeout=int(app.timeout_s * 1000)),
        )
        servers.append(server)
        await server.serve()

    loop, thread = _loop_thread(asyncio.new_event_loop, main)
    _wait_listening(port)

    def stop() -> None:
        loop.call_soon_threadsafe(servers[0].signal_handler_interrupt)
        thread.join(app.timeout_s + 5)

    return stop


def _wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port}")


STARTERS: dict[str, Callable[[Gateway, int], Running]] = {
    "stdlib": serve_stdlib,
    "aiohttp": serve_aiohttp,
    "aiohttp-pool": lambda app, port: serve_aiohttp(app, port, pool=True),
    "aiohttp-uvloop": lambda app, port: serve_aiohttp(app, port, uv=True),
    "uvicorn-h11": lambda app, port: serve_uvicorn(app, port, h11=True),
    "uvicorn": serve_uvicorn,
    "uvicorn-pool": lambda app, port: serve_uvicorn(app, port, pool=True),
    "uvicorn-asyncio": lambda app, port: serve_uvicorn(app, port, uv=False),
    "hypercorn": serve_hypercorn,
    "granian": serve_granian,
    "relay-stdlib": serve_stdlib,
    "relay-aiohttp": serve_aiohttp,
    "relay-uvicorn": serve_uvicorn,
    "relay-granian": serve_granian,
}


def start_grpc() -> tuple[Any, int] | None:
    try:
        import grpc
    except ImportError:
        return None
    server = grpc.server(ThreadPoolExecutor(16), options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Probe", {"Ping": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def serve_main(args: argparse.Namespace) -> int:
    """``--serve VARIANT``: run one variant (and a gRPC server) until SIGTERM."""
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    grpc_server = None if args.no_grpc else start_grpc()
    app: Gateway
    if args.serve.startswith("relay-"):
        host, _, port = args.upstream.rpartition(":")
        app = Relay((host, int(port)), args.timeout)
    else:
        app = Gateway(args.burn_iterations, args.timeout)
    stop = STARTERS[args.serve](app, args.port)
    grpc_port = grpc_server[1] if grpc_server else 0
    print(f"serving on 127.0.0.1:{args.port} grpc={grpc_port}", flush=True)
    stopping.wait()
    t0 = time.monotonic()
    stop()
    if grpc_server:
        grpc_server[0].stop(grace=1).wait()
    print(f"stopped in {time.monotonic() - t0:.3f} s", flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# The driver side.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def loadavg() -> str:
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def split_cpus() -> tuple[set[int], set[int]]:
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return set(usable), set(usable)
    return set(usable[:-1]), {usable[-1]}


def calibrate_burn(target_s: float) -> tuple[int, float]:
    """Iterations of :func:`burn` for ``target_s`` of CPU (the fastest of several tries)."""
    n = 100_000
    best = min(_timed(burn, n) for _ in range(9))
    iterations = max(1, round(n * target_s / best))
    return iterations, min(_timed(burn, iterations) for _ in range(51))


def _timed(fn: Callable[[int], Any], n: int) -> float:
    t0 = time.thread_time()
    fn(n)
    return time.thread_time() - t0


@dataclass
class Served:
    variant: str
    proc: subprocess.Popen[str]
    port: int
    grpc_port: int
    stderr: pathlib.Path


@contextlib.contextmanager
def serve(
    variant: str,
    tmp: pathlib.Path,
    *,
    cpus: set[int],
    burn_iterations: int,
    timeout_s: float,
    upstream: str = "",
    grpc: bool = True,
) -> Iterator[Served]:
    port = free_port()
    err = tmp / f"{variant}.{port}.err"
    cmd = [
        sys.executable,
        "-m",
        "bench.http_servers",
        "--serve",
        variant,
        "--port",
        str(port),
        "--cpus",
        ",".join(map(str, sorted(cpus))),
        "--burn-iterations",
        str(burn_iterations),
        "--timeout",
        str(timeout_s),
    ]
    if upstream:
        cmd += ["--upstream", upstream]
    if not grpc:
        cmd += ["--no-grpc"]
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            cmd, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=err_file, text=True
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        m = re.match(r"serving on [\d.]+:(\d+) grpc=(\d+)", line)
        if not m:
            raise RuntimeError(f"{variant} did not start: {line!r} {err.read_text()[-800:]}")
        yield Served(variant, proc, int(m[1]), int(m[2]), err)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[str], grace_s: float = 15) -> float:
    """SIGTERM, then SIGKILL after ``grace_s``; seconds until it exited."""
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return time.monotonic() - t0


def http_get(port: int, path: str) -> bytes:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def server_stats(port: int, reset: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(http_get(port, "/stats?reset" if reset else "/stats"))
    return out


class GrpcProbe:
    """One gRPC call every ``interval_s`` from a thread, timed, while ``with`` lasts; its
    ``cpu_per_call_s`` is what one call costs the server (set by :meth:`baseline`)."""

    def __init__(self, port: int, interval_s: float = 0.01) -> None:
        import grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.call = self.channel.unary_unary(GRPC_PROBE)
        self.interval_s = interval_s
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_per_call_s = 0.0

    def baseline(self, pid: int, seconds: float = 2.0) -> tuple[float, float, float]:
        """Probe an idle server: (p50, p99, server CPU per call)."""
        u0, s0 = cpu_times(pid)
        with self:
            time.sleep(seconds)
        u1, s1 = cpu_times(pid)
        self.cpu_per_call_s = (u1 - u0 + s1 - s0) / max(1, len(self.latencies))
        return lat(self.latencies, 50), lat(self.latencies, 99), self.cpu_per_call_s

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                self.call(b"ping", timeout=10)
                self.latencies.append(time.perf_counter() - t0)
            except Exception:
                self.errors += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GrpcProbe:
        self.latencies, self.errors = [], 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)

    def close(self) -> None:
        self.channel.close()


_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")


@dataclass
class Run:
    variant: str
    path: str
    conns: int
    requests: int = 0
    ok: int = 0
    wall_s: float = 0.0
    server_user_s: float = 0.0
    server_sys_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    grpc_latencies: list[float] = field(default_factory=list)
    grpc_errors: int = 0
    problems: list[str] = field(default_factory=list)
    peers: int = 0
    upstream_peers: int = 0
    probe_cpu_s: float = 0.0
    """The server CPU that the gRPC probe's calls cost (measured idle), left out of the figure."""
    burn_cpu_s: float = 0.0
    """The CPU time spent in :func:`burn` (thread time, measured in the server)."""

    @property
    def cpu_per_request_s(self) -> float:
        cpu = self.server_user_s + self.server_sys_s - self.probe_cpu_s
        return cpu / self.requests if self.requests else 0.0


def h2load(
    port: int, path: str, *, count: int, conns: int, body: pathlib.Path, log: pathlib.Path
) -> tuple[str, float]:
    cmd = [
        shutil.which("h2load") or "h2load",
        "--h1",
        "-n",
        str(count),
        "-c",
        str(conns),
        "-m",
        "1",
        "-t",
        "1",
        "-d",
        str(body),
        "-H",
        f"content-type: {REQ_TYPE}",
        "--log-file",
        str(log),
        f"http://127.0.0.1:{port}{path}",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr[-500:]}")
    return out.stdout, wall


def measure(
    served: Served,
    path: str,
    conns: int,
    count: int,
    tmp: pathlib.Path,
    probe: GrpcProbe | None,
    upstream: Served | None = None,
) -> Run:
    run = Run(served.variant, path, conns)
    body = tmp / "body.bin"
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    server_stats(served.port, reset=True)
    if upstream:
        server_stats(upstream.port, reset=True)
    u0, s0 = cpu_times(served.proc.pid)
    with probe if probe else contextlib.nullcontext():
        text, wall = h2load(served.port, path, count=count, conns=conns, body=body, log=log)
    u1, s1 = cpu_times(served.proc.pid)
    run.server_user_s, run.server_sys_s, run.wall_s = u1 - u0, s1 - s0, wall
    if probe:
        run.grpc_latencies, run.grpc_errors = list(probe.latencies), probe.errors
        run.probe_cpu_s = len(probe.latencies) * probe.cpu_per_call_s
        if probe.errors:
            run.problems.append(f"{probe.errors} gRPC probe errors")
    req, status, traffic = _REQUESTS.search(text), _STATUS.search(text), _TRAFFIC.search(text)
    if not (req and status and traffic):
        raise RuntimeError(f"unexpected h2load output: {text[-800:]}")
    run.requests, run.ok = int(req[1]), int(status[1])
    if int(req[4]) != count or run.ok != count:
        run.problems.append(
            f"{req[4]}/{count} succeeded, {req[5]} failed, {req[6]} errored, {req[7]} timed "
            f"out, {run.ok} 2xx"
        )
    if int(traffic[3]) != count * len(RESPONSE):
        run.problems.append(f"{traffic[3]} body bytes, not {count * len(RESPONSE)}")
    for line in log.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) >= 3 and cols[1] == "200":
            run.latencies.append(int(cols[2]) / 1e6)
    stats = server_stats(served.port)
    run.peers = stats["peers"]
    run.burn_cpu_s = stats["burn_cpu_s"]
    if stats["posts"] != count or stats["bad_bodies"]:
        run.problems.append(f"server saw {stats['posts']} posts, {stats['bad_bodies']} bad")
    if stats["peers"] != conns:
        run.problems.append(f"{stats['peers']} client connections for {conns} (dropped?)")
    if upstream:
        run.upstream_peers = server_stats(upstream.port)["peers"]
    return run


@dataclass
class Row:
    variant: str
    path: str
    conns: int
    runs: list[Run]

    def med(self, fn: Callable[[Run], float]) -> float:
        return median([fn(r) for r in self.runs])


def lat(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def print_table(rows: list[Row], burn_s: float, title: str) -> None:
    print(f"\n{title}")
    head = (
        f"{'variant':<16}{'path':<7}{'conns':>5}{'req/s':>8}{'cpu µs/req':>11}{'(sys)':>6}"
        f"{'- burn':>7}{'p50 ms':>8}{'p99 ms':>8}{'grpc p50':>9}{'grpc p99':>9}  problems"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        cpu = row.med(lambda r: r.cpu_per_request_s)
        sys_ = row.med(lambda r: r.server_sys_s / r.requests if r.requests else 0)
        over = row.med(lambda r: r.cpu_per_request_s - r.burn_cpu_s / r.requests)
        grpc50 = row.med(lambda r: lat(r.grpc_latencies, 50)) if row.runs[0].grpc_latencies else 0
        grpc99 = row.med(lambda r: lat(r.grpc_latencies, 99)) if row.runs[0].grpc_latencies else 0
        problems = sorted({p for r in row.runs for p in r.problems})
        extra = (
            f" upstream conns {row.runs[-1].upstream_peers}" if row.runs[-1].upstream_peers else ""
        )
        print(
            f"{row.variant:<16}{row.path:<7}{row.conns:>5}"
            f"{row.med(lambda r: r.requests / r.wall_s):>8.0f}{us(cpu):>11}{us(sys_):>6}"
            f"{us(over):>7}{ms(row.med(lambda r: lat(r.latencies, 50))):>8}"
            f"{ms(row.med(lambda r: lat(r.latencies, 99))):>8}"
            f"{ms(grpc50) if grpc50 else '-':>9}{ms(grpc99) if grpc99 else '-':>9}  "
            f"{'; '.join(problems) if problems else 'ok'}{extra}"
        )


# --- functional checks of limits, timeouts and shutdown -------------------------------------


def _closed_after(sock: socket.socket, cap_s: float) -> tuple[float | None, bytes]:
    """Seconds until the peer closes ``sock`` (None: still open after ``cap_s``), and what it
    sent before."""
    t0 = time.monotonic()
    got = b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < cap_s:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0, got
        if not data:
            return time.monotonic() - t0, got
        got += data
    return None, got


def _status(data: bytes) -> str:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return m[1].decode() if m else "-"


def _fmt_close(after: float | None, data: bytes, cap: float) -> str:
    when = f">{cap:.0f}s open" if after is None else f"closed {after:.1f}s"
    return f"{_status(data)}, {when}"


REQUEST_HEAD = (
    "POST /burn HTTP/1.1\r\nHost: gw\r\nContent-Type: message/ohttp-req\r\n"
    "Content-Length: {n}\r\n\r\n"
)


def checks(served: Served, cap_s: float) -> dict[str, str]:
    port = served.port
    out: dict[str, str] = {}

    def conn() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), 5)

    with conn() as s:  # an oversized Content-Length: is it refused before the body comes?
        s.sendall(REQUEST_HEAD.format(n=10_000_000).encode())
        out["10MB CL"] = _fmt_close(*_closed_after(s, cap_s), cap_s)
    with conn() as s:  # an oversized chunked body, sent as fast as it goes
        s.sendall(b"POST /burn HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        with contextlib.suppress(OSError):
            s.settimeout(cap_s)
            chunk = b"%x\r\n%s\r\n" % (16384, bytes(16384))
            while sent < 4 * 2**20:
                s.sendall(chunk)
                sent += 16384
        out["4MB chunked"] = _fmt_close(*_closed_after(s, cap_s), cap_s) + (
            f" after {sent // 1024} KiB" if sent < 4 * 2**20 else ""
        )
    with conn() as s:  # 1 MiB of header lines, sent as fast as it goes
        s.sendall(b"POST /burn HTTP/1.1\r\nHost: gw\r\n")
        sent = 0
        with contextlib.suppress(OSError):
            s.settimeout(cap_s)
            line = b"X-Fill: " + b"a" * 1014 + b"\r\n"
            while sent < 2**20:
                s.sendall(line)
                sent += len(line)
        out["1MiB headers"] = _fmt_close(*_closed_after(s, cap_s), cap_s) + (
            f" after {sent // 1024} KiB" if sent < 2**20 else ""
        )
    with conn() as s:  # headers that stall
        s.sendall(b"POST /burn HTTP/1.1\r\nHost: gw\r\n")
        out["stalled headers"] = _fmt_close(*_closed_after(s, cap_s), cap_s)
    with conn() as s:  # headers that trickle, one line a second
        s.sendall(b"POST /burn HTTP/1.1\r\nHost: gw\r\n")
        t0 = time.monotonic()
        closed: float | None = None
        with contextlib.suppress(OSError):
            while time.monotonic() - t0 < cap_s:
                after, data = _closed_after(s, 1.0)
                if after is not None:
                    closed = time.monotonic() - t0
                    break
                s.sendall(b"X-Slow: 1\r\n")
        if closed is None and time.monotonic() - t0 < cap_s:
            closed = time.monotonic() - t0  # the send failed: closed
        out["trickled headers"] = (
            f">{cap_s:.0f}s open" if closed is None else f"closed {closed:.1f}s"
        )
    with conn() as s:  # a body that stalls after 100 of 700 bytes
        s.sendall(REQUEST_HEAD.format(n=REQUEST_BYTES).encode() + bytes(100))
        out["stalled body"] = _fmt_close(*_closed_after(s, cap_s), cap_s)
    with conn() as s:  # an idle keep-alive connection
        s.sendall(REQUEST_HEAD.format(n=REQUEST_BYTES).encode() + bytes(REQUEST_BYTES))
        after, data = _closed_after(s, cap_s)
        out["idle keep-alive"] = _fmt_close(after, data, cap_s)
    with conn() as s:  # GET of the key config
        s.sendall(b"GET /.well-known/ohttp-gateway HTTP/1.1\r\nHost: gw\r\n\r\n")
        s.settimeout(5)
        out["GET config"] = _status(s.recv(4096))
    # SIGTERM with one idle keep-alive connection open.
    s = conn()
    s.sendall(REQUEST_HEAD.format(n=REQUEST_BYTES).encode() + bytes(REQUEST_BYTES))
    s.settimeout(5)
    s.recv(4096)
    stop_s = stop_process(served.proc, grace_s=cap_s * 2)
    after, _ = _closed_after(s, 1.0)
    s.close()
    how = "exited" if served.proc.returncode == 0 else f"rc {served.proc.returncode}"
    out["SIGTERM, idle conn"] = f"{how} in {stop_s:.1f}s" + (
        ", conn closed" if after is not None else ", conn open"
    )
    return out


def versions() -> str:
    got = []
    for dist in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            got.append(f"{dist} {importlib.metadata.version(dist)}")
    return ", ".join(got) or "none"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--conns", default="1,8,32")
    p.add_argument("--paths", default="/empty,/burn")
    p.add_argument("--seconds", type=float, default=2.0, help="target length of one run")
    p.add_argument("--burn-us", type=float, default=300.0, help="CPU work of /burn")
    p.add_argument("--checks", action="store_true", help="also run the limit checks")
    p.add_argument("--checks-only", action="store_true")
    p.add_argument("--json", type=pathlib.Path, help="also write the raw figures here")
    # --serve mode (a server process started by the driver)
    p.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    p.add_argument("--burn-iterations", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=3.0, help=argparse.SUPPRESS)
    p.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    p.add_argument("--no-grpc", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve_main(args)

    if not shutil.which("h2load") and not args.checks_only:
        print("h2load is not installed (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    server_cpus, loadgen_cpus = split_cpus()
    os.sched_setaffinity(0, loadgen_cpus)  # h2load and the upstream inherit it
    iterations, burn_s = calibrate_burn(args.burn_us / 1e6)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = []
    for v in wanted:
        if v not in VARIANTS:
            p.error(f"unknown variant {v}: one of {', '.join(VARIANTS)}")
        if missing := missing_modules(v):
            print(f"skipping {v}: {', '.join(missing)} not installed")
        else:
            variants.append(v)
    grpc_ok = importlib.util.find_spec("grpc") is not None
    if not grpc_ok:
        print("grpcio is not installed: no gRPC server beside the gateway, no gRPC probe")
    conns_list = [int(c) for c in args.conns.split(",")]
    paths = [x for x in args.paths.split(",") if x]
    print(
        f"python {sys.version.split()[0]}; {versions()}; server CPUs {sorted(server_cpus)}, "
        f"load generator CPUs {sorted(loadgen_cpus)}; /burn = {iterations} iterations = "
        f"{burn_s * 1e6:.0f} µs CPU; load average {loadavg()}",
        flush=True,
    )
    gateways = [v for v in variants if v in GATEWAYS]
    relays = [v for v in variants if v in RELAYS]
    upstream_variant = next(
        (v for v in UPSTREAM_PREFERENCE if v in GATEWAYS and not missing_modules(v)), "stdlib"
    )
    runs: dict[tuple[str, str, int], list[Run]] = {}
    rates: dict[tuple[str, str], float] = {}
    baselines: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="staycheck-http-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        (tmp / "body.bin").write_bytes(bytes(range(256)) * 2 + bytes(REQUEST_BYTES - 512))
        for rnd in range(0 if args.checks_only else args.rounds):
            k = rnd % max(1, len(gateways))
            for variant in gateways[k:] + gateways[:k]:
                with serve(
                    variant,
                    tmp,
                    cpus=server_cpus,
                    burn_iterations=iterations,
                    timeout_s=10,
                    grpc=grpc_ok,
                ) as served:
                    probe = GrpcProbe(served.grpc_port) if grpc_ok else None
                    try:
                        _one_server(
                            served,
                            paths,
                            conns_list,
                            args,
                            tmp,
                            probe,
                            runs,
                            rates,
                            baselines=baselines,
                        )
                    finally:
                        if probe:
                            probe.close()
            if relays:
                with serve(
                    upstream_variant,
                    tmp,
                    cpus=loadgen_cpus,
                    burn_iterations=iterations,
                    timeout_s=60,
                    grpc=False,
                ) as upstream:
                    k = rnd % len(relays)
                    for variant in relays[k:] + relays[:k]:
                        with serve(
                            variant,
                            tmp,
                            cpus=server_cpus,
                            burn_iterations=iterations,
                            timeout_s=10,
                            upstream=f"127.0.0.1:{upstream.port}",
                            grpc=False,
                        ) as served:
                            _one_server(
                                served,
                                ["/empty"],
                                conns_list,
                                args,
                                tmp,
                                None,
                                runs,
                                rates,
                                upstream=upstream,
                            )
            print(f"round {rnd + 1}/{args.rounds} done; load average {loadavg()}", flush=True)
        rows = [Row(v, path, c, rs) for (v, path, c), rs in runs.items()]
        if rows:
            print_table(
                [r for r in rows if r.variant in GATEWAYS],
                burn_s,
                f"Gateway variants: median of {args.rounds} rounds; cpu = server utime+stime per "
                f"request; '- burn' = cpu minus the time in /burn's work (~{burn_s * 1e6:.0f} µs, "
                "timed in the server); grpc = "
                "latency of a 100/s gRPC probe to the same process during the run",
            )
            if baselines:
                print(
                    "gRPC probe with no HTTP load (p50 / p99 ms, server CPU per call µs): "
                    + "; ".join(
                        f"{v} {ms(median([b[0] for b in bs]))} / {ms(median([b[1] for b in bs]))}, "
                        f"{us(median([b[2] for b in bs]))}"
                        for v, bs in baselines.items()
                    )
                )
            relay_rows = [r for r in rows if r.variant in RELAYS]
            if relay_rows:
                print_table(
                    relay_rows,
                    0.0,
                    f"Relay variants (forwarding to {upstream_variant} /empty on the load "
                    "generator's CPU): cpu = the relay's alone",
                )
        check_results: dict[str, dict[str, str]] = {}
        if args.checks or args.checks_only:
            for variant in variants:
                if variant in RELAYS:
                    continue
                with serve(
                    variant,
                    tmp,
                    cpus=server_cpus,
                    burn_iterations=iterations,
                    timeout_s=3,
                    grpc=grpc_ok,
                ) as served:
                    check_results[variant] = checks(served, cap_s=8)
            names = list(next(iter(check_results.values()), {}))
            print(
                "\nLimit checks (64 KiB body limit and 3 s timeouts set where the library or the "
                "app can; 'closed' = the server closed the connection; cap 8 s)"
            )
            for name in names:
                print(f"  {name}:")
                for variant, result in check_results.items():
                    print(f"    {variant:<16}{result[name]}")
    print(f"\nload average at the end {loadavg()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "burn_s": burn_s,
                    "runs": [
                        {
                            "variant": r.variant,
                            "path": r.path,
                            "conns": r.conns,
                            "requests": r.requests,
                            "wall_s": r.wall_s,
                            "cpu_per_request_s": r.cpu_per_request_s,
                            "p50_s": lat(r.latencies, 50),
                            "p99_s": lat(r.latencies, 99),
                            "grpc_p50_s": lat(r.grpc_latencies, 50),
                            "grpc_p99_s": lat(r.grpc_latencies, 99),
                            "problems": r.problems,
                        }
                        for rs in runs.values()
                        for r in rs
                    ],
                    "checks": check_results,
                },
                indent=1,
            )
        )
    return 0


def _one_server(
    served: Served,
    paths: list[str],
    conns_list: list[int],
    args: argparse.Namespace,
    tmp: pathlib.Path,
    probe: GrpcProbe | None,
    runs: dict[tuple[str, str, int], list[Run]],
    rates: dict[tuple[str, str], float],
    upstream: Served | None = None,
    baselines: dict[str, list[tuple[float, float, float]]] | None = None,
) -> None:
    if probe and baselines is not None:
        baselines.setdefault(served.variant, []).append(probe.baseline(served.proc.pid))
    for path in paths:
        # Warm up (and estimate the rate, to size the runs to about --seconds each).
        warm = measure(served, path, 8, 500, tmp, None, upstream)
        rate = rates.setdefault((served.variant, path), warm.requests / warm.wall_s)
        for conns in conns_list:
            count = int(min(50_000, max(1_000, rate * args.seconds)))
            run = measure(served, path, conns, count, tmp, probe, upstream)
            runs.setdefault((served.variant, path, conns), []).append(run)
            print(
                f"  {served.variant} {path} c={conns}: {run.requests / run.wall_s:.0f}/s "
                f"{run.cpu_per_request_s * 1e6:.0f} µs/req "
                f"p99 {lat(run.latencies, 99) * 1e3:.2f} ms"
                + (f" grpc p99 {lat(run.grpc_latencies, 99) * 1e3:.2f} ms" if probe else "")
                + (f" PROBLEMS {run.problems}" if run.problems else ""),
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())

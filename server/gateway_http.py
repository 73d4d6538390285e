"""The Oblivious HTTP gateway's listener: HTTP/1.1 with aiohttp (ADR 12), beside the gRPC
server in the same process.

Routes: ``POST /`` (``staycheck.client.oblivious.GATEWAY_PATH``) of ``message/ohttp-req``,
answered by :class:`staycheck.server.gateway.ObliviousGateway`; ``GET
/.well-known/ohttp-gateway``, the key configurations. Anything else is 404, another method
405, a body over the encapsulation limit 413 (aiohttp's ``client_max_size``, before it is
read whole).

aiohttp runs its event loop (the standard asyncio loop) on a thread of its own, and each
request's work (HPKE, matching, signing) runs inline on that loop. Chosen by measurement
(``bench/http_servers.py``, ADR 12): of the libraries and shapes tried, only this one left
the gRPC handlers' p99 at its idle level under 32 keep-alive connections (a thread per
connection or a pool of threads for the work competes for the GIL and took the gRPC p99
from about 5 to 26-78 ms; uvloop tripled it), at about 90 µs of CPU per request of its
own. No access log: an address (the relay's, by design) beside a time is all such a log
would hold, and it is not needed. Bodies are read with a deadline (408), larger ones
refused before they are read (413); idle keep-alive connections close after 75 s. aiohttp
has no deadline for reading the request headers: bind the listener where only the relay
reaches it (docs/deploy.md).

TLS: with the server's certificate (``tls_cert_path``/``tls_key_path``) the listener
speaks HTTPS, as a relay should reach it (RFC 9458 Section 6.3).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import ssl
import threading

from aiohttp import web
from staycheck.client.oblivious import GATEWAY_PATH, KEYS_PATH
from staycheck.client.ohttp import MAX_ENCAPSULATED_BYTES
from staycheck.geo.errors import ConfigurationError
from staycheck.server.gateway import Answer, ObliviousGateway

log = logging.getLogger("staycheck.gateway")
BODY_TIMEOUT_S = 10.0
"""Longest a request body may take to arrive, seconds."""


class GatewayListener:
    """``gateway`` served on ``listen`` (HOST:PORT; port 0 picks one) until :meth:`stop`."""

    def __init__(
        self,
        gateway: ObliviousGateway,
        listen: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        max_body: int = MAX_ENCAPSULATED_BYTES,
    ) -> None:
        """``reuse_port``: the workers of ``--workers`` share the port (SO_REUSEPORT);
        ``max_body``: the largest encapsulated request read."""
        self._gateway = gateway
        self._listen = listen
        self._ssl = ssl_context
        self._reuse_port = reuse_port
        self._max_body = max_body
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ohttp-loop", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve; returns the port."""
        host, _, port = self._listen.rpartition(":")
        try:
            sock = socket.create_server((host.strip("[]"), int(port)), reuse_port=self._reuse_port)
        except OSError as e:
            raise ConfigurationError(
                f"ohttp_listen: cannot bind {self._listen} ({e.strerror})"
            ) from e
        self.port = int(sock.getsockname()[1])
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post(GATEWAY_PATH, self._post)
        app.router.add_get(KEYS_PATH, self._keys)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=75,
            lingering_time=1.0,  # not aiohttp's 10 s of reading a refused body
            shutdown_timeout=5,
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl)
        self._loop.run_until_complete(site.start())
        self._thread.start()
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in progress finish within ``grace`` seconds."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop)
            try:
                future.result(timeout=grace + 1)
            except (concurrent.futures.TimeoutError, RuntimeError):
                log.warning("gateway: requests still in progress at stop")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=grace + 1)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
        except TimeoutError:
            return web.Response(
                status=408, text="request body: too slow\n", headers={"Connection": "close"}
            )
        return _response(self._gateway.handle(request.content_type, body))

    async def _keys(self, request: web.Request) -> web.Response:
        return _response(self._gateway.key_configs())


def _response(answer: Answer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body)
    response.content_type = answer.content_type
    for name, value in answer.headers:
        response.headers[name] = value
    return response

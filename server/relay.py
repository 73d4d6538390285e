"""An Oblivious HTTP relay (RFC 9458 Section 6.2), for tests, the demo and trying it out.

``staycheck relay --listen HOST:PORT --gateway URL``: every ``POST /`` of
``message/ohttp-req`` is forwarded unchanged to the gateway over one pool of keep-alive
connections, and the gateway's answer comes back unchanged. It adds nothing (no
``Forwarded``, ``Via`` or ``X-Forwarded-For``: the gateway must not learn the client's
address), passes on no header of the client's but the content type, keeps nothing (no
log line per request, no file, no cache), and refuses anything else (404, 405, 413 over
the encapsulation limit, 415 for another content type).

In production the relay is run by an operator independent of the gateway's, so that no
single party sees both who asked and what (docs/deploy.md): the relay sees the client's
address and ciphertext, the gateway the request and the relay's address. This one shows
the protocol end to end; it is not meant to stand in for such an operator.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading

import aiohttp
from aiohttp import web
from staycheck.client.oblivious import GATEWAY_PATH
from staycheck.client.ohttp import MAX_ENCAPSULATED_BYTES, REQUEST_MEDIA_TYPE, RESPONSE_MEDIA_TYPE

TIMEOUT_S = 15.0
"""Longest a forwarded request may take, body to answer, seconds."""
_PASSED_BACK = ("Content-Type", "Cache-Control")


class Relay:
    """The relay's aiohttp application, forwarding to ``gateway_url``."""

    def __init__(self, gateway_url: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        if not gateway_url.startswith(("http://", "https://")):
            raise ValueError("gateway: must be an http(s) URL")
        self._gateway = gateway_url
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_ENCAPSULATED_BYTES)
        app.router.add_post(GATEWAY_PATH, self._forward)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        if request.content_type != REQUEST_MEDIA_TYPE:
            return web.Response(status=415, text=f"content type must be {REQUEST_MEDIA_TYPE}\n")
        try:
            body = await asyncio.wait_for(request.read(), TIMEOUT_S)
        except TimeoutError:
            return web.Response(status=408, text="request body: too slow\n")
        assert self._session is not None
        try:
            async with self._session.post(
                self._gateway,
                data=body,
                headers={"Content-Type": REQUEST_MEDIA_TYPE, "Accept": RESPONSE_MEDIA_TYPE},
            ) as answer:
                data = await answer.content.read(MAX_ENCAPSULATED_BYTES + 1)
                if len(data) > MAX_ENCAPSULATED_BYTES:
                    return web.Response(status=502, text="gateway: answer too large\n")
                headers = {k: answer.headers[k] for k in _PASSED_BACK if k in answer.headers}
                return web.Response(status=answer.status, body=data, headers=headers)
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, text="gateway: cannot reach it\n")


async def serve(
    listen: str, gateway_url: str, *, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start the relay on ``listen`` (HOST:PORT, port 0 picks one); the runner (``cleanup()``
    stops it) and the port."""
    host, _, port = listen.rpartition(":")
    sock = socket.create_server((host.strip("[]"), int(port)))
    runner = web.AppRunner(
        Relay(gateway_url, ssl_context=ssl_context).app(), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


class RelayInThread:
    """A relay on an event loop of its own thread, for a process that runs other things (the
    demo): ``with RelayInThread(listen, gateway_url) as port: ...``."""

    def __init__(
        self, listen: str, gateway_url: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._listen, self._gateway, self._ssl = listen, gateway_url, ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> int:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            serve(self._listen, self._gateway, ssl_context=self._ssl), self._loop
        )
        self._runner, port = started.result(timeout=10)
        return port

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

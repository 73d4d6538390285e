"""A cap on open bidirectional streams.

The sync gRPC server runs each call on a thread of its pool, and a bidirectional stream
(reflection, the partner batch streams) holds its thread for as long as it stays open,
idle or not. Without a cap, a handful of idle streams would take every thread and starve
the unary calls. :class:`StreamLimiter` lets at most ``limit`` such streams run at once
and refuses more with RESOURCE_EXHAUSTED ("try again later").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from staycheck.server.interceptors import HandlerRewriter


class StreamLimiter(HandlerRewriter):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self._slots = threading.BoundedSemaphore(limit)

    def rewrite(self, method: str, handler: Any) -> Any:
        if handler.stream_stream is None:
            return handler
        return handler._replace(stream_stream=self._limited(handler.stream_stream))

    def _limited(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            if not self._slots.acquire(blocking=False):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "too many open streams; try again later"
                )
            try:
                yield from behavior(requests, context)
            finally:
                self._slots.release()

        return stream

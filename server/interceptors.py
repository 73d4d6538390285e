"""The shape all our server interceptors share: rewrite a method's handler once.

gRPC asks interceptors for a handler on every call. Ours only wrap a handler's behaviour or
replace its deserializer, which depends on the method alone, so :class:`HandlerRewriter`
calls :meth:`HandlerRewriter.rewrite` the first time it sees a method's handler and hands
out the same rewritten handler afterwards: no wrapping work per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


class HandlerRewriter(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, Any]] = {}  # method -> (handler, rewritten)

    def rewrite(self, method: str, handler: Any) -> Any:
        """The handler to use for ``method`` (a full path, ``/package.Service/Method``)."""
        raise NotImplementedError

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: Any
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = str(details.method)
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        rewritten = self.rewrite(method, handler)
        self._cache[method] = (handler, rewritten)
        return rewritten

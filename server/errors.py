"""The one place where StayCheck errors become gRPC status codes.

======================== ===================== ==========================================
exception                code                  details
======================== ===================== ==========================================
InvalidInputError        INVALID_ARGUMENT      "stays[3].departure: must be after arrival"
SignedDataError          INVALID_ARGUMENT      the fixed reason text
UnavailableError         FAILED_PRECONDITION   the fixed reason text
ConfigurationError       INTERNAL              "internal error"
any other exception      INTERNAL              "internal error"
======================== ===================== ==========================================

Messages of our own errors hold field paths and fixed texts only, never a caller's values.
Unexpected exceptions are logged by type and place only: their messages may quote a value.

Bytes that do not parse as the method's request message are the caller's fault too:
:class:`DecodeGuard` hands them to our handlers as :data:`UNDECODABLE`, which they refuse
with INVALID_ARGUMENT ``request: not a valid protobuf message for this method``, instead of
grpcio's own INTERNAL answer and ERROR log line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from staycheck.geo.errors import (
    ConfigurationError,
    Error,
    InvalidInputError,
    SignedDataError,
    UnavailableError,
)
from staycheck.server.interceptors import HandlerRewriter

log = logging.getLogger("staycheck.rpc")

_CODES: list[tuple[type[Error], grpc.StatusCode]] = [
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (SignedDataError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnavailableError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConfigurationError, grpc.StatusCode.INTERNAL),
]


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and safe details for ``error``."""
    if isinstance(error, Error):
        for cls, code in _CODES:
            if isinstance(error, cls):
                details = "internal error" if code is grpc.StatusCode.INTERNAL else str(error)
                return code, details
    return grpc.StatusCode.INTERNAL, "internal error"


def refusal(error: BaseException, what: str) -> tuple[grpc.StatusCode, str]:
    """:func:`status_for` of ``error``; an unexpected one (INTERNAL) is logged first, as
    ``what`` failed, by type and place only."""
    code, details = status_for(error)
    if code is grpc.StatusCode.INTERNAL:
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        log.error("%s failed: %s at %s", what, type(error).__name__, where)
    return code, details


class _Undecodable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE: Any = _Undecodable()
"""What a handler of ours receives instead of a request that did not parse."""
UNDECODABLE_ERROR = InvalidInputError("request", "not a valid protobuf message for this method")
OUR_SERVICES_PREFIX = "/staycheck.v1."


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError and friends: the caller's bytes
            return UNDECODABLE

    return deserialize


class DecodeGuard(HandlerRewriter):
    """Make undecodable requests to our services reach our handlers as UNDECODABLE."""

    def rewrite(self, method: str, handler: Any) -> Any:
        if handler.request_deserializer is None or not method.startswith(OUR_SERVICES_PREFIX):
            return handler
        return handler._replace(request_deserializer=_lenient(handler.request_deserializer))


F = TypeVar("F", bound=Callable[..., Any])


def grpc_errors(method: F) -> F:
    """Wrap a unary servicer method: map every exception through :func:`status_for`."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if request is UNDECODABLE:
                raise UNDECODABLE_ERROR
            return method(self, request, context)
        except Exception as e:
            context.abort(*refusal(e, method.__name__))

    return wrapper  # type: ignore[return-value]

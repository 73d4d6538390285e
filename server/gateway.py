"""The Oblivious HTTP gateway (RFC 9458): what it answers, whatever serves the HTTP.

:class:`ObliviousGateway` takes the body of a ``POST`` of ``message/ohttp-req`` and
returns the :class:`Answer` to send:

- the encapsulation cannot be opened (a key id we do not hold, a KEM, KDF or AEAD we do
  not offer, a malformed or altered message): an unencrypted 400, with the
  ``application/problem+json`` ``ohttp-key`` problem for a key or suite (RFC 9458
  Sections 5.2 and 5.3) so the client fetches the configuration again; the relay sees that
  much and no more;
- otherwise an encrypted ``message/ohttp-res`` (always HTTP 200 outside) holding a Binary
  HTTP response: 200 with the serialized ``SubmitItineraryResponse``, or the status
  (``staycheck.client.oblivious.HTTP_STATUS``) with ``grpc-status`` and
  ``grpc-message`` exactly as a gRPC call would get them (``status_for``: the same field
  and rule, never a value).

The inner request must be ``POST`` of ``staycheck.client.oblivious.SUBMIT_PATH`` with a
protobuf body of at most ``max_message_bytes``; it goes through the very
:class:`~staycheck.server.service.VerdictCore` the gRPC service uses (same matching, same
signing, same metrics of verdicts).

Replays: a replayed Encapsulated Request is answered again, with a fresh response nonce
(so the two answers share no byte an observer could match) and a fresh verdict.
SubmitItinerary changes no state and its answer is only ever useful to the one who sealed
the request, so refusing replays would need a replay cache of every request seen: state
the server promises not to keep, for no protection (RFC 9458 Section 6.5 leaves this to
the resource).

Nothing here keeps, logs or counts any byte of a request: errors are logged by type only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from staycheck.client.bhttp import BinaryHttpError, Request, Response
from staycheck.client.oblivious import HTTP_STATUS, PROTOBUF, SUBMIT_PATH
from staycheck.client.ohttp import (
    KEYS_MEDIA_TYPE,
    MAX_ENCAPSULATED_BYTES,
    REQUEST_MEDIA_TYPE,
    RESPONSE_MEDIA_TYPE,
    GatewayKeys,
    ObliviousError,
    Reason,
    ResponseContext,
)
from staycheck.server.binding_input import read_binding
from staycheck.server.errors import status_for
from staycheck.server.service import VerdictCore
from staycheck.v1 import verification_pb2 as pb

log = logging.getLogger("staycheck.gateway")
PROBLEM_OHTTP_KEY = "https://iana.org/assignments/http-problem-types#ohttp-key"
KEYS_MAX_AGE_S = 86400
"""How long a client may keep the key configuration (``Cache-Control: max-age``); a
retired key opens requests for longer (``gateway_keys.DEFAULT_GRACE_S``)."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type, body, and other headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class ObliviousGateway:
    """Answers Encapsulated Requests for ``SubmitItinerary`` with ``core``; ``keys()``
    gives the gateway keys in use (they change on a rotation)."""

    def __init__(
        self,
        core: VerdictCore,
        keys: Callable[[], GatewayKeys],
        *,
        max_message_bytes: int,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        """``on_answer`` gets a fixed outcome name per request (``ok``, a gRPC code name,
        or ``refused``), for metrics."""
        self._core = core
        self._keys = keys
        self._max = max_message_bytes
        self._on_answer = on_answer or (lambda outcome: None)

    def key_configs(self) -> Answer:
        """``GET /.well-known/ohttp-gateway``: the published key configurations."""
        return Answer(
            200,
            KEYS_MEDIA_TYPE,
            self._keys().encode_configs(),
            (("Cache-Control", f"max-age={KEYS_MAX_AGE_S}"),),
        )

    def handle(self, content_type: str, body: bytes) -> Answer:
        """The answer to one ``POST`` of ``body`` with ``content_type``."""
        if content_type != REQUEST_MEDIA_TYPE:
            self._on_answer("refused")
            return Answer(
                415, "text/plain", f"content type must be {REQUEST_MEDIA_TYPE}\n".encode()
            )
        try:
            inner, context = self._keys().decapsulate_request(body, max_size=MAX_ENCAPSULATED_BYTES)
        except ObliviousError as e:
            self._on_answer("refused")
            return _refusal(e)
        response = self._answer(inner)
        return Answer(200, RESPONSE_MEDIA_TYPE, _seal(context, response))

    def _answer(self, inner: bytes) -> Response:
        try:
            request = Request.decode(inner, max_size=self._max + 4096)
        except BinaryHttpError as e:
            return self._error(grpc.StatusCode.INVALID_ARGUMENT, f"binary http: {e}")
        if request.path != SUBMIT_PATH:
            return self._error(grpc.StatusCode.UNIMPLEMENTED, "path: only SubmitItinerary")
        if request.method != "POST":
            return self._error(grpc.StatusCode.UNIMPLEMENTED, "method: must be POST")
        if len(request.content) > self._max:
            return self._error(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request: larger than {self._max} bytes"
            )
        try:
            message = pb.SubmitItineraryRequest.FromString(request.content)
        except DecodeError:
            return self._error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "request: not a valid protobuf message for this method",
            )
        try:
            answer = self._core.submit(message.itinerary, *read_binding(message))
        except Exception as e:
            code, details = status_for(e)
            if code is grpc.StatusCode.INTERNAL:
                log.error("oblivious submit failed: %s", type(e).__name__)
            return self._error(code, details)
        self._on_answer("ok")
        return Response(200, (("content-type", PROTOBUF.encode()),), answer.SerializeToString())

    def _error(self, code: grpc.StatusCode, details: str) -> Response:
        self._on_answer(code.name)
        return Response(
            HTTP_STATUS.get(code, 500),
            (
                ("content-type", b"text/plain"),
                ("grpc-status", str(code.value[0]).encode()),
                ("grpc-message", details.encode("utf-8")),
            ),
            details.encode("utf-8") + b"\n",
        )


def _seal(context: ResponseContext, response: Response) -> bytes:
    return context.encapsulate_response(response.encode())


def _refusal(error: ObliviousError) -> Answer:
    """RFC 9458 Section 5.2: an error before the encapsulation is removed is an
    unencrypted 4xx; a key or suite the client should fetch again is the ``ohttp-key``
    problem (Section 5.3)."""
    if error.reason in (Reason.UNKNOWN_KEY, Reason.UNSUPPORTED_SUITE):
        problem = {"type": PROBLEM_OHTTP_KEY, "title": "key identifier unknown"}
        return Answer(
            400,
            "application/problem+json",
            json.dumps(problem).encode(),
            (("Cache-Control", "no-store"),),
        )
    return Answer(400, "text/plain", f"{error.field}: {error.rule}\n".encode())

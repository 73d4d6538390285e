"""The ``staycheck.v1.PartnerVerification`` servicer (partner listener only).

``VerifyVerdict`` gives the offline verifier's result for a token of any issuer in the
trust store (our own keys always included, rotations too). The streaming calls take one or
more items per message (at most ``partner_max_items_per_message``, checked before any work
by the partner interceptor) and answer with one result per item, in order, with the item's
position in the stream, sent back as they are computed; a bad item gets its own error and
the stream goes on. Itineraries are matched a chunk at a time (one index query for up to
:data:`RESULTS_PER_RESPONSE` items), each answered as if it had come alone.
Memory stays bounded: each handler pulls the next request only after its answer has been
handed to gRPC, whose HTTP/2 flow control then holds the partner back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.errors import Error, InvalidInputError, SignedDataError
from staycheck.server.errors import UNDECODABLE, UNDECODABLE_ERROR, grpc_errors, status_for
from staycheck.server.service import Refusal, VerdictCore
from staycheck.trust.binding import BINDING_LENGTH
from staycheck.trust.truststore import TrustStore
from staycheck.trust.verifier import (
    NO_BINDING_CHECK,
    Identity,
    SubjectBinding,
    reason,
    verify_token,
)
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb

Request = TypeVar("Request")
Item = TypeVar("Item")
Result = TypeVar("Result")
Response = TypeVar("Response")
RESULTS_PER_RESPONSE = 100
"""Results are sent back in responses of this many, as they are computed; the items of a
submission stream are matched in chunks of this many (one index query per chunk)."""


class PartnerVerificationServicer(ppb_grpc.PartnerVerificationServicer):
    def __init__(self, core: VerdictCore, trust: Callable[[], TrustStore]) -> None:
        self._core = core
        self._trust = trust

    def _verify(self, request: ppb.VerifyVerdictRequest) -> ppb.VerifyVerdictResponse:
        binding = request.subject_binding
        if binding and len(binding) != BINDING_LENGTH:
            raise InvalidInputError("subject_binding", f"must be empty or {BINDING_LENGTH} bytes")
        # The partner API's explicit choice: an empty binding means "identity not checked".
        identity: Identity = SubjectBinding(binding) if binding else NO_BINDING_CHECK
        try:
            verdict = verify_token(
                request.token,
                self._trust(),
                now=self._core.clock(),
                identity=identity,
                min_riskset_version=request.min_riskset_version or None,
            )
        except SignedDataError as e:
            return ppb.VerifyVerdictResponse(valid=False, reason=reason(e))
        return ppb.VerifyVerdictResponse(
            valid=True,
            status=pb.VerdictStatus.ValueType(verdict.status),
            issuer=verdict.issuer,
            issued_at=Timestamp(seconds=verdict.issued_at),
            expires_at=Timestamp(seconds=verdict.expires_at),
            riskset_version=verdict.riskset_version,
        )

    @grpc_errors
    def VerifyVerdict(
        self, request: ppb.VerifyVerdictRequest, context: grpc.ServicerContext
    ) -> ppb.VerifyVerdictResponse:
        return self._verify(request)

    def VerifyVerdicts(
        self, requests: Iterator[ppb.VerifyVerdictsRequest], context: grpc.ServicerContext
    ) -> Iterator[ppb.VerifyVerdictsResponse]:
        """A bad item (or an undecodable message, as one item) is answered ``valid=False``
        with the error's details as the reason."""

        def verified(index: int, item: ppb.VerifyVerdictRequest) -> ppb.VerifyVerdictsResult:
            try:
                result = self._verify(item)
            except Error as e:
                result = ppb.VerifyVerdictResponse(valid=False, reason=status_for(e)[1])
            return ppb.VerifyVerdictsResult(index=index, result=result)

        def refused(index: int, code: grpc.StatusCode, details: str) -> ppb.VerifyVerdictsResult:
            result = ppb.VerifyVerdictResponse(valid=False, reason=details)
            return ppb.VerifyVerdictsResult(index=index, result=result)

        return _per_item(
            requests,
            items=lambda request: request.verdicts,
            answer=lambda first, chunk: [verified(first + i, v) for i, v in enumerate(chunk)],
            refuse=refused,
            respond=lambda results: ppb.VerifyVerdictsResponse(results=results),
        )

    def SubmitItineraries(
        self, requests: Iterator[ppb.SubmitItinerariesRequest], context: grpc.ServicerContext
    ) -> Iterator[ppb.SubmitItinerariesResponse]:
        """An undecodable message counts as one item, answered with its error. The items of a
        chunk are matched together (``VerdictCore.submit_many``); each gets its own answer."""

        def result(
            index: int, outcome: pb.SubmitItineraryResponse | Refusal
        ) -> ppb.ItineraryResult:
            if isinstance(outcome, tuple):
                return refused(index, *outcome)
            return ppb.ItineraryResult(index=index, verdict=outcome)

        def refused(index: int, code: grpc.StatusCode, details: str) -> ppb.ItineraryResult:
            error = ppb.ItemError(code=code.name, message=details)
            return ppb.ItineraryResult(index=index, error=error)

        def submitted(first: int, chunk: Sequence[ppb.ItineraryItem]) -> list[ppb.ItineraryResult]:
            outcomes = self._core.submit_many(chunk)
            return [result(first + i, outcome) for i, outcome in enumerate(outcomes)]

        return _per_item(
            requests,
            items=lambda request: request.items,
            answer=submitted,
            refuse=refused,
            respond=lambda results: ppb.SubmitItinerariesResponse(results=results),
        )


def _per_item(
    requests: Iterator[Request],
    *,
    items: Callable[[Request], Sequence[Item]],
    answer: Callable[[int, Sequence[Item]], list[Result]],
    refuse: Callable[[int, grpc.StatusCode, str], Result],
    respond: Callable[[list[Result]], Response],
) -> Iterator[Response]:
    """The partner streams' loop: for each request message, one result per item, in order,
    in responses of at most :data:`RESULTS_PER_RESPONSE` results, each sent once computed
    (a message with no item gets one empty response). ``answer(first, chunk)`` makes the
    results of up to that many consecutive items, ``first`` being the first one's index
    across the whole stream; it answers each item, errors included, itself. An undecodable
    message counts as one item, given ``refuse``'s result for :data:`UNDECODABLE_ERROR`.
    The next message is pulled only once the response to the previous one has been handed
    over (bounded memory, see the module docstring).
    """
    index = 0
    for request in requests:
        if request is UNDECODABLE:
            yield respond([refuse(index, *status_for(UNDECODABLE_ERROR))])
            index += 1
            continue
        batch = items(request)
        if not batch:
            yield respond([])
            continue
        for lo in range(0, len(batch), RESULTS_PER_RESPONSE):
            chunk = batch[lo : lo + RESULTS_PER_RESPONSE]
            yield respond(answer(index, chunk))
            index += len(chunk)

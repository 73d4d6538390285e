"""The ``staycheck.v1.PartnerVerification`` servicer (partner listener only).

``VerifyVerdict`` gives the offline verifier's result for a token of any issuer in the
trust store (our own keys always included, rotations too). The streaming calls take one or
more items per message (at most ``partner_max_items_per_message``, checked before any work
by the partner interceptor) and answer with one result per item, in order, with the item's
position in the stream, sent back as they are computed; a bad item gets its own error and
the stream goes on.
Memory stays bounded: each handler pulls the next request only after its answer has been
handed to gRPC, whose HTTP/2 flow control then holds the partner back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.errors import Error, InvalidInputError, SignedDataError
from staycheck.server.binding_input import read_binding
from staycheck.server.errors import UNDECODABLE, UNDECODABLE_ERROR, grpc_errors, status_for
from staycheck.server.service import VerdictCore
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
"""Results are sent back in responses of this many, as they are computed."""


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

        def refused(index: int, code: grpc.StatusCode, details: str) -> ppb.VerifyVerdictsResult:
            result = ppb.VerifyVerdictResponse(valid=False, reason=details)
            return ppb.VerifyVerdictsResult(index=index, result=result)

        return _per_item(
            requests,
            items=lambda request: request.verdicts,
            answer=lambda i, item: ppb.VerifyVerdictsResult(index=i, result=self._verify(item)),
            refuse=refused,
            catch=Error,
            respond=lambda results: ppb.VerifyVerdictsResponse(results=results),
        )

    def SubmitItineraries(
        self, requests: Iterator[ppb.SubmitItinerariesRequest], context: grpc.ServicerContext
    ) -> Iterator[ppb.SubmitItinerariesResponse]:
        """An undecodable message counts as one item, answered with its error."""

        def submitted(index: int, item: ppb.ItineraryItem) -> ppb.ItineraryResult:
            verdict = self._core.submit(item.itinerary, *read_binding(item))
            return ppb.ItineraryResult(index=index, verdict=verdict)

        def refused(index: int, code: grpc.StatusCode, details: str) -> ppb.ItineraryResult:
            error = ppb.ItemError(code=code.name, message=details)
            return ppb.ItineraryResult(index=index, error=error)

        return _per_item(
            requests,
            items=lambda request: request.items,
            answer=submitted,
            refuse=refused,
            catch=Exception,  # every exception: each item its own error
            respond=lambda results: ppb.SubmitItinerariesResponse(results=results),
        )


def _per_item(
    requests: Iterator[Request],
    *,
    items: Callable[[Request], Iterable[Item]],
    answer: Callable[[int, Item], Result],
    refuse: Callable[[int, grpc.StatusCode, str], Result],
    catch: type[Exception],
    respond: Callable[[list[Result]], Response],
) -> Iterator[Response]:
    """The partner streams' loop: for each request message, one result per item, in order,
    sent as they are computed in responses of at most :data:`RESULTS_PER_RESPONSE` results
    (a message with no item gets one empty response). The index passed to ``answer`` and
    ``refuse`` counts items across the whole stream; an undecodable message counts as one
    item that fails with
    :data:`UNDECODABLE_ERROR`. ``answer`` makes an item's result; an exception of type
    ``catch`` that it raises becomes ``refuse``'s result for that item, given the code and
    details of :func:`status_for` (which never echo values), and the stream goes on; any
    other exception ends the stream. The next message is pulled only once the response to
    the previous one has been handed over (bounded memory, see the module docstring).
    """
    index = 0
    for request in requests:
        batch: Iterable[Item | None] = [None] if request is UNDECODABLE else items(request)
        results: list[Result] = []
        answered = False
        for item in batch:
            try:
                if item is None:
                    raise UNDECODABLE_ERROR
                result = answer(index, item)
            except catch as e:
                result = refuse(index, *status_for(e))
            results.append(result)
            index += 1
            if len(results) == RESULTS_PER_RESPONSE:
                yield respond(results)
                results, answered = [], True
        if results or not answered:
            yield respond(results)

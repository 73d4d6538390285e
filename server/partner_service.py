"""The ``staycheck.v1.PartnerVerification`` servicer (partner listener only).

``VerifyVerdict`` gives the offline verifier's result for a token of any issuer in the
trust store (our own keys always included, rotations too). The streaming calls take one or
more items per message and answer each message with one result per item, in order, with
the item's position in the stream; a bad item gets its own error and the stream goes on.
Memory stays bounded: each handler pulls the next request only after its answer has been
handed to gRPC, whose HTTP/2 flow control then holds the partner back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.errors import Error, InvalidInputError, SignedDataError
from staycheck.server.errors import UNDECODABLE, UNDECODABLE_ERROR, grpc_errors, status_for
from staycheck.server.service import VerdictCore
from staycheck.trust.truststore import TrustStore
from staycheck.trust.verdict import BINDING_LENGTH
from staycheck.trust.verifier import reason, verify_token
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb


class PartnerVerificationServicer(ppb_grpc.PartnerVerificationServicer):
    def __init__(self, core: VerdictCore, trust: Callable[[], TrustStore]) -> None:
        self._core = core
        self._trust = trust

    def _verify(self, request: ppb.VerifyVerdictRequest) -> ppb.VerifyVerdictResponse:
        binding = request.subject_binding
        if binding and len(binding) != BINDING_LENGTH:
            raise InvalidInputError("subject_binding", f"must be empty or {BINDING_LENGTH} bytes")
        try:
            verdict = verify_token(
                request.token,
                self._trust(),
                now=self._core.clock(),
                subject_binding=binding or None,
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
        index = 0
        for request in requests:
            items = [None] if request is UNDECODABLE else request.verdicts
            results = []
            for item in items:
                try:
                    if item is None:
                        raise UNDECODABLE_ERROR
                    result = self._verify(item)
                except Error as e:
                    result = ppb.VerifyVerdictResponse(valid=False, reason=status_for(e)[1])
                results.append(ppb.VerifyVerdictsResult(index=index, result=result))
                index += 1
            yield ppb.VerifyVerdictsResponse(results=results)

    def SubmitItineraries(
        self, requests: Iterator[ppb.SubmitItinerariesRequest], context: grpc.ServicerContext
    ) -> Iterator[ppb.SubmitItinerariesResponse]:
        """An undecodable message counts as one item, answered with its error."""
        index = 0
        for request in requests:
            items = [None] if request is UNDECODABLE else request.items
            results = []
            for item in items:
                try:
                    if item is None:
                        raise UNDECODABLE_ERROR
                    verdict = self._core.submit(item.itinerary, item.subject_binding)
                    results.append(ppb.ItineraryResult(index=index, verdict=verdict))
                except Exception as e:  # each item's own error; status_for never echoes values
                    code, details = status_for(e)
                    error = ppb.ItemError(code=code.name, message=details)
                    results.append(ppb.ItineraryResult(index=index, error=error))
                index += 1
            yield ppb.SubmitItinerariesResponse(results=results)

"""The gRPC servicers: they only translate.

:class:`VerdictCore` holds what answering needs (bundle manager, signer, issuer, limits,
clock) and turns one itinerary message into one signed response, raising our own errors;
``ItineraryVerificationServicer`` (public) and ``staycheck.server.partner_service`` (partners) both
use it. Nothing of a request is kept, logged or written: the stays live in local variables for the
length of one call. How the match is computed stays behind ``staycheck.geo.matching.evaluate``, so a
private-set-intersection mode can later produce the same verdict through the same signer.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.errors import InvalidInputError
from staycheck.geo.itinerary import ItineraryLimits, Status, Stay, validate
from staycheck.geo.matching import evaluate
from staycheck.server.bundles import BundleManager
from staycheck.server.errors import grpc_errors
from staycheck.server.keystore import VerdictKeyStore
from staycheck.trust.verdict import BINDING_LENGTH, MAX_TTL_S, TokenSigner, issue_verdict
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc


def stays_from_proto(itinerary: pb.Itinerary, *, limits: ItineraryLimits) -> list[Stay]:
    """Domain stays from the message; required fields checked, sub-second parts dropped."""
    if len(itinerary.stays) > limits.max_stays:
        raise InvalidInputError("stays", f"at most {limits.max_stays} stays per itinerary")
    stays = []
    for i, s in enumerate(itinerary.stays):
        if not s.HasField("arrival"):
            raise InvalidInputError(f"stays[{i}].arrival", "required")
        if not s.HasField("departure"):
            raise InvalidInputError(f"stays[{i}].departure", "required")
        location = (s.location.latitude, s.location.longitude) if s.HasField("location") else None
        stays.append(Stay(s.city_code, s.arrival.seconds, s.departure.seconds, location))
    return stays


class VerdictCore:
    """Itinerary message in, signed verdict response out."""

    def __init__(
        self,
        *,
        bundles: BundleManager,
        keys: VerdictKeyStore,
        issuer: str,
        clock: Callable[[], int],
        limits: ItineraryLimits,
        verdict_ttl_s: int = MAX_TTL_S,
        on_verdict: Callable[[Status], None] | None = None,
    ) -> None:
        self.bundles = bundles
        self._on_verdict = on_verdict
        self.keys = keys
        self.issuer = issuer
        self.clock = clock
        self._limits = limits
        self._ttl_s = verdict_ttl_s
        self._signer: TokenSigner = keys.token_signer()

    def refresh_signer(self) -> None:
        """Sign with the key store's active key from now on (after a rotation)."""
        self._signer = self.keys.token_signer()

    def submit(self, itinerary: pb.Itinerary, binding: bytes) -> pb.SubmitItineraryResponse:
        now = self.clock()
        bundle = self.bundles.bundle_for(now)
        if binding and len(binding) != BINDING_LENGTH:
            raise InvalidInputError("subject_binding", f"must be empty or {BINDING_LENGTH} bytes")
        stays = stays_from_proto(itinerary, limits=self._limits)
        validate(stays, now=now, limits=self._limits)
        status = evaluate(stays, bundle, now=now)
        if self._on_verdict is not None:
            self._on_verdict(status)
        verdict = issue_verdict(
            status,
            now=now,
            issuer=self.issuer,
            riskset_version=bundle.version,
            bundle_expires_at=bundle.expires_at,
            binding=binding,
            ttl_s=self._ttl_s,
        )
        return pb.SubmitItineraryResponse(
            status=pb.VerdictStatus.ValueType(status),
            token=self._signer.sign(verdict),
            issued_at=Timestamp(seconds=verdict.issued_at),
            expires_at=Timestamp(seconds=verdict.expires_at),
            riskset_version=verdict.riskset_version,
        )


class ItineraryVerificationServicer(pb_grpc.ItineraryVerificationServicer):
    def __init__(self, core: VerdictCore) -> None:
        self._core = core

    @grpc_errors
    def SubmitItinerary(
        self, request: pb.SubmitItineraryRequest, context: grpc.ServicerContext
    ) -> pb.SubmitItineraryResponse:
        return self._core.submit(request.itinerary, request.subject_binding)

    @grpc_errors
    def GetVerdictKeys(
        self, request: pb.GetVerdictKeysRequest, context: grpc.ServicerContext
    ) -> pb.GetVerdictKeysResponse:
        keys = self._core.keys.key_set(now=self._core.clock())
        return pb.GetVerdictKeysResponse(issuer=self._core.issuer, jwks_json=keys.to_json())

    @grpc_errors
    def GetRiskAreaStatus(
        self, request: pb.GetRiskAreaStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetRiskAreaStatusResponse:
        bundles = self._core.bundles
        bundle = bundles.current
        if bundle is None:
            return pb.GetRiskAreaStatusResponse(serving=False)
        policy = bundle.policy
        return pb.GetRiskAreaStatusResponse(
            serving=bundles.serving(self._core.clock()),
            version=bundle.version,
            issued_at=Timestamp(seconds=bundle.issued_at),
            expires_at=Timestamp(seconds=bundle.expires_at),
            area_count=bundle.area_count,
            digest=bundle.digest,
            window_days=policy.window_days,
            min_stay_seconds=policy.min_stay_s,
            tolerance_m=policy.tolerance_m,
            flagged_levels=sorted(level.label for level in policy.flagged_levels),
        )

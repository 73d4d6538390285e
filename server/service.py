"""The gRPC servicers: they only translate.

:class:`VerdictCore` holds what answering needs (the risk areas in use, signer, issuer, limits,
clock) and turns one itinerary message into one signed response, raising our own errors.
It signs with the key the key store names for the call's ``now``: a scheduled key switch
happens at its time, checked with one comparison per call (the store says until when its
choice holds);
``ItineraryVerificationServicer`` (public) and ``staycheck.server.partner_service`` (partners) both
use it. Nothing of a request is kept, logged or written: the stays live in local variables for the
length of one call. How the match is computed stays behind ``staycheck.geo.matching.evaluate``, so a
private-set-intersection mode can later produce the same verdict through the same signer.

A key on a PKCS#11 token can go away: signing then raises ``TokenUnavailableError`` (an
``UnavailableError``: FAILED_PRECONDITION, fail closed), :meth:`VerdictCore.signer_healthy` is
false until the token is back, and :meth:`VerdictCore.probe_signer` (the server's watcher) checks
and recovers it without a call having to come.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.errors import InvalidInputError, UnavailableError
from staycheck.geo.itinerary import ItineraryLimits, Status, Stay, validate
from staycheck.geo.matching import evaluate, evaluate_batch
from staycheck.server.binding_input import read_binding
from staycheck.server.bundles import RepositoryBundles
from staycheck.server.errors import grpc_errors, refusal
from staycheck.server.keystore import VerdictKeyStore
from staycheck.server.pkcs11 import Pkcs11Signer
from staycheck.trust.binding import BindingParameters
from staycheck.trust.keys import Signer
from staycheck.trust.verdict import MAX_TTL_S, TokenSigner, issue_verdict
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

log = logging.getLogger("staycheck.server")
_PAST, _FUTURE = -sys.maxsize - 1, sys.maxsize
_Selected = tuple[TokenSigner, str, int, int, int, Signer | None]
Refusal = tuple[grpc.StatusCode, str]
"""An item's error as :func:`staycheck.server.errors.status_for` gives it: code, details."""
_NOT_DONE: Refusal = (grpc.StatusCode.INTERNAL, "internal error")


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
        bundles: RepositoryBundles,
        keys: VerdictKeyStore,
        issuer: str,
        clock: Callable[[], int],
        limits: ItineraryLimits,
        verdict_ttl_s: int = MAX_TTL_S,
        on_verdict: Callable[[Status], None] | None = None,
        on_signer_down: Callable[[], None] | None = None,
    ) -> None:
        """``on_signer_down`` is called when signing a verdict failed because the key's
        token does not answer (the server turns health NOT_SERVING at once)."""
        self.bundles = bundles
        self._on_verdict = on_verdict
        self._on_signer_down = on_signer_down
        self.keys = keys
        self.issuer = issuer
        self.clock = clock
        self._limits = limits
        self._ttl_s = verdict_ttl_s
        # (signer, kid, from, until, generation, backend): one tuple, replaced whole, so threads
        # never mix two; replaced only by an answer from the same or a later key load, so a
        # call racing a reload cannot put back a key the reload retired (or revoked).
        self._install_lock = threading.Lock()
        self._signing = self._select(clock())

    def _select(self, now: int) -> _Selected:
        key = self.keys.signing_key(now=now)
        since = _PAST if key.valid_from is None else key.valid_from
        until = _FUTURE if key.valid_until is None else key.valid_until
        return (key.signer, key.kid, since, until, key.generation, key.backend)

    def _install(self, selected: _Selected) -> None:
        with self._install_lock:
            previous = self._signing
            if selected[4] < previous[4]:
                return
            self._signing = selected
        if selected[1] != previous[1]:
            log.info("verdict key %s signs from now on (was %s)", selected[1], previous[1])

    def refresh_signer(self) -> None:
        """Ask the key store again (after it reloaded its keys)."""
        self._install(self._select(self.clock()))

    @property
    def signing_kid(self) -> str:
        """The key the last call signed with (or the first will), hex."""
        return self._signing[1]

    def signer_at(self, now: int) -> TokenSigner:
        """The signer for ``now``; the key store is asked only when ``now`` leaves the span
        its last answer holds for (a scheduled switch, or a clock set back)."""
        return self._selected_at(now)[0]

    def _selected_at(self, now: int) -> _Selected:
        selected = self._signing
        if selected[2] <= now < selected[3]:
            return selected
        selected = self._select(now)
        self._install(selected)
        return selected

    def signer_healthy(self) -> bool:
        """False while the key that signs is on a token that does not answer."""
        backend = self._signing[5]
        return not isinstance(backend, Pkcs11Signer) or backend.healthy

    def signer_problem(self) -> str | None:
        """Why the key that signs cannot sign now, or None."""
        backend = self._signing[5]
        return backend.problem if isinstance(backend, Pkcs11Signer) else None

    def probe_signer(self) -> bool:
        """Check the key that signs now (a token key: sign a probe, or try to recover it);
        True if it can sign. For the watcher, not for calls."""
        backend = self._selected_at(self.clock())[5]
        return not isinstance(backend, Pkcs11Signer) or backend.probe()

    def submit(
        self,
        itinerary: pb.Itinerary,
        binding: bytes = b"",
        binding_params: BindingParameters | None = None,
    ) -> pb.SubmitItineraryResponse:
        """Match and sign; ``binding`` and ``binding_params`` as read and checked by
        ``staycheck.server.binding_input.read_binding``. Raises our errors."""
        now = self.clock()
        bundle = self.bundles.bundle_for(now)
        stays = stays_from_proto(itinerary, limits=self._limits)
        validate(stays, now=now, limits=self._limits)
        status = evaluate(stays, bundle, now=now)
        return self._answer(status, bundle, now, binding, binding_params)

    def submit_many(self, items: Sequence[Any]) -> list[pb.SubmitItineraryResponse | Refusal]:
        """:meth:`submit` of many items (``ItineraryItem`` or ``SubmitItineraryRequest``
        messages: an itinerary with its binding), one result each, in order: the response,
        or the item's :data:`Refusal`. The items are read and validated one by one, matched
        together (:func:`staycheck.geo.matching.evaluate_batch`: one index query for the
        lot) and signed one by one, all at one ``now`` against one risk-area set. An item's
        error is its own: should the batched match fail unexpectedly, each item is matched
        alone, so only the one that fails is refused.

        Errors become refusals at once (no exception object outlives its item's step, so
        nothing of a request is kept by a traceback).
        """
        now = self.clock()
        try:
            bundle: RiskAreaBundle | None = self.bundles.bundle_for(now)
            unavailable: Refusal | None = None
        except Exception as e:  # every item that gets this far gets this answer
            bundle, unavailable = None, refusal(e, "SubmitItineraries")
        results: list[pb.SubmitItineraryResponse | Refusal] = [_NOT_DONE] * len(items)
        accepted: list[tuple[int, list[Stay], bytes, BindingParameters | None]] = []
        for k, item in enumerate(items):
            try:  # in the order of SubmitItinerary: the binding, the areas, the stays
                binding, params = read_binding(item)
                if unavailable is not None:
                    results[k] = unavailable
                    continue
                stays = stays_from_proto(item.itinerary, limits=self._limits)
                validate(stays, now=now, limits=self._limits)
            except Exception as e:
                results[k] = refusal(e, "SubmitItineraries")
            else:
                accepted.append((k, stays, binding, params))
        if bundle is None:
            return results
        matched = self._match_all([stays for _, stays, _, _ in accepted], bundle, now)
        for (k, _, binding, params), status in zip(accepted, matched, strict=True):
            if not isinstance(status, Status):
                results[k] = status
                continue
            try:
                results[k] = self._answer(status, bundle, now, binding, params)
            except Exception as e:
                results[k] = refusal(e, "SubmitItineraries")
        return results

    def _match_all(
        self, itineraries: list[list[Stay]], bundle: RiskAreaBundle, now: int
    ) -> list[Status | Refusal]:
        try:
            return list(evaluate_batch(itineraries, bundle, now=now))
        except Exception:
            log.warning(
                "a batched match failed; matching its %d items one by one", len(itineraries)
            )
        matched: list[Status | Refusal] = []
        for stays in itineraries:
            try:
                matched.append(evaluate(stays, bundle, now=now))
            except Exception as e:
                matched.append(refusal(e, "SubmitItineraries"))
        return matched

    def _answer(
        self,
        status: Status,
        bundle: RiskAreaBundle,
        now: int,
        binding: bytes,
        binding_params: BindingParameters | None,
    ) -> pb.SubmitItineraryResponse:
        """The signed response for a matched itinerary."""
        if self._on_verdict is not None:
            self._on_verdict(status)
        verdict = issue_verdict(
            status,
            now=now,
            issuer=self.issuer,
            riskset_version=bundle.version,
            bundle_expires_at=bundle.expires_at,
            binding=binding,
            binding_params=binding_params,
            ttl_s=self._ttl_s,
        )
        try:
            token = self.signer_at(now).sign(verdict)
        except UnavailableError:  # the key's token does not answer: fail closed
            if self._on_signer_down is not None:
                self._on_signer_down()
            raise
        response = pb.SubmitItineraryResponse(
            status=pb.VerdictStatus.ValueType(status),
            token=token,
            riskset_version=verdict.riskset_version,
        )
        response.issued_at.seconds = verdict.issued_at
        response.expires_at.seconds = verdict.expires_at
        return response


class ItineraryVerificationServicer(pb_grpc.ItineraryVerificationServicer):
    def __init__(self, core: VerdictCore) -> None:
        self._core = core

    @grpc_errors
    def SubmitItinerary(
        self, request: pb.SubmitItineraryRequest, context: grpc.ServicerContext
    ) -> pb.SubmitItineraryResponse:
        return self._core.submit(request.itinerary, *read_binding(request))

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

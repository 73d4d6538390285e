"""A Python client for the StayCheck service.

Calls wait for the server to be ready and are retried on UNAVAILABLE by gRPC's own retry
policy (safe: submitting an itinerary twice yields two equivalent verdicts and changes no
state). Channel credentials are the caller's choice (plaintext for loopback, TLS otherwise).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import grpc
from staycheck.trust.binding import (
    DEFAULT_PARAMETERS,
    BindingParameters,
    compute_binding,
    new_salt,
)
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.presentation import present
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

_RETRY_POLICY = {
    "methodConfig": [
        {
            "name": [{"service": "staycheck.v1.ItineraryVerification"}],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def binding_parameters_message(params: BindingParameters) -> pb.BindingParameters:
    return pb.BindingParameters(
        memory_kib=params.memory_kib, iterations=params.iterations, lanes=params.lanes
    )


@dataclass(frozen=True)
class Submitted:
    """A verdict as the traveller keeps it: the server's response and the presentation
    (token and, when bound, the salt) to show at the door."""

    response: pb.SubmitItineraryResponse
    presentation: str
    salt: bytes = b""

    def __repr__(self) -> str:
        chars = len(self.presentation)
        return f"Submitted(status={self.response.status}, presentation=<{chars} chars>)"

    def qr(self) -> Any:
        """The presentation as a ``segno.QRCode`` (needs ``staycheck[qr]``): ``.save(path)``
        writes PNG or SVG by the file name, ``.terminal()`` draws it on a terminal."""
        from staycheck.client.qr import qr_code

        return qr_code(self.presentation)


def submit_request(
    itinerary: pb.Itinerary,
    *,
    subject_binding: bytes = b"",
    binding_params: BindingParameters | None = None,
) -> pb.SubmitItineraryRequest:
    """The request message: a binding the caller derived, with the parameters it used (by
    default those :func:`staycheck.trust.binding.compute_binding` uses by default)."""
    request = pb.SubmitItineraryRequest(itinerary=itinerary, subject_binding=subject_binding)
    if subject_binding:
        params = binding_params or DEFAULT_PARAMETERS
        request.binding_parameters.CopyFrom(binding_parameters_message(params))
    return request


class _Submit(Protocol):
    def __call__(
        self,
        itinerary: pb.Itinerary,
        *,
        subject_binding: bytes = b"",
        binding_params: BindingParameters | None = None,
    ) -> pb.SubmitItineraryResponse: ...


def submit_for_subject(
    submit: _Submit,
    itinerary: pb.Itinerary,
    *,
    subject_id: str | None,
    binding_params: BindingParameters = DEFAULT_PARAMETERS,
) -> Submitted:
    """``submit`` (a client's raw call) and the presentation. With ``subject_id`` (an
    identity document number, which never leaves this process) the verdict is bound to it
    under a fresh salt; ``None`` asks for an unbound verdict."""
    salt = binding = b""
    if subject_id is not None:
        salt = new_salt()
        binding = compute_binding(subject_id, salt, binding_params)
    response = submit(
        itinerary,
        subject_binding=binding,
        binding_params=binding_params if binding else None,
    )
    return Submitted(response, present(response.token, salt), salt)


class StayCheckClient:
    """``with StayCheckClient("127.0.0.1:50051") as c: c.submit(itinerary)``."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = 10.0,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        opts = [("grpc.service_config", json.dumps(_RETRY_POLICY)), *(options or [])]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        self._stub = pb_grpc.ItineraryVerificationStub(self._channel)
        self._timeout_s = timeout_s

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def submit(
        self,
        itinerary: pb.Itinerary,
        *,
        subject_binding: bytes = b"",
        binding_params: BindingParameters | None = None,
    ) -> pb.SubmitItineraryResponse:
        """The raw call: a binding the caller derived, with the parameters it used (by
        default those :func:`staycheck.trust.binding.compute_binding` uses by default)."""
        request = submit_request(
            itinerary, subject_binding=subject_binding, binding_params=binding_params
        )
        response: pb.SubmitItineraryResponse = self._stub.SubmitItinerary(
            request, timeout=self._timeout_s
        )
        return response

    def submit_for(
        self,
        itinerary: pb.Itinerary,
        *,
        subject_id: str | None,
        binding_params: BindingParameters = DEFAULT_PARAMETERS,
    ) -> Submitted:
        """Submit and return the presentation (:func:`submit_for_subject`)."""
        return submit_for_subject(
            self.submit, itinerary, subject_id=subject_id, binding_params=binding_params
        )

    def verdict_keys_json(self) -> str:
        response = self._stub.GetVerdictKeys(pb.GetVerdictKeysRequest(), timeout=self._timeout_s)
        return str(response.jwks_json)

    def verdict_keys(self) -> VerdictKeySet:
        return VerdictKeySet(KeySet.from_jwks(self.verdict_keys_json()))

    def risk_area_status(self) -> pb.GetRiskAreaStatusResponse:
        response: pb.GetRiskAreaStatusResponse = self._stub.GetRiskAreaStatus(
            pb.GetRiskAreaStatusRequest(), timeout=self._timeout_s
        )
        return response

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> StayCheckClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


T = TypeVar("T")


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of ``n`` items (the last may be shorter); itertools.batched is 3.12+."""
    iterator = iter(items)
    while part := list(itertools.islice(iterator, n)):
        yield part


def tls_credentials(
    *, ca: bytes, cert: bytes | None = None, key: bytes | None = None
) -> grpc.ChannelCredentials:
    """TLS trusting ``ca``; with ``cert`` and ``key``, also a client certificate (mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


class PartnerClient:
    """A partner province's client for ``staycheck.v1.PartnerVerification`` (mutual TLS)."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials,
        timeout_s: float = 30.0,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        # No wait-for-ready here: a partner whose certificate is refused must hear so at
        # once (UNAVAILABLE), not wait out its deadline.
        self._channel = grpc.secure_channel(target, credentials, options=options or [])
        self._stub = ppb_grpc.PartnerVerificationStub(self._channel)
        self._timeout_s = timeout_s

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def verify_verdict(
        self, token: str, *, subject_binding: bytes = b"", min_riskset_version: int = 0
    ) -> ppb.VerifyVerdictResponse:
        response: ppb.VerifyVerdictResponse = self._stub.VerifyVerdict(
            ppb.VerifyVerdictRequest(
                token=token,
                subject_binding=subject_binding,
                min_riskset_version=min_riskset_version,
            ),
            timeout=self._timeout_s,
        )
        return response

    def verify_verdicts(
        self, tokens: Iterable[str], *, chunk: int = 64, timeout_s: float | None = None
    ) -> Iterator[ppb.VerifyVerdictsResult]:
        """One result per token, in order (``index`` says which); ``chunk`` tokens a message."""

        def requests() -> Iterator[ppb.VerifyVerdictsRequest]:
            for part in _batched(tokens, chunk):
                yield ppb.VerifyVerdictsRequest(
                    verdicts=[ppb.VerifyVerdictRequest(token=t) for t in part]
                )

        for response in self._stub.VerifyVerdicts(requests(), timeout=timeout_s):
            yield from response.results

    def submit_itineraries(
        self,
        itineraries: Iterable[pb.Itinerary | tuple[pb.Itinerary, bytes]],
        *,
        chunk: int = 64,
        timeout_s: float | None = None,
        binding_params: BindingParameters = DEFAULT_PARAMETERS,
    ) -> Iterator[ppb.ItineraryResult]:
        """One result per itinerary, in order (``index`` says which); streamed lazily,
        ``chunk`` itineraries a message. An ``(itinerary, binding)`` pair carries a binding
        derived with ``binding_params``."""
        params = binding_parameters_message(binding_params)

        def requests() -> Iterator[ppb.SubmitItinerariesRequest]:
            for part in _batched(itineraries, chunk):
                items = []
                for item in part:
                    itinerary, binding = item if isinstance(item, tuple) else (item, b"")
                    message = ppb.ItineraryItem(itinerary=itinerary, subject_binding=binding)
                    if binding:
                        message.binding_parameters.CopyFrom(params)
                    items.append(message)
                yield ppb.SubmitItinerariesRequest(items=items)

        for response in self._stub.SubmitItineraries(requests(), timeout=timeout_s):
            yield from response.results

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PartnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

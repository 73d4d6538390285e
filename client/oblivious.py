"""Submitting through Oblivious HTTP (RFC 9458): the traveller's address goes to a relay run
by someone else, the itinerary only to our gateway, and neither sees both.

What this module does:

- The protocol both sides keep to (the gateway is ``staycheck.server.gateway``): a Binary
  HTTP ``POST`` of :data:`SUBMIT_PATH` whose content is the serialized
  ``staycheck.v1.SubmitItineraryRequest`` (:data:`PROTOBUF`); the answer is 200 with the
  serialized ``SubmitItineraryResponse``, or an error status with the gRPC code and the
  same field-and-rule message a gRPC call would get, in ``grpc-status`` and
  ``grpc-message`` (the code's number and the details, as gRPC's own trailers carry
  them; :data:`HTTP_STATUS` maps codes to HTTP statuses).
- :func:`load_key_configs`: the gateway's ``application/ohttp-keys`` from its well-known
  URL (:data:`KEYS_PATH`) or a file, and :func:`strongest`, the key and KDF/AEAD pair to
  use: the strongest that both the configuration and this module offer.
- :class:`ObliviousClient`: ``submit`` and ``submit_for`` as on
  :class:`staycheck.client.StayCheckClient`, over one HTTP POST to the relay per call;
  a fresh HPKE context each time, so two submissions are not linkable by their bytes.

What it does not do: choose the relay (the caller names it: one run by someone other than
the gateway's operator, docs/deploy.md), cache key configurations, or retry (a retried
Oblivious request would be a fresh one; the caller decides).
"""

from __future__ import annotations

import pathlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence

import grpc
from staycheck.client.bhttp import BinaryHttpError, Request, Response
from staycheck.client.client import Submitted, submit_for_subject, submit_request
from staycheck.client.ohttp import (
    AEAD_AES_128_GCM,
    AEAD_AES_256_GCM,
    AEAD_CHACHA20_POLY1305,
    KDF_HKDF_SHA256,
    KDF_HKDF_SHA384,
    KDF_HKDF_SHA512,
    KEYS_MEDIA_TYPE,
    MAX_ENCAPSULATED_BYTES,
    REQUEST_MEDIA_TYPE,
    RESPONSE_MEDIA_TYPE,
    KeyConfig,
    ObliviousError,
    SymmetricSuite,
    decode_key_configs,
    encapsulate_request,
)
from staycheck.geo.errors import InvalidInputError
from staycheck.trust.binding import DEFAULT_PARAMETERS, BindingParameters
from staycheck.v1 import verification_pb2 as pb

SUBMIT_PATH = "/staycheck.v1.ItineraryVerification/SubmitItinerary"
"""The one request a gateway answers, as a Binary HTTP path."""
KEYS_PATH = "/.well-known/ohttp-gateway"
"""Where a gateway serves its key configurations (RFC 9458 Section 3 and 9.1)."""
GATEWAY_PATH = "/"
"""Where a gateway takes ``message/ohttp-req`` (what a relay is configured to forward to)."""
PROTOBUF = "application/protobuf"
MAX_KEYS_BYTES = 64 * 1024
"""Largest ``application/ohttp-keys`` body read."""
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
}
"""gRPC code -> HTTP status, as in google.rpc.Code's mapping."""
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_STRENGTH_KDF = {KDF_HKDF_SHA256: 0, KDF_HKDF_SHA384: 1, KDF_HKDF_SHA512: 2}
_STRENGTH_AEAD = {AEAD_AES_128_GCM: 0, AEAD_CHACHA20_POLY1305: 1, AEAD_AES_256_GCM: 1}


class ObliviousCallError(Exception):
    """The gateway answered with an error: ``code`` is the gRPC code a gRPC call would
    have got, ``details`` its field-and-rule message; or the relay or the gateway could not
    be reached or refused the encapsulation (``UNAVAILABLE``)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, *, http_status: int | None = None
    ) -> None:
        self.code = code
        self.details = details
        self.http_status = http_status
        super().__init__(f"{code.name}: {details}")


def load_key_configs(
    source: str, *, timeout_s: float = 10.0, context: ssl.SSLContext | None = None
) -> tuple[KeyConfig, ...]:
    """The key configurations at ``source``: an http(s) URL (the gateway's
    :data:`KEYS_PATH`, or where its operator publishes them) or a file of
    ``application/ohttp-keys``. Only configurations of a KEM this module implements."""
    if source.startswith(("http://", "https://")):
        # The scheme is checked above: http(s) only, never file: or another opener.
        request = urllib.request.Request(source, headers={"Accept": KEYS_MEDIA_TYPE})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:  # noqa: S310
                kind = answer.headers.get_content_type()
                data = answer.read(MAX_KEYS_BYTES + 1)
        except (urllib.error.URLError, OSError) as e:
            raise ObliviousCallError(
                grpc.StatusCode.UNAVAILABLE, f"gateway keys: cannot fetch ({e})"
            ) from None
        if kind != KEYS_MEDIA_TYPE:
            raise InvalidInputError("gateway keys", f"the answer is not {KEYS_MEDIA_TYPE}")
    else:
        try:
            with pathlib.Path(source).open("rb") as f:
                data = f.read(MAX_KEYS_BYTES + 1)
        except OSError as e:
            raise InvalidInputError("gateway keys", f"cannot read the file ({e.strerror})") from e
    if len(data) > MAX_KEYS_BYTES:
        raise InvalidInputError("gateway keys", f"larger than {MAX_KEYS_BYTES} bytes")
    configs = decode_key_configs(data)
    if not configs:
        raise InvalidInputError("gateway keys", "no key configuration this client can use")
    return configs


def strongest(configs: Sequence[KeyConfig]) -> tuple[KeyConfig, SymmetricSuite]:
    """The key and the KDF/AEAD pair to use: the strongest pair that a configuration offers
    and this module implements (256-bit AEADs before AES-128-GCM, then the longer hash);
    between equals, the gateway's order. (Every KEM implemented here is X25519; a
    post-quantum KEM would come first.)"""
    best: tuple[tuple[int, int], int, KeyConfig, SymmetricSuite] | None = None
    order = 0
    for config in configs:
        for suite in config.symmetric:
            if not suite.supported:
                continue
            rank = (_STRENGTH_AEAD[suite.aead_id], _STRENGTH_KDF[suite.kdf_id])
            if best is None or rank > best[0]:
                best = (rank, order, config, suite)
            order += 1
    if best is None:
        raise InvalidInputError("gateway keys", "no KDF and AEAD pair this client implements")
    return best[2], best[3]


class ObliviousClient:
    """``SubmitItinerary`` through the relay at ``relay_url``, sealed for the gateway key
    ``configs`` name (the strongest pair, :func:`strongest`). One POST per call; no
    cookies, no identifying headers of ours."""

    def __init__(
        self,
        relay_url: str,
        configs: Sequence[KeyConfig],
        *,
        timeout_s: float = 10.0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        if not relay_url.startswith(("http://", "https://")):
            raise InvalidInputError("relay", "must be an http(s) URL")
        self._relay = relay_url
        self._config, self._suite = strongest(configs)
        self._timeout_s = timeout_s
        self._context = context

    @property
    def suite(self) -> tuple[int, SymmetricSuite]:
        """The key id and the KDF/AEAD pair requests are sealed with."""
        return self._config.key_id, self._suite

    def submit(
        self,
        itinerary: pb.Itinerary,
        *,
        subject_binding: bytes = b"",
        binding_params: BindingParameters | None = None,
    ) -> pb.SubmitItineraryResponse:
        """As :meth:`StayCheckClient.submit`; :class:`ObliviousCallError` for an error."""
        message = submit_request(
            itinerary, subject_binding=subject_binding, binding_params=binding_params
        )
        inner = Request(
            "POST", "https", "", SUBMIT_PATH, (("content-type", PROTOBUF.encode()),),
            message.SerializeToString(),
        )  # fmt: skip
        sealed, context = encapsulate_request(self._config, inner.encode(), suite=self._suite)
        answer = self._post(sealed)
        try:
            response = Response.decode(context.decapsulate_response(answer))
        except (ObliviousError, BinaryHttpError) as e:
            raise ObliviousCallError(grpc.StatusCode.UNAVAILABLE, f"gateway answer: {e}") from None
        return _read_response(response)

    def submit_for(
        self,
        itinerary: pb.Itinerary,
        *,
        subject_id: str | None,
        binding_params: BindingParameters = DEFAULT_PARAMETERS,
    ) -> Submitted:
        """As :meth:`StayCheckClient.submit_for`: the identity number never leaves this
        process."""
        return submit_for_subject(
            self.submit, itinerary, subject_id=subject_id, binding_params=binding_params
        )

    def _post(self, sealed: bytes) -> bytes:
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked in __init__)
            self._relay,
            data=sealed,
            method="POST",
            headers={"Content-Type": REQUEST_MEDIA_TYPE, "Accept": RESPONSE_MEDIA_TYPE},
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout_s, context=self._context
            ) as answer:
                kind = answer.headers.get_content_type()
                data: bytes = answer.read(MAX_ENCAPSULATED_BYTES + 1)
        except urllib.error.HTTPError as e:
            # Unencrypted: the relay's, or the gateway's refusal of the encapsulation.
            raise ObliviousCallError(
                grpc.StatusCode.UNAVAILABLE,
                f"relay or gateway refused the request (HTTP {e.code})",
                http_status=e.code,
            ) from None
        except (urllib.error.URLError, OSError) as e:
            raise ObliviousCallError(
                grpc.StatusCode.UNAVAILABLE, f"relay: cannot reach it ({e})"
            ) from None
        if kind != RESPONSE_MEDIA_TYPE:
            raise ObliviousCallError(
                grpc.StatusCode.UNAVAILABLE, f"relay: the answer is not {RESPONSE_MEDIA_TYPE}"
            )
        return data


def _read_response(response: Response) -> pb.SubmitItineraryResponse:
    headers = {name: value for name, value in response.headers}
    if response.status == 200:
        try:
            return pb.SubmitItineraryResponse.FromString(response.content)
        except Exception:  # protobuf's DecodeError: the gateway's bytes
            raise ObliviousCallError(
                grpc.StatusCode.INTERNAL, "gateway answer: not a response message"
            ) from None
    number = headers.get("grpc-status", b"")
    code = _CODES.get(int(number), grpc.StatusCode.UNKNOWN) if number.isdigit() else None
    details = headers.get("grpc-message", b"").decode("utf-8", "replace")
    raise ObliviousCallError(code or grpc.StatusCode.UNKNOWN, details, http_status=response.status)

"""The verdict token: what it says, how it is signed, how it is read back.

A verdict is a CWT (RFC 8392) claims map signed as a tagged COSE_Sign1 (RFC 9052) with
EdDSA (Ed25519). The protected header holds only ``alg`` (1) and ``kid`` (4, the first
8 bytes of SHA-256 of the raw public key). The claims map holds exactly (allowlist):

====== ======================== ==================================================
key    claim                    value
====== ======================== ==================================================
1      ``iss``                  issuer code, six ASCII digits, e.g. ``"110000"``
4      ``exp``                  expiry, Unix seconds
6      ``iat``                  issue time, Unix seconds, rounded down to 5 minutes
7      ``cti``                  verdict id, 16 random bytes
-65537 StayCheck claims         map: 1 status (1 no abnormality, 2 review required),
                                2 risk-area bundle version, 3 subject binding
                                (32 bytes), 4 the binding's Argon2id parameters
                                ``[memory_kib, iterations, lanes]`` (3 and 4 both
                                present, or both absent when unbound)
====== ======================== ==================================================

-65537 is the first CWT claim key of the private-use range (below -65536). Text form:
``SC1:`` + base45 (RFC 9285) of the COSE bytes, fit for a QR code in alphanumeric mode.

Pure: builds, signs (through a ``staycheck.trust.keys.Signer``) and decodes; the rules for
accepting a token are in ``staycheck.trust.verifier``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from staycheck.geo.errors import MalformedError
from staycheck.geo.itinerary import Status
from staycheck.trust import cose
from staycheck.trust.base45 import b45decode, b45encode
from staycheck.trust.binding import BINDING_LENGTH, BindingParameters
from staycheck.trust.keys import Signer

TOKEN_PREFIX = "SC1:"  # noqa: S105 (a format prefix, not a secret)
MAX_TOKEN_CHARS = 2048
MAX_TOKEN_BYTES = 1024
CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_CTI = 1, 4, 6, 7
CLAIM_STAYCHECK = -65537
SC_STATUS, SC_RISKSET_VERSION, SC_BINDING, SC_BINDING_PARAMS = 1, 2, 3, 4
ALLOWED_CLAIMS = frozenset({CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_CTI, CLAIM_STAYCHECK})
UNBOUND_SC_CLAIMS = frozenset({SC_STATUS, SC_RISKSET_VERSION})
BOUND_SC_CLAIMS = frozenset({SC_STATUS, SC_RISKSET_VERSION, SC_BINDING, SC_BINDING_PARAMS})
VERDICT_ID_LENGTH = 16
_ISSUER_CODE = re.compile(r"[0-9]{6}", re.ASCII)
"""A province code (GB/T 2260); six digits keep a bound presentation within QR version 10."""
IAT_BUCKET_S = 300
"""Issue times are rounded down to this many seconds (privacy: no join with access logs)."""
MAX_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Verdict:
    """The content of a verdict token."""

    verdict_id: bytes
    status: Status
    issuer: str
    issued_at: int
    expires_at: int
    riskset_version: int
    binding: bytes = field(default=b"", repr=False)  # with the salt, it identifies the bearer
    binding_params: BindingParameters | None = None
    """The Argon2id parameters the binding was derived with; set exactly when bound."""

    def claims(self) -> dict[int, Any]:
        sc: dict[int, Any] = {SC_STATUS: int(self.status), SC_RISKSET_VERSION: self.riskset_version}
        if self.binding:
            assert self.binding_params is not None  # issue_verdict and decode_claims ensure it
            sc[SC_BINDING] = self.binding
            sc[SC_BINDING_PARAMS] = self.binding_params.to_cbor()
        return {
            CLAIM_ISS: self.issuer,
            CLAIM_EXP: self.expires_at,
            CLAIM_IAT: self.issued_at,
            CLAIM_CTI: self.verdict_id,
            CLAIM_STAYCHECK: sc,
        }


def issue_verdict(
    status: Status,
    *,
    now: int,
    issuer: str,
    riskset_version: int,
    bundle_expires_at: int,
    binding: bytes = b"",
    binding_params: BindingParameters | None = None,
    ttl_s: int = MAX_TTL_S,
) -> Verdict:
    """A new verdict: random id, ``iat`` rounded down to the bucket, ``exp`` at most ``ttl_s``
    after it and never past the bundle's expiry. A ``binding`` comes with the
    ``binding_params`` it was derived with."""
    if binding and len(binding) != BINDING_LENGTH:
        raise ValueError("binding must be 32 bytes")
    if bool(binding) != (binding_params is not None):
        raise ValueError("binding and binding_params go together")
    if binding_params is not None:
        binding_params.check()
    if not _ISSUER_CODE.fullmatch(issuer):
        raise ValueError("issuer must be a six-digit code")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError("ttl must be within (0, 24 h]")
    iat = now - now % IAT_BUCKET_S
    exp = min(iat + ttl_s, bundle_expires_at)
    return Verdict(
        secrets.token_bytes(VERDICT_ID_LENGTH),
        status,
        issuer,
        iat,
        exp,
        riskset_version,
        binding,
        binding_params,
    )


class TokenSigner:
    """Signs verdicts with one key; the protected header is encoded once, here."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self.kid = signer.kid
        protected = cose.encode_protected(
            {cose.HEADER_ALG: signer.alg, cose.HEADER_KID: signer.kid}
        )
        self._framer = cose.Sign1Framer(protected)

    def sign(self, verdict: Verdict) -> str:
        # claims() lists keys in deterministic order already (RFC 8949 4.2.1: 1, 4, 6, 7,
        # then -65537, whose head is longer), so plain encoding gives the canonical bytes.
        payload = cbor2.dumps(verdict.claims())
        signature = self._signer.sign(self._framer.to_be_signed(payload))
        return TOKEN_PREFIX + b45encode(self._framer.message(payload, signature))


def _int(value: Any, name: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise MalformedError(f"token: {name} must be an integer in range")
    return value


def decode_claims(payload: bytes) -> Verdict:
    """Decode and check a claims map against the allowlist (no signature check)."""
    try:
        claims = cbor2.loads(payload)
    except Exception as e:  # cbor2 raises several types on hostile input
        raise MalformedError("token: claims are not valid CBOR") from e
    if not isinstance(claims, dict) or set(claims) != ALLOWED_CLAIMS:
        raise MalformedError("token: claims must be exactly iss, exp, iat, cti and StayCheck's")
    # One encoding only (RFC 8949 section 4.2): a duplicated key, an indefinite length, a
    # longer head or trailing bytes all encode back to other bytes. For the keys the
    # allowlist admits, cbor2's canonical order is the core deterministic (bytewise) order.
    if cbor2.dumps(claims, canonical=True) != payload:
        raise MalformedError("token: claims are not deterministic CBOR")
    sc = claims[CLAIM_STAYCHECK]
    if not isinstance(sc, dict) or set(sc) not in (UNBOUND_SC_CLAIMS, BOUND_SC_CLAIMS):
        raise MalformedError(
            "token: StayCheck claims must hold status and bundle version, and binding with "
            "its parameters or neither"
        )
    iss, cti = claims[CLAIM_ISS], claims[CLAIM_CTI]
    if not isinstance(iss, str) or not _ISSUER_CODE.fullmatch(iss):
        raise MalformedError("token: iss must be a six-digit issuer code")
    if not isinstance(cti, bytes) or len(cti) != VERDICT_ID_LENGTH:
        raise MalformedError("token: cti must be 16 bytes")
    binding = sc.get(SC_BINDING, b"")
    if not isinstance(binding, bytes) or (SC_BINDING in sc and len(binding) != BINDING_LENGTH):
        raise MalformedError("token: binding must be 32 bytes")
    params = _binding_params(sc[SC_BINDING_PARAMS]) if SC_BINDING in sc else None
    try:
        status = Status(_int(sc[SC_STATUS], "status"))
    except ValueError:
        raise MalformedError("token: unknown status") from None
    iat = _int(claims[CLAIM_IAT], "iat")
    exp = _int(claims[CLAIM_EXP], "exp")
    version = _int(sc[SC_RISKSET_VERSION], "bundle version", lo=1)
    return Verdict(cti, status, iss, iat, exp, version, binding, params)


def _binding_params(value: Any) -> BindingParameters:
    if not isinstance(value, list) or len(value) != 3:
        raise MalformedError("token: binding parameters must be [memory_kib, iterations, lanes]")
    params = BindingParameters(*value)
    try:
        params.check()
    except ValueError as e:
        raise MalformedError(f"token: binding parameters: {e}") from None
    return params


def token_bytes(token: str) -> bytes:
    """The COSE_Sign1 bytes of a token's text form (``SC1:`` + base45); nothing verified."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise MalformedError("token: too long")
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX):
        raise MalformedError("token: must start with SC1:")
    try:
        return b45decode(token[len(TOKEN_PREFIX) :])
    except ValueError as e:
        raise MalformedError("token: not base45") from e


def decode_token(token: str | bytes) -> tuple[cose.Sign1, Verdict]:
    """Parse a token (its text form, or its COSE_Sign1 bytes) into its COSE parts and
    claims; nothing is verified."""
    data = token if isinstance(token, bytes) else token_bytes(token)
    sign1 = cose.decode_sign1(data, max_size=MAX_TOKEN_BYTES)
    if set(sign1.protected) != {cose.HEADER_ALG, cose.HEADER_KID}:
        raise MalformedError("token: protected header must hold exactly alg and kid")
    return sign1, decode_claims(sign1.payload)

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
accepting a token are in ``staycheck.trust.verifier``. Decoding reads claims of the one
shape valid claims have by hand (:func:`_read_claims`) and gives anything else to cbor2 and
the general checks, which refuse it with their reason; the hand reader accepts nothing they
refuse (tests/unit/test_token_fast_path.py).
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import cbor2
from staycheck.geo.errors import MalformedError
from staycheck.geo.itinerary import Status
from staycheck.trust import cose
from staycheck.trust.base45 import b45decode, b45encode
from staycheck.trust.binding import BINDING_LENGTH, BindingParameters
from staycheck.trust.cose import SIG_STRUCTURE_HEAD
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
    verdict = _read_claims(payload)
    if verdict is not None:
        return verdict
    return _decode_claims_general(payload)


def _decode_claims_general(payload: bytes) -> Verdict:
    """:func:`decode_claims` through cbor2 and the allowlist, for any input: what is not
    in the one shape :func:`_read_claims` reads is refused here, with the reason."""
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
    return _decode_token_bytes(data)


def _decode_token_bytes(data: bytes) -> tuple[cose.Sign1, Verdict]:
    sign1 = cose.decode_sign1(data, max_size=MAX_TOKEN_BYTES)
    if set(sign1.protected) != {cose.HEADER_ALG, cose.HEADER_KID}:
        raise MalformedError("token: protected header must hold exactly alg and kid")
    return sign1, decode_claims(sign1.payload)


SignedParts = tuple[bytes | None, int | None, bytes, bytes, Verdict]
"""What the verifier needs of a token: ``(kid, alg, signature, to_be_signed, verdict)``, the
header's hints, the signature, the ``Sig_structure`` bytes it covers and the claims (a
plain tuple: a NamedTuple costs more to build than the rest of the framing)."""


def decode_for_verification(token: str | bytes) -> SignedParts:
    """:func:`decode_token` for the verifier: the same checks, in the same order, and the
    same errors, without building what verifying does not need. A token of the one shape
    valid tokens have is read by hand (``cose.split_sign1``, :func:`_read_claims`), its
    ``Sig_structure`` cut from its own bytes; anything else goes through
    :func:`decode_token`, which refuses it or accepts it as before."""
    data = token if isinstance(token, bytes) else token_bytes(token)
    if len(data) <= MAX_TOKEN_BYTES:
        parts = cose.split_sign1(data)
        if parts is not None:
            end, alg, kid, start, stop, signature = parts
            verdict = _read_claims(data[start:stop])
            if verdict is not None:
                # ["Signature1", protected, h'', payload]: both byte strings, heads included,
                # are slices of the token (RFC 9052 section 4.4).
                tbs = b"".join((SIG_STRUCTURE_HEAD, data[2:end], b"\x40", data[end + 1 : stop]))
                return kid, alg, signature, tbs, verdict
    sign1, verdict = _decode_token_bytes(data)
    return sign1.kid, sign1.alg, sign1.signature, sign1.to_be_signed(), verdict


# --- the claims of a valid token, read by hand ----------------------------------------------

_STATUS_BY_VALUE = {int(s): s for s in Status}
_MAX_UINT = 2**63 - 1
# The fixed-size beginning of valid claims whose exp and iat take four bytes (65 536 to
# 2^32 - 1: every time from 1970-01-01T18:12Z to 2106): a5 | 01 66 iss | 04 1a exp |
# 06 1a iat | 07 50 cti | 3a 00 01 00 00 a2-or-a4 01 status | 02, then the version.
_CLAIMS_HEAD = struct.Struct(">3s6s2sI2sI2s16s7sB1s")
_UNBOUND_SC_HEAD = b"\x3a\x00\x01\x00\x00\xa2\x01"  # -65537: {1: status, 2: version}
_BOUND_SC_HEAD = b"\x3a\x00\x01\x00\x00\xa4\x01"  # -65537: {1: .., 2: .., 3: .., 4: ..}
_params_cache: dict[bytes, BindingParameters] = {}
_PARAMS_CACHE_SIZE = 16


def _verdict_builder() -> Callable[
    [bytes, Status, str, int, int, int, bytes, BindingParameters | None], Verdict
]:
    """``Verdict(...)`` at half the cost: the frozen dataclass's ``__init__`` sets each of
    the eight fields through ``object.__setattr__`` (about 1 µs); this sets the same slots
    through their descriptors. ``Verdict.__init__`` does nothing else (no ``__post_init__``,
    no defaults used here); a test pins that both give equal objects, and a ninth field
    breaks the unpacking below at import."""
    new = object.__new__
    f0, f1, f2, f3, f4, f5, f6, f7 = (getattr(Verdict, f.name).__set__ for f in fields(Verdict))

    def build(
        cti: bytes,
        status: Status,
        iss: str,
        iat: int,
        exp: int,
        version: int,
        binding: bytes,
        params: BindingParameters | None,
    ) -> Verdict:
        v: Verdict = new(Verdict)
        f0(v, cti)
        f1(v, status)
        f2(v, iss)
        f3(v, iat)
        f4(v, exp)
        f5(v, version)
        f6(v, binding)
        f7(v, params)
        return v

    return build


_new_verdict = _verdict_builder()


def _uint_at(data: bytes, i: int) -> tuple[int, int]:
    """The unsigned integer (major type 0) whose head is at ``i`` and the index after it;
    ``(-1, 0)`` for another type, a longer head than needed, a value over 2^63 - 1 or
    argument bytes cut short (``IndexError`` if the head itself, or a one-byte argument, is
    missing)."""
    head = data[i]
    if head < 0x18:
        return head, i + 1
    if head == 0x18:
        value, i = data[i + 1], i + 2
        floor = 0x18
    elif head == 0x19:
        value, i = int.from_bytes(data[i + 1 : i + 3], "big"), i + 3
        floor = 0x100
    elif head == 0x1A:
        value, i = int.from_bytes(data[i + 1 : i + 5], "big"), i + 5
        floor = 0x10000
    elif head == 0x1B:
        value, i = int.from_bytes(data[i + 1 : i + 9], "big"), i + 9
        floor = 0x1_0000_0000
    else:
        return -1, 0
    if not floor <= value <= _MAX_UINT or i > len(data):
        return -1, 0
    return value, i


def _read_claims(payload: bytes) -> Verdict | None:
    """The verdict of claims in the one form valid claims have, read by hand, or ``None``
    for anything else; :func:`decode_claims` then runs cbor2 and the general checks, which
    refuse it (or accept it, e.g. an ``iat`` before 65 536) and give the reason.

    The form is RFC 8949 section 4.2's deterministic CBOR, every head the shortest, keys in
    order: ``a5 | 01 66 <six ASCII digits> | 04 1a exp | 06 1a iat | 07 50 <16 bytes> |
    3a 00 01 00 00`` then ``a2 01 status 02 version`` (unbound) or ``a4 01 status 02
    version 03 58 20 <32 bytes> 04 83 memory_kib iterations lanes`` (bound), and nothing
    after it. Every value is checked as :func:`decode_claims` checks it: iss six ASCII
    digits, status 1 or 2, times and version unsigned below 2^63 (version from 1), the
    binding parameters through ``BindingParameters.check``."""
    try:
        head, iss, k_exp, exp, k_iat, iat, k_cti, cti, sc_head, st, k_version = (
            _CLAIMS_HEAD.unpack_from(payload)
        )
    except struct.error:  # shorter than the fixed part
        return None
    if (
        head != b"\xa5\x01\x66"
        or k_exp != b"\x04\x1a"
        or k_iat != b"\x06\x1a"
        or k_cti != b"\x07\x50"
        or k_version != b"\x02"
        or exp < 0x10000  # else a four-byte head is not the shortest
        or iat < 0x10000
        or not iss.isdigit()  # ASCII digits only, as _ISSUER_CODE
    ):
        return None
    status = _STATUS_BY_VALUE.get(st)  # 1 or 2 (one-byte heads)
    if status is None:
        return None
    try:
        version, i = _uint_at(payload, _CLAIMS_HEAD.size)
    except IndexError:
        return None
    if version < 1:
        return None
    if sc_head == _UNBOUND_SC_HEAD:
        if i != len(payload):
            return None
        return _new_verdict(cti, status, iss.decode("ascii"), iat, exp, version, b"", None)
    if sc_head != _BOUND_SC_HEAD or payload[i : i + 3] != b"\x03\x58\x20":
        return None
    params = _binding_parameters(payload[i + 35 :])  # empty if the binding is cut short
    if params is None:
        return None
    binding = payload[i + 3 : i + 35]
    return _new_verdict(cti, status, iss.decode("ascii"), iat, exp, version, binding, params)


def _binding_parameters(tail: bytes) -> BindingParameters | None:
    """The parameters encoded by ``tail``, exactly ``04 83 uint uint uint`` (the key 4 and
    the array of three), if they pass ``BindingParameters.check``; else ``None``. The few
    encodings in use are kept with their checked parameters (``BindingParameters`` is
    frozen), so a token with the usual parameters costs one dictionary lookup."""
    params = _params_cache.get(tail)
    if params is not None:
        return params
    if tail[:2] != b"\x04\x83":
        return None
    try:
        memory_kib, i = _uint_at(tail, 2)
        if memory_kib < 0:
            return None
        iterations, i = _uint_at(tail, i)
        if iterations < 0:
            return None
        lanes, i = _uint_at(tail, i)
    except IndexError:
        return None
    if lanes < 0 or i != len(tail):
        return None
    params = BindingParameters(memory_kib, iterations, lanes)
    try:
        params.check()
    except ValueError:
        return None
    if len(_params_cache) < _PARAMS_CACHE_SIZE:
        _params_cache[tail] = params
    return params

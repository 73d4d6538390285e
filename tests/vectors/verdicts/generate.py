"""Public conformance vectors for the verdict format: writes ``cases/*.json`` beside this file.

Usage, from the repository root::

    python -m tests.vectors.verdicts.generate          # (re)write the case files
    python -m tests.vectors.verdicts.generate --check  # exit 1 if they differ from the table

Every case is one row of :data:`CASES`: a presentation (the text a scanner reads), the key
set a verifier trusts, the evaluation time, the identity choice and the expected result.
The expected results are written in the table from the format's rules (the module
docstrings of ``staycheck.trust.verdict``, ``verifier``, ``presentation``, ``binding``,
``keys``, ``cose``; RFC 9052, 8392, 8949 section 4.2, 9285, 9106), never copied from
running the verifier. ``tests/unit/test_verdict_vectors.py`` runs them through the real
verifier and the command line, and regenerates them to check that the committed files are
what this script makes. The layers follow the EU DCC public test data: base45, COSE
structure, signature, claims, times, binding, keys.

Deterministic: the keys come from fixed seeds (RFC 8032 section 7.1 tests 1 and 2 for
Ed25519, RFC 6979 A.2.5 for P-256 with deterministic ECDSA), the verdict id, the salts, the
ID numbers and the times are constants, and Ed25519, RFC 6979 ECDSA and Argon2id are
deterministic: running this twice gives identical bytes.

Well-formed tokens come from the real signing path (``issue_verdict`` with its id then
fixed, or a ``Verdict`` built directly where ``issue_verdict`` would refuse, signed by
``TokenSigner``). Malformed ones are assembled here by hand with cbor2, from RFC 9052's
definitions; so are base45 (RFC 9285), the JWKs (RFC 8037, with our ``kid``, ``nbf``,
``exp`` and ``revoked`` members) and the bindings (Argon2id through argon2-cffi, the
reference C implementation, not the library the verifier uses).

This is a test tool: it opens files, and only those under ``cases/``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import pathlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import argon2.low_level
import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from staycheck.geo.itinerary import Status
from staycheck.trust.binding import BindingParameters
from staycheck.trust.keys import Ed25519Signer
from staycheck.trust.verdict import TokenSigner, Verdict, issue_verdict

HERE = pathlib.Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"

# --- constants ----------------------------------------------------------------------------

HOUR, DAY = 3600, 86400
SKEW = 120  # verifier: now in [iat - 120 s, exp + 120 s]
ISSUER = "110000"  # Beijing (SPEC.md)
OTHER_ISSUER = "120000"  # Tianjin
VERSION = 7  # the risk-area bundle version the verdicts name
IAT = 1_794_999_900  # 2026-11-18T11:05:00Z, a 5-minute bucket start (5_983_333 x 300)
EXP = IAT + DAY  # the longest lifetime allowed
NOW = IAT + HOUR  # the evaluation time of most cases
CTI = bytes(range(0xA0, 0xB0))  # the verdict id of every case: 16 bytes
SALT = bytes(range(0x30, 0x40))
OTHER_SALT = bytes(range(0x40, 0x50))
ID_NUMBER = "11010519491231002X"  # the example resident ID number of GB 11643
ID_NUMBER_LOWER_X = "11010519491231002x"
OTHER_ID_NUMBER = "110105194912310037"
# The cheapest parameters a token may name (19 MiB, 2 passes: the floor of binding.py).
FAST = BindingParameters(memory_kib=19 * 1024, iterations=2, lanes=1)
DEFAULT = BindingParameters(memory_kib=64 * 1024, iterations=2, lanes=4)

ALG_EDDSA, ALG_ES256 = -8, -7  # RFC 9053
HEADER_ALG, HEADER_CTY, HEADER_KID = 1, 3, 4  # RFC 9052 section 3.1
TAG_COSE_SIGN1, TAG_COSE_MAC0, TAG_CWT = 18, 17, 61
CLAIM_ISS, CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_CTI = 1, 4, 5, 6, 7
CLAIM_STAYCHECK = -65537

# --- keys ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Ed25519Key:
    """An Ed25519 key from a 32-byte seed."""

    alg = ALG_EDDSA

    def __init__(self, seed_hex: str) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
        self.raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = hashlib.sha256(self.raw).digest()[:8]  # keys.py: 8 bytes of SHA-256

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """RFC 8037 OKP key with our members (``kid``, ``alg``, ``use``, ``nbf``...)."""
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.raw)}
        return {**jwk, "kid": self.kid.hex(), "alg": "EdDSA", "use": "sig", **extra}

    def signer(self) -> Ed25519Signer:
        return Ed25519Signer(self.private)


class P256Key:
    """A P-256 key from its scalar, signing ES256 with deterministic ECDSA (RFC 6979), as
    COSE wants it: r || s, 32 bytes each (RFC 9053 section 2.1)."""

    alg = ALG_ES256

    def __init__(self, scalar_hex: str) -> None:
        self.private = ec.derive_private_key(int(scalar_hex, 16), ec.SECP256R1())
        self.raw = self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.kid = hashlib.sha256(self.raw).digest()[:8]

    def sign(self, data: bytes) -> bytes:
        der = self.private.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def jwk(self, **extra: Any) -> dict[str, Any]:
        x, y = self.raw[1:33], self.raw[33:]
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(x), "y": _b64url(y)}
        return {**jwk, "kid": self.kid.hex(), "alg": "ES256", "use": "sig", **extra}

    def signer(self) -> P256Key:
        return self  # kid, alg and sign: what TokenSigner needs


# RFC 8032 section 7.1, TEST 1 and TEST 2 secret keys; RFC 6979 A.2.5's private key.
KEY_A = Ed25519Key("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KEY_B = Ed25519Key("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
KEY_P = P256Key("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")


def jwks(*keys: dict[str, Any], issuer: str = ISSUER) -> dict[str, Any]:
    return {"issuer": issuer, "keys": list(keys)}


def jwks_a() -> dict[str, Any]:
    return jwks(KEY_A.jwk())


# --- base45 (RFC 9285), written out here --------------------------------------------------

B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def b45encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - 1, 2):
        e, rest = divmod(data[i] * 256 + data[i + 1], 45 * 45)
        d, c = divmod(rest, 45)
        out += [B45[c], B45[d], B45[e]]
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += [B45[c], B45[d]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    v = [B45.index(ch) for ch in text]
    out = bytearray()
    whole = len(v) - len(v) % 3
    for i in range(0, whole, 3):
        out += (v[i] + 45 * v[i + 1] + 2025 * v[i + 2]).to_bytes(2, "big")
    if len(v) % 3 == 2:
        out.append(v[-2] + 45 * v[-1])
    return bytes(out)


def presentation(cose_bytes: bytes, salt: bytes = b"") -> str:
    """presentation.py: ``SCP1:`` + base45(COSE_Sign1 || salt)."""
    return "SCP1:" + b45encode(cose_bytes + salt)


def bare(cose_bytes: bytes) -> str:
    """verdict.py: a token alone, ``SC1:`` + base45(COSE_Sign1)."""
    return "SC1:" + b45encode(cose_bytes)


# --- the Argon2id binding (argon2-cffi, the reference implementation) ---------------------


@functools.cache
def binding(id_number: str, salt: bytes, params: BindingParameters) -> bytes:
    """binding.py: Argon2id (version 0x13) of the number trimmed and upper-cased, 32 bytes."""
    return argon2.low_level.hash_secret_raw(
        id_number.strip().upper().encode("utf-8"),
        salt,
        time_cost=params.iterations,
        memory_cost=params.memory_kib,
        parallelism=params.lanes,
        hash_len=32,
        type=argon2.low_level.Type.ID,
        version=19,
    )


# --- tokens through the real signing path -------------------------------------------------


def issued(
    *,
    status: Status = Status.REVIEW_REQUIRED,
    bound: bool = False,
    params: BindingParameters = FAST,
    derived_with: BindingParameters | None = None,
    issuer: str = ISSUER,
    bundle_expires_at: int = IAT + 2 * DAY,
) -> Verdict:
    """``issue_verdict`` at a time inside the bucket that starts at IAT, its random id then
    replaced by CTI. ``derived_with`` derives the binding with other parameters than the
    token names (a client bug)."""
    b = binding(ID_NUMBER, SALT, derived_with or params) if bound else b""
    v = issue_verdict(
        status,
        now=IAT + 123,
        issuer=issuer,
        riskset_version=VERSION,
        bundle_expires_at=bundle_expires_at,
        binding=b,
        binding_params=params if bound else None,
    )
    return replace(v, verdict_id=CTI)


def signed(verdict: Verdict, key: Ed25519Key | P256Key = KEY_A) -> bytes:
    """The COSE_Sign1 bytes ``TokenSigner`` makes for ``verdict``."""
    text = TokenSigner(key.signer()).sign(verdict)
    assert text.startswith("SC1:")
    return b45decode(text[len("SC1:") :])


def unbound_token() -> bytes:
    return signed(issued())


def bound_token() -> bytes:
    return signed(issued(bound=True))


# --- tokens by hand (RFC 9052 section 4), for what the signing path never makes ------------


def enc(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 section 4.2.1)."""
    return cbor2.dumps(value, canonical=True)


def sc_claims(
    *,
    status: int = 2,
    version: int = VERSION,
    binding_value: bytes | None = None,
    params: list[Any] | None = None,
) -> dict[int, Any]:
    sc: dict[int, Any] = {1: status, 2: version}
    if binding_value is not None:
        sc[3] = binding_value
    if params is not None:
        sc[4] = params
    return sc


def claims(
    *,
    iss: Any = ISSUER,
    exp: Any = EXP,
    iat: Any = IAT,
    cti: Any = CTI,
    sc: dict[int, Any] | None = None,
) -> dict[int, Any]:
    return {
        CLAIM_ISS: iss,
        CLAIM_EXP: exp,
        CLAIM_IAT: iat,
        CLAIM_CTI: cti,
        CLAIM_STAYCHECK: sc_claims() if sc is None else sc,
    }


def payload(**kwargs: Any) -> bytes:
    return enc(claims(**kwargs))


def protected(alg: int = ALG_EDDSA, kid: bytes = KEY_A.kid) -> bytes:
    return enc({HEADER_ALG: alg, HEADER_KID: kid})


def sig_structure(protected_bytes: bytes, payload_bytes: bytes) -> bytes:
    """RFC 9052 section 4.4, COSE_Sign1, empty external AAD."""
    return enc(["Signature1", protected_bytes, b"", payload_bytes])


def signature(
    payload_bytes: bytes,
    *,
    key: Ed25519Key | P256Key = KEY_A,
    protected_bytes: bytes | None = None,
) -> bytes:
    prot = protected(key.alg, key.kid) if protected_bytes is None else protected_bytes
    return key.sign(sig_structure(prot, payload_bytes))


def sign1(
    payload_bytes: bytes,
    *,
    key: Ed25519Key | P256Key = KEY_A,
    protected_bytes: bytes | None = None,
    sig: bytes | None = None,
) -> bytes:
    """A tagged COSE_Sign1 in its deterministic encoding, signed over what it carries
    unless ``sig`` is given."""
    prot = protected(key.alg, key.kid) if protected_bytes is None else protected_bytes
    if sig is None:
        sig = key.sign(sig_structure(prot, payload_bytes))
    return enc(cbor2.CBORTag(TAG_COSE_SIGN1, [prot, {}, payload_bytes, sig]))


def bstr(data: bytes) -> bytes:
    return enc(data)


def parts() -> list[Any]:
    """The four parts of the unbound token (protected, unprotected, payload, signature),
    by hand; tagged and encoded they are the bytes ``TokenSigner`` makes (a test checks)."""
    p = payload()
    return [protected(), {}, p, signature(p)]


def sign1_dup_iss() -> bytes:
    """Claims with ``iss`` twice (same value): a map of six pairs where five are allowed."""
    c = claims()
    pairs = [(CLAIM_ISS, c[CLAIM_ISS]), *c.items()]
    body = b"\xa6" + b"".join(enc(k) + enc(v) for k, v in pairs)
    return sign1(body)


# --- base45 mutations ---------------------------------------------------------------------


def body_of(text: str) -> str:
    return text[text.index(":") + 1 :]


def with_bad_character() -> str:
    text = presentation(unbound_token())
    i = len("SCP1:") + len(body_of(text)) // 2
    return text[:i] + "a" + text[i + 1 :]  # lower case is outside base45's alphabet


def with_bad_length() -> str:
    body = body_of(presentation(unbound_token()))
    # RFC 9285: a length of 3k + 1 characters decodes to nothing.
    body = body + "0" if len(body) % 3 == 0 else body[:-1]
    assert len(body) % 3 == 1
    return "SCP1:" + body


def with_group_out_of_range() -> str:
    body = body_of(presentation(unbound_token()))
    return "SCP1:" + ":::" + body[3:]  # 44 + 44 x 45 + 44 x 2025 = 91124 > 65535


# --- the table ----------------------------------------------------------------------------


def accepted(
    binding_result: str,
    *,
    status: str = "REVIEW_REQUIRED",
    issuer: str = ISSUER,
    issued_at: int = IAT,
    expires_at: int = EXP,
    riskset_version: int = VERSION,
) -> dict[str, Any]:
    return {
        "valid": True,
        "reason": None,
        "status": status,
        "issuer": issuer,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "riskset_version": riskset_version,
        "binding": binding_result,
    }


def refused(reason: str) -> dict[str, Any]:
    return {"valid": False, "reason": reason}


MALFORMED = refused("malformed")
BAD_SIGNATURE = refused("bad signature")
UNKNOWN_KEY = refused("unknown key")
EXPIRED = refused("expired")
MISMATCH = refused("binding mismatch")


@dataclass(frozen=True)
class Case:
    layer: str
    name: str
    description: str
    presentation: Callable[[], str]
    expected: dict[str, Any]
    jwks: Callable[[], dict[str, Any]] = jwks_a
    now: int = NOW
    subject_id: str | None = None
    no_binding_check: bool = False
    min_riskset_version: int | None = None


P1 = presentation
U = unbound_token
B = bound_token

CASES: list[Case] = [
    # --- base45 (RFC 9285) and the text prefix ---
    Case("base45", "unbound-presentation", "A well-formed unbound presentation: SCP1: + "
         "base45 of the COSE_Sign1, nothing after it.",
         lambda: P1(signed(issued(status=Status.NO_ABNORMALITY))),
         accepted("none", status="NO_ABNORMALITY")),
    Case("base45", "bare-token", "A bare token (SC1: + base45 of the COSE_Sign1) is accepted "
         "where a presentation is expected, as an unbound presentation.",
         lambda: bare(U()), accepted("none")),
    Case("base45", "bad-character", "One character replaced by a lower-case letter, which "
         "is outside base45's alphabet.", with_bad_character, MALFORMED),
    Case("base45", "bad-length", "A base45 text of 3k + 1 characters (RFC 9285 section 4.2: "
         "invalid).", with_bad_length, MALFORMED),
    Case("base45", "group-out-of-range", "A three-character group worth 91124, more than "
         "two bytes hold (RFC 9285 section 4.2: invalid).", with_group_out_of_range,
         MALFORMED),
    Case("base45", "wrong-prefix", "SCP2: instead of SCP1: (a layout this version does "
         "not know).", lambda: "SCP2:" + body_of(P1(U())), MALFORMED),
    # --- COSE_Sign1 structure (RFC 9052) and its one deterministic encoding ---
    Case("cose", "untagged", "The COSE_Sign1 array without tag 18.",
         lambda: P1(enc(parts())), MALFORMED),
    Case("cose", "wrong-tag", "Tag 17 (COSE_Mac0) instead of 18 around a valid array.",
         lambda: P1(enc(cbor2.CBORTag(TAG_COSE_MAC0, parts()))), MALFORMED),
    Case("cose", "cwt-tag-around", "The CWT tag 61 in front of tag 18 (RFC 8392 allows it; "
         "this format has tag 18 alone).",
         lambda: P1(enc(cbor2.CBORTag(TAG_CWT, cbor2.CBORTag(TAG_COSE_SIGN1, parts())))),
         MALFORMED),
    Case("cose", "array-of-three", "A three-element array: the signature left out.",
         lambda: P1(enc(cbor2.CBORTag(TAG_COSE_SIGN1, [protected(), {}, payload()]))),
         MALFORMED),
    Case("cose", "array-of-five", "A five-element array: an empty byte string after the "
         "signature.",
         lambda: P1(enc(cbor2.CBORTag(TAG_COSE_SIGN1, [*parts(), b""]))),
         MALFORMED),
    Case("cose", "long-head", "The payload's byte-string head in three bytes (0x59) where "
         "two suffice: valid CBOR, not deterministic (RFC 8949 4.2.1). The signature is "
         "valid over the payload.",
         lambda: P1(b"\xd2\x84" + bstr(protected()) + b"\xa0" + b"\x59"
                    + len(payload()).to_bytes(2, "big") + payload()
                    + bstr(signature(payload()))),
         MALFORMED),
    Case("cose", "indefinite-array", "The four-element array in indefinite-length form "
         "(0x9f ... 0xff): not deterministic.",
         lambda: P1(b"\xd2\x9f" + bstr(protected()) + b"\xa0" + bstr(payload())
                    + bstr(signature(payload())) + b"\xff"),
         MALFORMED),
    Case("cose", "indefinite-payload", "The payload as an indefinite-length byte string of "
         "two chunks (0x5f ... 0xff): not deterministic.",
         lambda: P1(b"\xd2\x84" + bstr(protected()) + b"\xa0" + b"\x5f"
                    + bstr(payload()[:10]) + bstr(payload()[10:]) + b"\xff"
                    + bstr(signature(payload()))),
         MALFORMED),
    Case("cose", "trailing-byte", "A bare token with one byte (0x00) after the COSE_Sign1.",
         lambda: bare(U() + b"\x00"), MALFORMED),
    Case("cose", "unprotected-not-empty", "The kid repeated in the unprotected header; this "
         "format's unprotected header is empty.",
         lambda: P1(enc(cbor2.CBORTag(TAG_COSE_SIGN1, [protected(), {HEADER_KID: KEY_A.kid},
                                                       payload(), signature(payload())]))),
         MALFORMED),
    Case("cose", "protected-not-deterministic", "The protected header map with kid (4) "
         "before alg (1), signed as it is: keys not in deterministic order.",
         lambda: P1(sign1(payload(), protected_bytes=cbor2.dumps(
             {HEADER_KID: KEY_A.kid, HEADER_ALG: ALG_EDDSA}))),
         MALFORMED),
    Case("cose", "protected-extra-label", "A content type (3) in the protected header "
         "beside alg and kid: the header holds exactly alg and kid.",
         lambda: P1(sign1(payload(), protected_bytes=enc(
             {HEADER_ALG: ALG_EDDSA, HEADER_CTY: 61, HEADER_KID: KEY_A.kid}))),
         MALFORMED),
    # --- the signature ---
    Case("signature", "flipped-bit", "The last bit of the signature flipped.",
         lambda: P1(U()[:-1] + bytes([U()[-1] ^ 0x01])), BAD_SIGNATURE),
    Case("signature", "altered-status", "The status changed from 2 (review required) to 1 "
         "(no abnormality) after signing.",
         lambda: P1(sign1(payload(sc=sc_claims(status=1)), sig=signature(payload()))),
         BAD_SIGNATURE),
    Case("signature", "other-key-same-kid", "Signed by another Ed25519 key (RFC 8032 test "
         "2) under the kid of the trusted key.",
         lambda: P1(sign1(payload(), key=KEY_B, protected_bytes=protected())),
         BAD_SIGNATURE),
    Case("signature", "empty-signature", "A signature of zero bytes.",
         lambda: P1(sign1(payload(), sig=b"")), BAD_SIGNATURE),
    Case("signature", "over-payload-alone", "Signed over the payload bytes instead of the "
         "Sig_structure (RFC 9052 section 4.4).",
         lambda: P1(sign1(payload(), sig=KEY_A.sign(payload()))), BAD_SIGNATURE),
    # --- the claims map (allowlist, types, deterministic encoding), validly signed ---
    Case("claims", "missing-cti", "No verdict id (7).",
         lambda: P1(sign1(enc({k: v for k, v in claims().items() if k != CLAIM_CTI}))),
         MALFORMED),
    Case("claims", "missing-staycheck-claims", "No StayCheck claims map (-65537).",
         lambda: P1(sign1(enc({k: v for k, v in claims().items() if k != CLAIM_STAYCHECK}))),
         MALFORMED),
    Case("claims", "extra-claim", "An nbf claim (5) beside the allowed ones.",
         lambda: P1(sign1(enc({**claims(), CLAIM_NBF: IAT}))), MALFORMED),
    Case("claims", "binding-without-parameters", "A binding (3) without its Argon2id "
         "parameters (4); the salt follows in the presentation.",
         lambda: P1(sign1(payload(sc=sc_claims(binding_value=bytes(32)))), SALT),
         MALFORMED),
    Case("claims", "binding-of-31-bytes", "A binding of 31 bytes instead of 32.",
         lambda: P1(sign1(payload(sc=sc_claims(binding_value=bytes(31),
                                               params=FAST.to_cbor()))), SALT),
         MALFORMED),
    Case("claims", "exp-as-float", "exp as a floating-point number (its deterministic "
         "encoding) instead of an integer.",
         lambda: P1(sign1(payload(exp=float(EXP)))), MALFORMED),
    Case("claims", "cti-of-8-bytes", "A verdict id of 8 bytes instead of 16.",
         lambda: P1(sign1(payload(cti=CTI[:8]))), MALFORMED),
    Case("claims", "status-unknown", "Status 3, which names nothing (1 no abnormality, 2 "
         "review required).",
         lambda: P1(sign1(payload(sc=sc_claims(status=3)))), MALFORMED),
    Case("claims", "map-not-deterministic", "The claims map with -65537 first: keys not in "
         "deterministic (bytewise) order.",
         lambda: P1(sign1(cbor2.dumps(
             {CLAIM_STAYCHECK: sc_claims(), **{k: v for k, v in claims().items()
                                               if k != CLAIM_STAYCHECK}}))),
         MALFORMED),
    Case("claims", "staycheck-map-not-deterministic", "The StayCheck claims map with the "
         "bundle version (2) before the status (1).",
         lambda: P1(sign1(cbor2.dumps(claims(sc={2: VERSION, 1: 2})))), MALFORMED),
    Case("claims", "duplicate-claim", "iss twice, with the same value: a map of six pairs.",
         lambda: P1(sign1_dup_iss()), MALFORMED),
    Case("claims", "params-memory-below-floor", "Argon2id parameters [8192, 2, 1]: memory "
         "under the 19 MiB floor.",
         lambda: P1(sign1(payload(sc=sc_claims(binding_value=bytes(32),
                                               params=[8192, 2, 1]))), SALT),
         MALFORMED),
    Case("claims", "params-cost-below-floor", "Argon2id parameters [19456, 1, 1]: memory x "
         "passes under the floor of 38 MiB.",
         lambda: P1(sign1(payload(sc=sc_claims(binding_value=bytes(32),
                                               params=[19456, 1, 1]))), SALT),
         MALFORMED),
    Case("claims", "params-memory-over-ceiling", "Argon2id parameters [524288, 2, 1]: 512 "
         "MiB, over the 256 MiB a token may make a verifier spend.",
         lambda: P1(sign1(payload(sc=sc_claims(binding_value=bytes(32),
                                               params=[524288, 2, 1]))), SALT),
         MALFORMED),
    Case("claims", "params-two-elements", "Argon2id parameters [19456, 2]: lanes missing.",
         lambda: P1(sign1(payload(sc=sc_claims(binding_value=bytes(32),
                                               params=[19456, 2]))), SALT),
         MALFORMED),
    Case("claims", "iss-five-digits", "iss \"11000\": five digits.",
         lambda: P1(sign1(payload(iss="11000"))), MALFORMED),
    Case("claims", "iss-fullwidth-digits", "iss of six full-width digits (U+FF11 U+FF11 "
         "U+FF10 ...): digits, but not ASCII.",
         lambda: P1(sign1(payload(iss="\uff11\uff11\uff10\uff10\uff10\uff10"))), MALFORMED),
    Case("claims", "riskset-version-below-minimum", "Bundle version 7 where the verifier "
         "asks for at least 8.",
         lambda: P1(U()), refused("stale bundle version"), min_riskset_version=VERSION + 1),
    Case("claims", "riskset-version-at-minimum", "Bundle version 7 where the verifier asks "
         "for at least 7.",
         lambda: P1(U()), accepted("none"), min_riskset_version=VERSION),
    # --- times: now in [iat - 120 s, exp + 120 s]; iat < exp <= iat + 24 h ---
    Case("times", "now-at-iat", "Checked at the issue time.",
         lambda: P1(U()), accepted("none"), now=IAT),
    Case("times", "now-at-iat-minus-skew", "Checked 120 s before the issue time: the "
         "clock skew allowed.",
         lambda: P1(U()), accepted("none"), now=IAT - SKEW),
    Case("times", "issued-in-the-future", "Checked 121 s before the issue time.",
         lambda: P1(U()), EXPIRED, now=IAT - SKEW - 1),
    Case("times", "now-at-exp-plus-skew", "Checked 120 s after the expiry.",
         lambda: P1(U()), accepted("none"), now=EXP + SKEW),
    Case("times", "expired-beyond-skew", "Checked 121 s after the expiry.",
         lambda: P1(U()), EXPIRED, now=EXP + SKEW + 1),
    Case("times", "exp-at-bundle-expiry", "A verdict whose exp is its bundle's expiry, 6 h "
         "after iat (never past the bundle's expiry), checked at iat + 5 h.",
         lambda: P1(signed(issued(bundle_expires_at=IAT + 6 * HOUR))),
         accepted("none", expires_at=IAT + 6 * HOUR), now=IAT + 5 * HOUR),
    Case("times", "lifetime-over-24h", "exp = iat + 24 h + 1 s, checked within it.",
         lambda: P1(signed(Verdict(CTI, Status.REVIEW_REQUIRED, ISSUER, IAT, EXP + 1,
                                   VERSION))),
         MALFORMED),
    Case("times", "lifetime-zero", "exp = iat, checked at iat.",
         lambda: P1(signed(Verdict(CTI, Status.REVIEW_REQUIRED, ISSUER, IAT, IAT,
                                   VERSION))),
         MALFORMED, now=IAT),
    # --- the subject binding (Argon2id of the ID number with the presentation's salt) ---
    Case("binding", "right-id", "A bound presentation checked with the bearer's ID number.",
         lambda: P1(B(), SALT), accepted("checked"), subject_id=ID_NUMBER),
    Case("binding", "right-id-lowercase-x", "The same, the check character x written in "
         "lower case (numbers are upper-cased before hashing).",
         lambda: P1(B(), SALT), accepted("checked"), subject_id=ID_NUMBER_LOWER_X),
    Case("binding", "default-parameters", "Bound with the default parameters [65536, 2, "
         "4], checked with the bearer's ID number.",
         lambda: P1(signed(issued(bound=True, params=DEFAULT)), SALT), accepted("checked"),
         subject_id=ID_NUMBER),
    Case("binding", "wrong-id", "Checked with another ID number.",
         lambda: P1(B(), SALT), MISMATCH, subject_id=OTHER_ID_NUMBER),
    Case("binding", "wrong-salt", "The presentation carries another salt than the binding "
         "was derived with.",
         lambda: P1(B(), OTHER_SALT), MISMATCH, subject_id=ID_NUMBER),
    Case("binding", "parameters-not-those-used", "The token names [19456, 2, 1] but the "
         "binding was derived with [19456, 3, 1].",
         lambda: P1(signed(issued(bound=True, derived_with=BindingParameters(19456, 3, 1))),
                    SALT),
         MISMATCH, subject_id=ID_NUMBER),
    Case("binding", "no-binding-check", "A bound presentation, the verifier explicitly "
         "choosing not to check identity.",
         lambda: P1(B(), SALT), accepted("not checked"), no_binding_check=True),
    Case("binding", "identity-not-checked", "A bound presentation with neither an ID number "
         "nor the explicit choice not to check: refused, never read as checked.",
         lambda: P1(B(), SALT), refused("identity not checked")),
    Case("binding", "bound-without-salt", "A bound token in a presentation without its "
         "salt.",
         lambda: P1(B()), MALFORMED, subject_id=ID_NUMBER),
    Case("binding", "bound-salt-too-long", "A bound token followed by 17 bytes (the salt "
         "and one more).",
         lambda: P1(B(), SALT + b"\x00"), MALFORMED, subject_id=ID_NUMBER),
    Case("binding", "bound-bare-token", "A bound token alone (SC1:), no salt shown, checked "
         "with the bearer's ID number: nothing to derive the binding with.",
         lambda: bare(B()), MISMATCH, subject_id=ID_NUMBER),
    Case("binding", "unbound-with-salt", "An unbound token followed by 16 bytes of salt.",
         lambda: P1(U(), SALT), MALFORMED),
    Case("binding", "unbound-with-subject-id", "An unbound presentation checked with an ID "
         "number: a token bound to no one cannot pass an identity check.",
         lambda: P1(U()), MISMATCH, subject_id=ID_NUMBER),
    # --- keys: kid, algorithm, validity window at iat, issuer ---
    Case("keys", "key-nbf-after-iat", "The key's nbf is 1 s after the token's iat: the key "
         "could not have signed it.",
         lambda: P1(U()), EXPIRED, jwks=lambda: jwks(KEY_A.jwk(nbf=IAT + 1))),
    Case("keys", "key-exp-before-iat", "The key's exp is 1 s before the token's iat.",
         lambda: P1(U()), EXPIRED, jwks=lambda: jwks(KEY_A.jwk(exp=IAT - 1))),
    Case("keys", "key-nbf-at-iat", "The key's nbf is the token's iat.",
         lambda: P1(U()), accepted("none"), jwks=lambda: jwks(KEY_A.jwk(nbf=IAT))),
    Case("keys", "key-expired-since-iat", "The key expired 60 s after iat, before now: a "
         "key past its exp still verifies what it signed while valid.",
         lambda: P1(U()), accepted("none"), jwks=lambda: jwks(KEY_A.jwk(exp=IAT + 60))),
    Case("keys", "kid-not-in-set", "Signed by key A; the key set holds only key B.",
         lambda: P1(U()), UNKNOWN_KEY, jwks=lambda: jwks(KEY_B.jwk())),
    Case("keys", "second-key-of-two", "Signed by key B; the key set holds keys A and B.",
         lambda: P1(signed(issued(), KEY_B)), accepted("none"),
         jwks=lambda: jwks(KEY_A.jwk(), KEY_B.jwk())),
    Case("keys", "es256-header-on-ed25519-key", "An Ed25519 signature by the trusted key, "
         "under a protected header naming ES256 (-7): the key's algorithm decides.",
         lambda: P1(sign1(payload(), protected_bytes=protected(ALG_ES256, KEY_A.kid))),
         BAD_SIGNATURE),
    Case("keys", "es256-issuer", "An ES256 issuer (P-256 key, RFC 6979 deterministic "
         "ECDSA, signature r || s).",
         lambda: P1(signed(issued(), KEY_P)), accepted("none"),
         jwks=lambda: jwks(KEY_P.jwk())),
    Case("keys", "eddsa-header-on-p256-key", "An ES256 signature by the trusted P-256 key "
         "under a protected header naming EdDSA (-8).",
         lambda: P1(sign1(payload(), key=KEY_P,
                          protected_bytes=protected(ALG_EDDSA, KEY_P.kid))),
         BAD_SIGNATURE, jwks=lambda: jwks(KEY_P.jwk())),
    Case("keys", "issuer-not-the-key-sets", "iss 120000, validly signed by a key of the set "
         "published for issuer 110000.",
         lambda: P1(signed(issued(issuer=OTHER_ISSUER))), UNKNOWN_KEY),
    Case("keys", "revoked-key", "Signed by a key its issuer published as revoked: nothing "
         "it signed is accepted, whatever the signing time.",
         lambda: P1(U()), refused("revoked key"),
         jwks=lambda: jwks(KEY_A.jwk(revoked=True))),
]  # fmt: skip

LAYERS = ("base45", "cose", "signature", "claims", "times", "binding", "keys")


def file_names() -> list[str]:
    """``<layer>-<nn>-<name>.json``, numbered within each layer in table order."""
    counts: dict[str, int] = {}
    names = []
    for case in CASES:
        counts[case.layer] = counts.get(case.layer, 0) + 1
        names.append(f"{case.layer}-{counts[case.layer]:02d}-{case.name}.json")
    return names


def case_json(case: Case) -> dict[str, Any]:
    return {
        "description": case.description,
        "layer": case.layer,
        "presentation": case.presentation(),
        "jwks": case.jwks(),
        "now": case.now,
        "subject_id": case.subject_id,
        "no_binding_check": case.no_binding_check,
        "min_riskset_version": case.min_riskset_version,
        "expected": case.expected,
    }


def build() -> dict[str, bytes]:
    """Every case file's name and bytes."""
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
    assert {c.layer for c in CASES} == set(LAYERS)
    return {
        name: (json.dumps(case_json(case), indent=2) + "\n").encode("utf-8")
        for name, case in zip(file_names(), CASES, strict=True)
    }


def write(folder: pathlib.Path = CASES_DIR) -> list[pathlib.Path]:
    """Write the case files into ``folder``, removing case files the table no longer has."""
    files = build()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def differences(folder: pathlib.Path = CASES_DIR) -> list[str]:
    """Names of case files that are missing, extra or different in ``folder``."""
    files = build()
    present = {p.name for p in folder.glob("*.json")}
    out = sorted(present - files.keys())
    for name, data in files.items():
        path = folder / name
        if not path.exists() or path.read_bytes() != data:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences()
        for name in diff:
            print(f"differs: {name}", file=sys.stderr)
        return 1 if diff else 0
    paths = write()
    print(f"wrote {len(paths)} cases to {CASES_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

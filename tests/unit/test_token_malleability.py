"""Malleability: a verdict token has exactly one byte string (issue 13, finding 5).

An outside attack run re-encoded the outer CBOR of genuine tokens (a longer tag head, an
indefinite-length array or map, chunked byte strings, a tag-55799 wrapper) and they still
verified; from a trusted signer, claims with a duplicated key, an indefinite-length map or
trailing bytes were read as the last value won. RFC 8949 section 4.2 (core deterministic
encoding) gives every value one encoding: definite lengths, the shortest head, keys in order,
nothing after the item. The verifier accepts that encoding only. Every byte string below is
written by hand from RFC 8949's major types, not produced by the encoder under test.
"""

from __future__ import annotations

from collections.abc import Callable

import cbor2
import pytest
from staycheck.geo.errors import MalformedError
from staycheck.geo.itinerary import Status
from staycheck.trust import cose
from staycheck.trust.base45 import b45encode
from staycheck.trust.keys import Ed25519Signer, KeySet, VerdictKeySet
from staycheck.trust.verdict import TOKEN_PREFIX, TokenSigner, decode_token, issue_verdict
from staycheck.trust.verifier import NO_BINDING_CHECK, reason, verify_token

from tests.helpers import DAY, NOW

ISSUER = "110000"
IAT = NOW - NOW % 300  # a 5-minute bucket, as the issuer rounds


def _head(major: int, n: int) -> bytes:
    """RFC 8949 section 3: the shortest head of major type ``major`` with argument ``n``."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def _bstr(data: bytes) -> bytes:
    return _head(2, len(data)) + data


@pytest.fixture(scope="module")
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate()


@pytest.fixture(scope="module")
def keys(signer: Ed25519Signer) -> VerdictKeySet:
    return VerdictKeySet(KeySet([signer.public_key], issuer=ISSUER))


@pytest.fixture(scope="module")
def genuine(signer: Ed25519Signer) -> str:
    verdict = issue_verdict(
        Status.REVIEW_REQUIRED,
        now=NOW,
        issuer=ISSUER,
        riskset_version=3,
        bundle_expires_at=NOW + 2 * DAY,
    )
    return TokenSigner(signer).sign(verdict)


def _parts(token: str) -> tuple[bytes, bytes, bytes]:
    sign1, _ = decode_token(token)
    return sign1.protected_bytes, sign1.payload, sign1.signature


def _token(cose_bytes: bytes) -> str:
    return TOKEN_PREFIX + b45encode(cose_bytes)


def _refused(token: str, keys: VerdictKeySet) -> str:
    with pytest.raises(MalformedError) as e:
        verify_token(token, keys, now=NOW, identity=NO_BINDING_CHECK)
    return reason(e.value)


def test_the_genuine_token_is_the_deterministic_encoding(genuine, keys):
    protected, payload, signature = _parts(genuine)
    by_hand = b"\xd2\x84" + _bstr(protected) + b"\xa0" + _bstr(payload) + _bstr(signature)
    assert _token(by_hand) == genuine
    assert (
        verify_token(genuine, keys, now=NOW, identity=NO_BINDING_CHECK).status
        is Status.REVIEW_REQUIRED
    )


# Outer re-encodings of a genuine token: same parts, same signature, other bytes.
OUTER: list[tuple[str, Callable[[bytes, bytes, bytes], bytes]]] = [
    (
        "tag_18_with_a_one_byte_argument",  # 0xd8 0x12 instead of 0xd2
        lambda p, m, s: b"\xd8\x12\x84" + _bstr(p) + b"\xa0" + _bstr(m) + _bstr(s),
    ),
    (
        "indefinite_length_array",  # 0x9f ... 0xff
        lambda p, m, s: b"\xd2\x9f" + _bstr(p) + b"\xa0" + _bstr(m) + _bstr(s) + b"\xff",
    ),
    (
        "indefinite_length_unprotected_map",  # 0xbf 0xff instead of 0xa0
        lambda p, m, s: b"\xd2\x84" + _bstr(p) + b"\xbf\xff" + _bstr(m) + _bstr(s),
    ),
    (
        "chunked_payload",  # 0x5f, two chunks, 0xff
        lambda p, m, s: (
            b"\xd2\x84" + _bstr(p) + b"\xa0"
            + b"\x5f" + _bstr(m[:5]) + _bstr(m[5:]) + b"\xff" + _bstr(s)
        ),
    ),
    (
        "signature_with_a_longer_head",  # 0x59 0x00 0x40 instead of 0x58 0x40
        lambda p, m, s: b"\xd2\x84" + _bstr(p) + b"\xa0" + _bstr(m) + b"\x59\x00\x40" + s,
    ),
    (
        "self_described_cbor_tag_55799",  # 0xd9 0xd9 0xf7 wrapper
        lambda p, m, s: b"\xd9\xd9\xf7\xd2\x84" + _bstr(p) + b"\xa0" + _bstr(m) + _bstr(s),
    ),
    (
        "protected_header_as_an_indefinite_map",
        lambda p, m, s: (
            b"\xd2\x84" + _bstr(b"\xbf" + p[1:] + b"\xff") + b"\xa0" + _bstr(m) + _bstr(s)
        ),
    ),
]  # fmt: skip


@pytest.mark.parametrize("encode", [o[1] for o in OUTER], ids=[o[0] for o in OUTER])
def test_a_reencoded_genuine_token_is_refused(genuine, keys, encode):
    protected, payload, signature = _parts(genuine)
    other = encode(protected, payload, signature)
    assert cbor2.loads(other) is not None  # still well-formed CBOR, just not the one form
    assert _refused(_token(other), keys) == "malformed"


def _signed(signer: Ed25519Signer, claims_bytes: bytes) -> str:
    """A COSE_Sign1 over ``claims_bytes`` by the trusted key, framed deterministically."""
    protected = cose.encode_protected({cose.HEADER_ALG: signer.alg, cose.HEADER_KID: signer.kid})
    signature = signer.sign(cose.sig_structure(protected, claims_bytes))
    return _token(b"\xd2\x84" + _bstr(protected) + b"\xa0" + _bstr(claims_bytes) + _bstr(signature))


def _claim_entries(status: int) -> list[bytes]:
    """The five claims as encoded (key, value) pairs, in deterministic order."""
    sc = _head(5, 2) + b"\x01" + _head(0, status) + b"\x02" + b"\x03"  # {1: status, 2: 3}
    return [
        b"\x01" + _head(3, len(ISSUER)) + ISSUER.encode(),  # 1 iss
        b"\x04" + b"\x1a" + (IAT + DAY).to_bytes(4, "big"),  # 4 exp
        b"\x06" + b"\x1a" + IAT.to_bytes(4, "big"),  # 6 iat
        b"\x07" + _bstr(bytes(16)),  # 7 cti
        b"\x3a\x00\x01\x00\x00" + sc,  # -65537 StayCheck claims
    ]


def test_hand_encoded_claims_in_the_one_form_verify(signer, keys):
    """The control for the rows below: the same bytes written by hand are accepted."""
    claims = _head(5, 5) + b"".join(_claim_entries(int(Status.NO_ABNORMALITY)))
    verdict = verify_token(_signed(signer, claims), keys, now=NOW, identity=NO_BINDING_CHECK)
    assert verdict.status is Status.NO_ABNORMALITY


def _duplicated_status() -> bytes:
    # StayCheck claims {1: 2, 2: 3, 1: 1}: review required, then no abnormality.
    entries = _claim_entries(int(Status.REVIEW_REQUIRED))
    sc = _head(5, 3) + b"\x01\x02" + b"\x02\x03" + b"\x01\x01"
    return _head(5, 5) + b"".join(entries[:4]) + b"\x3a\x00\x01\x00\x00" + sc


def _duplicated_claim() -> bytes:
    entries = _claim_entries(int(Status.REVIEW_REQUIRED))
    late = _claim_entries(int(Status.NO_ABNORMALITY))[4]
    return _head(5, 6) + b"".join(entries) + late


CLAIMS: list[tuple[str, Callable[[], bytes]]] = [
    ("duplicated_key_in_staycheck_claims_last_wins", _duplicated_status),
    ("duplicated_staycheck_claim_last_wins", _duplicated_claim),
    (
        "indefinite_length_claims_map",
        lambda: b"\xbf" + b"".join(_claim_entries(int(Status.NO_ABNORMALITY))) + b"\xff",
    ),
    (
        "trailing_bytes_after_the_claims",
        lambda: _head(5, 5) + b"".join(_claim_entries(int(Status.NO_ABNORMALITY))) + b"\x00",
    ),
    (
        "claims_keys_out_of_order",
        lambda: _head(5, 5) + b"".join(reversed(_claim_entries(int(Status.NO_ABNORMALITY)))),
    ),
    (
        "iat_with_a_longer_head",  # 0x1b + 8 bytes instead of 0x1a + 4 bytes
        lambda: (
            _head(5, 5)
            + b"".join(
                e if not e.startswith(b"\x06") else b"\x06\x1b" + IAT.to_bytes(8, "big")
                for e in _claim_entries(int(Status.NO_ABNORMALITY))
            )
        ),
    ),
]


@pytest.mark.parametrize("claims", [c[1] for c in CLAIMS], ids=[c[0] for c in CLAIMS])
def test_claims_not_in_the_one_form_are_refused_even_from_a_trusted_signer(signer, keys, claims):
    assert _refused(_signed(signer, claims()), keys) == "malformed"

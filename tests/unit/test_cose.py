"""staycheck.trust.cose: the framer used on the signing hot path gives exactly the bytes of the
plain
RFC 9052 construction (cbor2 encoding the whole arrays)."""

from __future__ import annotations

import cbor2
import pytest
from staycheck.trust import cose


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_framer_matches_the_plain_encoding(size):
    protected = cose.encode_protected({cose.HEADER_ALG: cose.ALG_EDDSA, cose.HEADER_KID: b"k" * 8})
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    signature = b"\x07" * 64
    framer = cose.Sign1Framer(protected)
    # Sig_structure = ["Signature1", protected, external_aad = h'', payload] (RFC 9052 4.4).
    assert framer.to_be_signed(payload) == cbor2.dumps(["Signature1", protected, b"", payload])
    expected = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    assert framer.message(payload, signature) == expected
    assert cose.decode_sign1(expected, max_size=10**6).payload == payload


@pytest.mark.parametrize(
    ("length", "head"),
    [(0, b"\x40"), (23, b"\x57"), (24, b"\x58\x18"), (256, b"\x59\x01\x00"),
     (65536, b"\x5a\x00\x01\x00\x00")],
)  # fmt: skip
def test_bstr_header_is_the_shortest_cbor_head(length, head):
    # RFC 8949 3.1: major type 2; lengths < 24 inline, then 1, 2, 4-byte arguments.
    assert cose.bstr_header(length) == head


@pytest.mark.parametrize("binding", [b"", bytes(range(32))])
def test_verdict_claims_are_encoded_deterministically(binding):
    # Signing encodes the claims without cbor2's canonical mode, relying on their order;
    # the bytes must be those of RFC 8949 section 4.2.1 deterministic encoding.
    from staycheck.geo.itinerary import Status
    from staycheck.trust.binding import BindingParameters
    from staycheck.trust.verdict import issue_verdict

    verdict = issue_verdict(
        Status.REVIEW_REQUIRED,
        now=1_795_000_123,
        issuer="110000",
        riskset_version=2**40,
        bundle_expires_at=1_795_100_000,
        binding=binding,
        binding_params=BindingParameters() if binding else None,
    )
    claims = verdict.claims()
    assert cbor2.dumps(claims) == cbor2.dumps(claims, canonical=True)

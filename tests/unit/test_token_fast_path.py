"""The verifier's hand-written readers (issue 15) accept nothing the general decoder refuses.

``verify_token`` reads a token of the one shape valid tokens have by hand: the COSE_Sign1
framing (``cose.split_sign1``), the claims (``verdict._read_claims``) and the Sig_structure
cut from the token's own bytes (``verdict.decode_for_verification``). Everything else goes
through the general decoder (cbor2, the deterministic-encoding checks, the allowlist), which
is the code that refused it before the readers existed, so a refusal keeps its error type,
its message and its reason. The rules:

- the readers do run on genuine tokens (else every test below could only pass);
- whatever they accept, the general decoder accepts with the same parts and the same
  verdict: checked on every one-byte substitution, insertion, deletion and truncation of
  genuine tokens and claims, and on random deterministic claims (hypothesis);
- each way of leaving the shape (one row per deviation) is refused by the readers, and by
  the general decoder too unless it is a valid encoding outside the readers' shape (those
  rows are marked: the general decoder then accepts them, as before);
- base45 decodes exactly as RFC 9285 section 4.2 says, for every group of three and every
  trailing pair.

Expected values come from RFC 8949 (major types, shortest heads), RFC 9052 section 4.4
(Sig_structure), RFC 9285 and docs/formats.md; the reference decoding is the general path
of the code under test with the readers switched off, plus cbor2 for the Sig_structure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from staycheck.geo.errors import BadSignatureError, MalformedError
from staycheck.geo.itinerary import Status
from staycheck.trust import base45, cose, verdict
from staycheck.trust.binding import BindingParameters
from staycheck.trust.keys import Ed25519Signer, KeySet
from staycheck.trust.verdict import TokenSigner, Verdict, decode_for_verification, decode_token
from staycheck.trust.verifier import NO_BINDING_CHECK, reason, verify_token

from tests.helpers import DAY, NOW

ISSUER = "110000"
PARAMS = BindingParameters(memory_kib=65536, iterations=2, lanes=4)
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"  # RFC 9285, table 1


@pytest.fixture(scope="module")
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate()


def _token(signer: Ed25519Signer, *, bound: bool, version: int = 7) -> str:
    v = verdict.issue_verdict(
        Status.REVIEW_REQUIRED if bound else Status.NO_ABNORMALITY,
        now=NOW,
        issuer=ISSUER,
        riskset_version=version,
        bundle_expires_at=NOW + 2 * DAY,
        binding=bytes(range(32)) if bound else b"",
        binding_params=PARAMS if bound else None,
    )
    return TokenSigner(signer).sign(v)


@pytest.fixture(scope="module")
def tokens(signer: Ed25519Signer) -> list[str]:
    """Bound and unbound, with bundle versions of every head length (1, 2, 3, 5, 9 bytes)."""
    return [
        _token(signer, bound=bound, version=version)
        for bound in (True, False)
        for version in (1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1)
    ]


@contextlib.contextmanager
def readers_off() -> Iterator[None]:
    """Switch the hand-written readers off: every token takes the general path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cose, "split_sign1", lambda data: None)
        mp.setattr(verdict, "_read_claims", lambda payload: None)
        yield


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as e:
        return ("raises", type(e), str(e))


def _reference(token: str | bytes) -> Any:
    """What decoding gives with the readers off, the Sig_structure written by cbor2."""

    def decode() -> Any:
        sign1, v = decode_token(token)
        tbs = cbor2.dumps(["Signature1", sign1.protected_bytes, b"", sign1.payload])
        return sign1.kid, sign1.alg, sign1.signature, tbs, v

    with readers_off():
        return _outcome(decode)


def _split_as_sign1(data: bytes) -> cose.Sign1 | None:
    parts = cose.split_sign1(data)
    if parts is None:
        return None
    end, alg, kid, start, stop, signature = parts
    assert data[2:end] == cose.bstr_header(end - 3) + data[3:end]
    assert data[end + 1 : stop] == cose.bstr_header(stop - start) + data[start:stop]
    return cose.Sign1(data[3:end], {1: alg, 4: kid}, data[start:stop], signature)


def _check_sign1(data: bytes) -> bool:
    """The rule for one input: the reader accepts only what the general decoder accepts,
    with equal parts. True when the reader accepted."""
    fast = _split_as_sign1(data)
    if fast is None:
        return False
    assert cose._decode_sign1_general(data) == fast
    return True


def _check_claims(payload: bytes) -> bool:
    fast = verdict._read_claims(payload)
    if fast is None:
        return False
    assert verdict._decode_claims_general(payload) == fast
    return True


def _variants(data: bytes) -> Iterator[bytes]:
    """Every one-byte substitution, deletion and insertion, and every truncation."""
    for i in range(len(data)):
        for b in range(256):
            if b != data[i]:
                yield data[:i] + bytes([b]) + data[i + 1 :]
        yield data[:i] + data[i + 1 :]
        yield data[:i]
        for b in (0x00, 0x01, 0x18, 0x40, 0x58, 0xA0, 0xFF):
            yield data[:i] + bytes([b]) + data[i:]


# --- the readers run, and agree with the general path ------------------------------------


def test_genuine_tokens_take_the_hand_written_path(tokens):
    for token in tokens:
        data = base45.b45decode(token[4:])
        assert _check_sign1(data)
        payload = decode_token(token)[0].payload
        assert _check_claims(payload)
        assert ("ok", decode_for_verification(token)) == _reference(token)


def test_the_sig_structure_is_rfc_9052s(tokens):
    # RFC 9052 section 4.4: ["Signature1", body_protected, external_aad = h'', payload].
    for token in tokens:
        sign1, _ = decode_token(token)
        expected = cbor2.dumps(["Signature1", sign1.protected_bytes, b"", sign1.payload])
        assert decode_for_verification(token)[3] == expected
        assert sign1.to_be_signed() == expected


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_sig_structure_is_cbor2s_encoding(size):
    protected = cose.encode_protected({cose.HEADER_ALG: cose.ALG_EDDSA, cose.HEADER_KID: b"k" * 8})
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert cose.sig_structure(protected, payload) == cbor2.dumps(
        ["Signature1", protected, b"", payload]
    )


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "unbound"])
def test_no_one_byte_change_of_the_cose_bytes_is_read_otherwise(signer, bound):
    data = base45.b45decode(_token(signer, bound=bound)[4:])
    accepted = [v for v in _variants(data) if _check_sign1(v)]
    # Only bytes inside the opaque payload, kid and signature (and the alg value among the
    # one-byte integers) may change and still frame; every framing byte is fixed.
    assert accepted, "the variants inside the opaque byte strings still frame"


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "unbound"])
def test_no_one_byte_change_of_the_claims_is_read_otherwise(signer, bound):
    payload = decode_token(_token(signer, bound=bound))[0].payload
    accepted = sum(_check_claims(v) for v in _variants(payload))
    assert accepted > 0  # e.g. another cti byte or another iss digit


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "unbound"])
def test_every_changed_cose_byte_decodes_as_the_general_path_decodes(signer, bound):
    """Same result or same error (type and message) as with the readers off."""
    data = base45.b45decode(_token(signer, bound=bound)[4:])
    for i in range(len(data)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            variant = data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]
            assert _outcome(lambda v=variant: decode_for_verification(v)) == _reference(variant)
        for variant in (data[:i], data[:i] + b"\x00" + data[i:], data[:i] + data[i + 1 :]):
            assert _outcome(lambda v=variant: decode_for_verification(v)) == _reference(variant)


def test_every_changed_character_decodes_as_the_general_path_decodes(signer):
    token = _token(signer, bound=True)
    for i in range(len(token)):
        for c in ("0", "A", ":", "a", " "):
            variant = token[:i] + c + token[i + 1 :]
            assert _outcome(lambda v=variant: decode_for_verification(v)) == _reference(variant)


# --- random deterministic claims (hypothesis) ---------------------------------------------

# Integers at and around every head boundary of RFC 8949 section 3 and the 2^63 limit.
EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
uints = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
values = st.one_of(
    uints,
    st.integers(-(2**64), -1),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.booleans(),
    st.none(),
    st.lists(uints, max_size=4),
)


@st.composite
def valid_claims(draw: st.DrawFn) -> dict[int, Any]:
    """Claims from the valid domain, times and versions at every head boundary."""
    sc: dict[int, Any] = {1: draw(st.sampled_from([1, 2])), 2: draw(uints)}
    if draw(st.booleans()):
        sc[3] = draw(st.binary(min_size=32, max_size=32))
        sc[4] = [
            draw(st.sampled_from([19455, 19456, 65536, 131072, 262144, 262145]) | uints),
            draw(st.sampled_from([0, 1, 2, 3, 16, 17]) | uints),
            draw(st.sampled_from([0, 1, 4, 16, 17]) | uints),
        ]
    return {
        1: draw(st.text("0123456789", min_size=6, max_size=6)),
        4: draw(st.integers(65536, 2**32 - 1) | uints),
        6: draw(st.integers(65536, 2**32 - 1) | uints),
        7: draw(st.binary(min_size=16, max_size=16)),
        -65537: sc,
    }


@st.composite
def hostile_claims(draw: st.DrawFn) -> dict[int, Any]:
    """Valid claims with any value replaced by a value of another type, and keys dropped."""
    c = draw(valid_claims())
    for key in draw(st.lists(st.sampled_from([1, 4, 6, 7]), max_size=2)):
        c[key] = draw(values)
    sc = c[-65537]
    for key in draw(st.lists(st.sampled_from(sorted(sc)), max_size=2)):
        sc[key] = draw(values)
    for key in draw(st.lists(st.sampled_from([1, 4, 6, 7, -65537]), max_size=1)):
        del c[key]
    return c


def _compare_claims(c: dict[int, Any]) -> None:
    payload = cbor2.dumps(c, canonical=True)
    general = _outcome(lambda: verdict._decode_claims_general(payload))
    fast = verdict._read_claims(payload)
    if fast is not None:
        assert general == ("ok", fast)
    elif general[0] == "ok":
        # The reader leaves valid claims to the general path only outside its shape: an exp
        # or iat that does not take a four-byte head (before 65 536 or from 2^32).
        assert not (65536 <= c[4] < 2**32 and 65536 <= c[6] < 2**32)


@settings(max_examples=600, deadline=None)
@given(valid_claims())
def test_random_valid_claims_read_as_the_general_path_reads_them(c):
    _compare_claims(c)


@settings(max_examples=400, deadline=None)
@given(hostile_claims())
def test_random_hostile_claims_read_as_the_general_path_reads_them(c):
    _compare_claims(c)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_never_read_otherwise(data):
    _check_claims(data)
    _check_sign1(data)
    _check_claims(b"\xa5\x01\x66110000" + data)
    _check_sign1(b"\xd2\x84" + data)


# --- the table of ways out of the shape -----------------------------------------------------
#
# Each row is one deviation, with what must happen: "read" by hand, left to the "general"
# decoder which accepts it (a valid encoding outside the readers' shape, as before), or
# "refused" (MalformedError) -- by the general decoder, with its own message.


def _bstr(data: bytes) -> bytes:
    return cose.bstr_header(len(data)) + data


def _claims_bytes(entries: list[bytes], sc: list[bytes], *, sc_head: int | None = None) -> bytes:
    head = bytes([0xA0 | len(entries) + 1])
    inner = bytes([0xA0 | len(sc) if sc_head is None else sc_head])
    return head + b"".join(entries) + b"\x3a\x00\x01\x00\x00" + inner + b"".join(sc)


T = (NOW - NOW % 300).to_bytes(4, "big")
E = (NOW - NOW % 300 + DAY).to_bytes(4, "big")
ISS = b"\x01\x66" + ISSUER.encode()
EXP, IAT, CTI = b"\x04\x1a" + E, b"\x06\x1a" + T, b"\x07\x50" + bytes(16)
BASE = [ISS, EXP, IAT, CTI]
UNBOUND = [b"\x01\x01", b"\x02\x07"]
BOUND = [
    b"\x01\x02",
    b"\x02\x07",
    b"\x03\x58\x20" + bytes(32),
    b"\x04\x83\x1a\x00\x01\x00\x00\x02\x04",
]

KID = bytes(range(8))
PROTECTED = b"\xa2\x01\x27\x04\x48" + KID  # {1: -8, 4: h'0001..07'}
PAYLOAD = _claims_bytes(BASE, UNBOUND)
SIGNATURE = b"\x07" * 64
HEAD = b"\xd2\x84" + _bstr(PROTECTED) + b"\xa0"  # everything before the payload


def _sign1(protected: bytes = PROTECTED, unprotected: bytes = b"\xa0") -> bytes:
    return b"\xd2\x84" + _bstr(protected) + unprotected + _bstr(PAYLOAD) + _bstr(SIGNATURE)


GOOD = _sign1()

SIGN1_ROWS: list[tuple[str, bytes, str]] = [
    ("in_the_shape", GOOD, "read"),
    ("alg_es256", _sign1(b"\xa2\x01\x26\x04\x48" + KID), "read"),
    ("alg_23", _sign1(b"\xa2\x01\x17\x04\x48" + KID), "read"),
    ("alg_minus_24", _sign1(b"\xa2\x01\x37\x04\x48" + KID), "read"),
    ("kid_empty", _sign1(b"\xa2\x01\x27\x04\x40"), "read"),
    ("kid_of_18_bytes", _sign1(b"\xa2\x01\x27\x04\x52" + bytes(18)), "read"),
    ("untagged", GOOD[1:], "refused"),
    ("tag_18_with_a_one_byte_argument", b"\xd8\x12" + GOOD[1:], "refused"),
    ("tag_55799_around", b"\xd9\xd9\xf7" + GOOD, "refused"),
    ("cwt_tag_61_around", b"\xd8\x3d" + GOOD, "refused"),
    ("other_tag", b"\xd1" + GOOD[1:], "refused"),
    ("array_of_three", b"\xd2\x83" + GOOD[2:-65], "refused"),
    ("array_of_five", b"\xd2\x85" + GOOD[2:] + b"\x40", "refused"),
    ("indefinite_array", b"\xd2\x9f" + GOOD[2:] + b"\xff", "refused"),
    ("protected_with_a_longer_head", b"\xd2\x84\x58\x0d" + PROTECTED + GOOD[16:], "refused"),
    ("protected_kid_first", _sign1(b"\xa2\x04\x48" + KID + b"\x01\x27"), "refused"),
    ("protected_indefinite_map", _sign1(b"\xbf" + PROTECTED[1:] + b"\xff"), "refused"),
    ("protected_alg_with_a_longer_head", _sign1(b"\xa2\x01\x38\x07\x04\x48" + KID), "refused"),
    ("protected_kid_with_a_longer_head", _sign1(b"\xa2\x01\x27\x04\x58\x08" + KID), "refused"),
    ("protected_kid_length_off_by_one", _sign1(b"\xa2\x01\x27\x04\x49" + KID), "refused"),
    ("protected_kid_chunked", _sign1(b"\xa2\x01\x27\x04\x5f\x48" + KID + b"\xff"), "refused"),
    ("protected_duplicated_alg", _sign1(b"\xa3\x01\x27\x01\x27\x04\x48" + KID), "refused"),
    ("protected_three_labels", _sign1(b"\xa3" + PROTECTED[1:] + b"\x05\x00"), "refused"),
    ("protected_alg_only", _sign1(b"\xa1\x01\x27"), "refused"),
    ("protected_crit", _sign1(b"\xa3\x01\x27\x02\x81\x01\x04\x48" + KID), "refused"),
    ("protected_empty", _sign1(b""), "refused"),
    ("protected_empty_map", _sign1(b"\xa0"), "refused"),
    ("protected_text_label", _sign1(b"\xa2\x01\x27\x61k\x48" + KID), "refused"),
    ("unprotected_kid", _sign1(unprotected=b"\xa1\x04\x48" + KID), "refused"),
    ("unprotected_indefinite_map", _sign1(unprotected=b"\xbf\xff"), "refused"),
    ("unprotected_as_bstr", _sign1(unprotected=b"\x40"), "refused"),
    ("payload_with_a_longer_head", HEAD + b"\x59\x00" + _bstr(PAYLOAD)[1:] + _bstr(SIGNATURE),
     "refused"),
    ("payload_chunked", HEAD + b"\x5f" + _bstr(PAYLOAD[:9]) + _bstr(PAYLOAD[9:]) + b"\xff"
     + _bstr(SIGNATURE), "refused"),
    ("payload_of_23_bytes_with_a_one_byte_length",
     HEAD + b"\x58\x17" + PAYLOAD[:23] + _bstr(SIGNATURE), "refused"),
    ("signature_of_23_bytes_with_a_one_byte_length",
     HEAD + _bstr(PAYLOAD) + b"\x58\x17" + bytes(23), "refused"),
    ("payload_as_text", HEAD + b"\x78" + _bstr(PAYLOAD)[1:] + _bstr(SIGNATURE), "refused"),
    ("payload_nil", HEAD + b"\xf6" + _bstr(SIGNATURE), "refused"),
    ("signature_with_a_longer_head", GOOD[:-66] + b"\x59\x00\x40" + SIGNATURE, "refused"),
    ("signature_as_text", GOOD[:-66] + b"\x78\x40" + SIGNATURE, "refused"),
    ("signature_cut_short", GOOD[:-1], "refused"),
    ("trailing_byte", GOOD + b"\x00", "refused"),
    ("empty", b"", "refused"),
    ("tag_only", b"\xd2", "refused"),
    ("head_only", b"\xd2\x84", "refused"),
    # Valid encodings outside the shape: the general decoder reads them as before (the
    # verifier then refuses a header alg that is not the key's, or a kid it does not know).
    ("alg_of_two_bytes", _sign1(b"\xa2\x01\x38\x18\x04\x48" + KID), "general"),  # -25
    ("alg_as_text", _sign1(b"\xa2\x01\x65EdDSA\x04\x48" + KID), "general"),
    ("alg_true", _sign1(b"\xa2\x01\xf5\x04\x48" + KID), "general"),
    ("kid_of_24_bytes", _sign1(b"\xa2\x01\x27\x04\x58\x18" + bytes(24)), "general"),
    ("kid_as_text", _sign1(b"\xa2\x01\x27\x04\x68" + b"abcdefgh"), "general"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "expected"), [r[1:] for r in SIGN1_ROWS], ids=[r[0] for r in SIGN1_ROWS]
)
def test_cose_rows(data, expected):
    assert (cose.split_sign1(data) is not None) is (expected == "read")
    result = _outcome(lambda: decode_token(data))
    with readers_off():
        assert _outcome(lambda: decode_token(data)) == result
    if expected == "refused":
        assert result[1] is MalformedError
        assert reason(result[1](result[2])) == "malformed"
    else:
        assert result[0] == "ok"
    assert _outcome(lambda: decode_for_verification(data))[0] == result[0]
    assert _reference(data) == _outcome(lambda: decode_for_verification(data))


def test_the_size_limit_comes_before_the_reader():
    # split_sign1 reads framing only; the 1024-byte bound is checked before it, as before.
    data = HEAD + _bstr(PAYLOAD) + _bstr(bytes(1000))
    assert len(data) > 1024
    assert cose.split_sign1(data) is not None
    for decode in (decode_token, decode_for_verification):
        with pytest.raises(MalformedError, match="larger than 1024 bytes"):
            decode(data)


def test_the_reader_takes_two_byte_lengths_and_bytes_only():
    long_payload = HEAD + _bstr(bytes(300)) + _bstr(SIGNATURE)
    assert long_payload[17:20] == b"\x59\x01\x2c"
    assert _check_sign1(long_payload)
    assert cose.split_sign1(GOOD) is not None
    assert cose.split_sign1(bytearray(GOOD)) is None  # type: ignore[arg-type]
    assert cose.split_sign1(memoryview(GOOD)) is None  # type: ignore[arg-type]


CLAIMS_ROWS: list[tuple[str, bytes, str]] = [
    ("unbound_in_the_shape", _claims_bytes(BASE, UNBOUND), "read"),
    ("bound_in_the_shape", _claims_bytes(BASE, BOUND), "read"),
    ("version_2_to_the_63_minus_1",
     _claims_bytes(BASE, [b"\x01\x01", b"\x02\x1b\x7f" + b"\xff" * 7]), "read"),
    ("params_of_two_byte_heads",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x83\x19\x4c\x00\x02\x01"]), "read"),  # 19456
    ("trailing_byte", _claims_bytes(BASE, BOUND) + b"\x00", "refused"),
    ("cut_short", _claims_bytes(BASE, BOUND)[:-1], "refused"),
    ("cut_in_the_binding", _claims_bytes(BASE, BOUND)[:70], "refused"),
    ("cut_in_the_fixed_part", _claims_bytes(BASE, BOUND)[:40], "refused"),
    ("indefinite_map", b"\xbf" + _claims_bytes(BASE, UNBOUND)[1:] + b"\xff", "refused"),
    ("indefinite_staycheck_map", _claims_bytes(BASE, UNBOUND, sc_head=0xBF) + b"\xff", "refused"),
    ("keys_out_of_order", _claims_bytes([EXP, ISS, IAT, CTI], UNBOUND), "refused"),
    ("staycheck_keys_out_of_order", _claims_bytes(BASE, UNBOUND[::-1]), "refused"),
    ("duplicated_claim", b"\xa6" + _claims_bytes(BASE, UNBOUND)[1:] + b"\x04\x1a" + E, "refused"),
    ("duplicated_status", _claims_bytes(BASE, [*UNBOUND, b"\x01\x02"]), "refused"),
    ("missing_cti", _claims_bytes([ISS, EXP, IAT], UNBOUND), "refused"),
    ("extra_claim", _claims_bytes([ISS, EXP, IAT, CTI, b"\x08\x00"], UNBOUND), "refused"),
    ("iss_five_digits", _claims_bytes([b"\x01\x6511000", EXP, IAT, CTI], UNBOUND), "refused"),
    ("iss_letters", _claims_bytes([b"\x01\x66BEIJIN", EXP, IAT, CTI], UNBOUND), "refused"),
    ("iss_as_bytes", _claims_bytes([b"\x01\x46110000", EXP, IAT, CTI], UNBOUND), "refused"),
    ("iss_with_a_longer_head",
     _claims_bytes([b"\x01\x78\x06110000", EXP, IAT, CTI], UNBOUND), "refused"),
    ("exp_with_a_longer_head",
     _claims_bytes([ISS, b"\x04\x1b\0\0\0\0" + E, IAT, CTI], UNBOUND), "refused"),
    ("exp_as_float", _claims_bytes([ISS, b"\x04\xfb" + bytes(8), IAT, CTI], UNBOUND), "refused"),
    ("exp_negative", _claims_bytes([ISS, b"\x04\x20", IAT, CTI], UNBOUND), "refused"),
    ("exp_65535_with_a_four_byte_head",
     _claims_bytes([ISS, b"\x04\x1a\0\0\xff\xff", IAT, CTI], UNBOUND), "refused"),
    ("iat_65535_with_a_four_byte_head",
     _claims_bytes([ISS, EXP, b"\x06\x1a\0\0\xff\xff", CTI], UNBOUND), "refused"),
    ("cti_15_bytes", _claims_bytes([ISS, EXP, IAT, b"\x07\x4f" + bytes(15)], UNBOUND), "refused"),
    ("cti_as_text", _claims_bytes([ISS, EXP, IAT, b"\x07\x70" + bytes(16)], UNBOUND), "refused"),
    ("status_3", _claims_bytes(BASE, [b"\x01\x03", b"\x02\x07"]), "refused"),
    ("status_0", _claims_bytes(BASE, [b"\x01\x00", b"\x02\x07"]), "refused"),
    ("status_with_a_longer_head", _claims_bytes(BASE, [b"\x01\x18\x01", b"\x02\x07"]), "refused"),
    ("status_true", _claims_bytes(BASE, [b"\x01\xf5", b"\x02\x07"]), "refused"),
    ("version_0", _claims_bytes(BASE, [b"\x01\x01", b"\x02\x00"]), "refused"),
    ("version_2_to_the_63", _claims_bytes(BASE, [b"\x01\x01", b"\x02\x1b\x80" + bytes(7)]),
     "refused"),
    ("version_with_a_longer_head", _claims_bytes(BASE, [b"\x01\x01", b"\x02\x18\x07"]), "refused"),
    ("version_negative", _claims_bytes(BASE, [b"\x01\x01", b"\x02\x26"]), "refused"),
    ("version_as_float", _claims_bytes(BASE, [b"\x01\x01", b"\x02\xf9\x47\x00"]), "refused"),
    ("binding_without_params", _claims_bytes(BASE, BOUND[:3]), "refused"),
    ("params_without_binding", _claims_bytes(BASE, [*BOUND[:2], BOUND[3]]), "refused"),
    ("binding_31_bytes",
     _claims_bytes(BASE, [*BOUND[:2], b"\x03\x58\x1f" + bytes(31), BOUND[3]]), "refused"),
    ("binding_with_a_longer_head",
     _claims_bytes(BASE, [*BOUND[:2], b"\x03\x59\x00\x20" + bytes(32), BOUND[3]]), "refused"),
    ("params_two_members",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x82\x1a\x00\x01\x00\x00\x02"]), "refused"),
    ("params_four_members",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x84\x1a\x00\x01\x00\x00\x02\x04\x04"]), "refused"),
    ("params_memory_below_floor",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x83\x19\x4b\xff\x04\x01"]), "refused"),
    ("params_seventeen_lanes",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x83\x1a\x00\x01\x00\x00\x02\x11"]), "refused"),
    ("params_true_passes",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x83\x1a\x00\x01\x00\x00\xf5\x04"]), "refused"),
    ("params_memory_with_a_longer_head",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x83\x1b\0\0\0\0\x00\x01\x00\x00\x02\x04"]),
     "refused"),
    ("params_indefinite_array",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\x9f\x1a\x00\x01\x00\x00\x02\x04\xff"]), "refused"),
    ("params_as_map",
     _claims_bytes(BASE, [*BOUND[:3], b"\x04\xa3\x01\x1a\x00\x01\x00\x00\x02\x02\x03\x04"]),
     "refused"),
    # Valid claims outside the shape: the general decoder reads them, as before.
    ("iat_of_a_three_byte_head", _claims_bytes([ISS, EXP, b"\x06\x19\x01\x00", CTI], UNBOUND),
     "general"),
    ("exp_from_2106", _claims_bytes([ISS, b"\x04\x1b\0\0\0\x01\0\0\0\0", IAT, CTI], UNBOUND),
     "general"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "expected"), [r[1:] for r in CLAIMS_ROWS], ids=[r[0] for r in CLAIMS_ROWS]
)
def test_claims_rows(payload, expected):
    if expected == "read":
        assert _check_claims(payload)
    else:
        assert verdict._read_claims(payload) is None
    result = _outcome(lambda: verdict.decode_claims(payload))
    with readers_off():
        assert _outcome(lambda: verdict.decode_claims(payload)) == result
    if expected == "refused":
        assert result[1] is MalformedError
    else:
        assert result[0] == "ok"


def test_binding_parameters_are_remembered_only_once_checked():
    tail = b"\x04\x83\x19\x4b\xff\x04\x01"  # memory 19455 KiB: below the floor
    for _ in range(3):
        assert verdict._binding_parameters(tail) is None
    assert tail not in verdict._params_cache
    good = b"\x04\x83\x1a\x00\x01\x00\x00\x02\x04"
    for _ in range(2):
        assert verdict._binding_parameters(good) == BindingParameters(65536, 2, 4)


# --- through verify_token ---------------------------------------------------------------


def test_a_token_outside_the_shape_still_verifies(signer):
    """An iat of 65 535 (1970) takes a three-byte head: the general path reads it, as before,
    and the verifier's other rules then apply (it verifies at its own time)."""
    protected = cose.encode_protected({cose.HEADER_ALG: signer.alg, cose.HEADER_KID: signer.kid})
    claims = {1: ISSUER, 4: 65535 + 3600, 6: 65535, 7: bytes(16), -65537: {1: 1, 2: 7}}
    payload = cbor2.dumps(claims, canonical=True)
    assert verdict._read_claims(payload) is None
    signature = signer.sign(cose.sig_structure(protected, payload))
    token = "SC1:" + base45.b45encode(cose.encode_sign1(protected, payload, signature))
    keys = KeySet([signer.public_key], issuer=ISSUER)
    got = verify_token(token, keys, now=65535, identity=NO_BINDING_CHECK)
    assert (got.issued_at, got.expires_at, got.status) == (65535, 65535 + 3600, Status(1))


def test_a_bad_signature_on_the_hand_read_path_is_a_bad_signature(signer, tokens):
    keys = KeySet([signer.public_key], issuer=ISSUER)
    data = bytearray(base45.b45decode(tokens[0][4:]))
    data[-1] ^= 1
    with pytest.raises(BadSignatureError) as e:
        verify_token(bytes(data), keys, now=NOW, identity=NO_BINDING_CHECK)
    assert reason(e.value) == "bad signature"


# --- base45 (RFC 9285) --------------------------------------------------------------------


def _reference_b45decode(text: str) -> bytes:
    """RFC 9285 section 4.2, group by group."""
    if len(text) % 3 == 1 or any(c not in ALPHABET for c in text):
        raise ValueError(text)
    out = bytearray()
    for i in range(0, len(text), 3):
        group = [ALPHABET.index(c) for c in text[i : i + 3]]
        n = sum(d * 45**k for k, d in enumerate(group))
        if n > (0xFFFF if len(group) == 3 else 0xFF):
            raise ValueError(text)
        out += n.to_bytes(len(group) - 1, "big")
    return bytes(out)


def _decoded(fn: Callable[[str], bytes], text: str) -> bytes | None:
    try:
        return fn(text)
    except ValueError:
        return None


def test_base45_every_group_of_three_and_every_pair():
    for size in (2, 3):
        for chars in itertools.product(ALPHABET, repeat=size):
            text = "".join(chars)
            assert _decoded(base45.b45decode, text) == _decoded(_reference_b45decode, text)


GROUPS = ["000", "FGW", "GGW", "ZZZ", "U5", "::", "00"]  # 0, 65535, 65536, > 65535, pairs


@settings(max_examples=400, deadline=None)
@given(
    st.text(ALPHABET + "a=\u00d8", max_size=120)
    | st.lists(st.sampled_from(GROUPS), max_size=40).map("".join)
)
def test_base45_random_texts(text):
    assert _decoded(base45.b45decode, text) == _decoded(_reference_b45decode, text)


def test_the_reader_builds_verdicts_equal_to_the_dataclass_constructor():
    """The reader sets Verdict's slots directly; that must be all Verdict's __init__ does."""
    assert [f.name for f in dataclasses.fields(Verdict)] == [
        "verdict_id", "status", "issuer", "issued_at", "expires_at", "riskset_version",
        "binding", "binding_params",
    ]  # fmt: skip
    assert not hasattr(Verdict, "__post_init__")
    for args in (
        (bytes(16), Status.REVIEW_REQUIRED, ISSUER, 1, 2, 3, b"", None),
        (bytes(16), Status.NO_ABNORMALITY, ISSUER, 1, 2, 3, bytes(32), PARAMS),
    ):
        built, constructed = verdict._new_verdict(*args), Verdict(*args)
        assert built == constructed
        assert hash(built) == hash(constructed)
        assert repr(built) == repr(constructed)
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.status = Status.NO_ABNORMALITY  # type: ignore[misc]

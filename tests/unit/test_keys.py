"""Keys and key sets (staycheck.trust.keys): key ids, JWKS import and export, small-order key
refusal, ``KeySet.verify``, and Project Wycheproof's Ed25519 vectors run through that same function.

The Wycheproof file is C2SP/wycheproof ``testvectors_v1/ed25519_test.json`` (commit dac1dd4,
Apache License 2.0), committed as ``tests/vectors/wycheproof_ed25519_test.json`` (its
SHA-256 is in ``tests/vectors/README.md``), so the tests need nothing outside the repository.

Expected values come from RFC 8032 (point encoding, group order), RFC 8037 / RFC 7517 (OKP
JWK), docs/formats.md (kid, nbf/exp) and Wycheproof's ``result`` fields.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pathlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from staycheck.geo.errors import (
    BadSignatureError,
    ConfigurationError,
    Error,
    ExpiredError,
    UnknownKeyError,
)
from staycheck.trust.keys import Ed25519Signer, KeySet, PublicKey, is_weak_ed25519_key, key_id

P = 2**255 - 19  # RFC 8032 section 5.1: the field prime of edwards25519


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def b64url(data: bytes) -> str:
    """RFC 7515 section 2: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_of(raw: bytes, **members: Any) -> dict[str, Any]:
    """An OKP JWK (RFC 8037) written by hand."""
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), **members}


# --------------------------------------------------------------------------------------------
# Key id
# --------------------------------------------------------------------------------------------


def test_kid_is_first_8_bytes_of_sha256_of_the_raw_public_key():
    private = Ed25519PrivateKey.generate()
    raw = raw_public(private)
    expected = hashlib.sha256(raw).digest()[:8]
    assert key_id(raw) == expected
    assert PublicKey.from_ed25519(private.public_key()).kid == expected
    assert Ed25519Signer(private).kid == expected
    assert PublicKey.from_ed25519(private.public_key()).raw == raw


def test_kid_differs_between_keys():
    a, b = Ed25519Signer.generate(), Ed25519Signer.generate()
    assert a.kid != b.kid


# --------------------------------------------------------------------------------------------
# JWKS
# --------------------------------------------------------------------------------------------


def test_jwks_round_trip_preserves_kid_window_and_issuer():
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = KeySet(
        [
            PublicKey.from_ed25519(a.public_key(), not_before=1_700_000_000),
            PublicKey.from_ed25519(
                b.public_key(), not_before=1_600_000_000, not_after=1_700_000_100
            ),
        ],
        issuer="110000",
    )
    for text in (keys.to_json(), keys.to_json().encode()):
        loaded = KeySet.from_jwks(text)
        assert loaded.issuer == "110000"
        by_kid = {k.kid: k for k in loaded}
        assert set(by_kid) == {
            hashlib.sha256(raw_public(a)).digest()[:8],
            hashlib.sha256(raw_public(b)).digest()[:8],
        }
        ka = by_kid[hashlib.sha256(raw_public(a)).digest()[:8]]
        kb = by_kid[hashlib.sha256(raw_public(b)).digest()[:8]]
        assert (ka.raw, ka.not_before, ka.not_after) == (raw_public(a), 1_700_000_000, None)
        assert (kb.raw, kb.not_before, kb.not_after) == (
            raw_public(b),
            1_600_000_000,
            1_700_000_100,
        )
        # The loaded keys verify what the private keys signed.
        loaded.verify(key_id=kb.kid, signature=b.sign(b"m"), data=b"m", at=1_650_000_000)


def test_jwk_members_are_the_documented_ones():
    private = Ed25519PrivateKey.generate()
    raw = raw_public(private)
    pk = PublicKey.from_ed25519(private.public_key(), not_before=10, not_after=20)
    jwks = json.loads(KeySet([pk], issuer="120000").to_json())
    assert jwks == {
        "issuer": "120000",
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url(raw),
                "kid": hashlib.sha256(raw).digest()[:8].hex(),
                "alg": "EdDSA",
                "use": "sig",
                "nbf": 10,
                "exp": 20,
            }
        ],
    }


def test_jwks_without_issuer_or_window():
    private = Ed25519PrivateKey.generate()
    loaded = KeySet.from_jwks({"keys": [jwk_of(raw_public(private))]})
    assert loaded.issuer is None
    (key,) = list(loaded)
    assert (key.not_before, key.not_after) == (None, None)
    assert "issuer" not in KeySet([key]).to_jwks()


def _jwks_text(mutate: Any) -> Any:
    """A valid JWKS with one key, changed by ``mutate`` (a dict -> JWKS object or text)."""

    def build() -> Any:
        raw = raw_public(Ed25519PrivateKey.generate())
        jwk = jwk_of(raw, kid=hashlib.sha256(raw).digest()[:8].hex(), nbf=0)
        return mutate({"keys": [jwk], "issuer": "110000"})

    return build


def _key(**changes: Any) -> Any:
    def mutate(jwks: dict[str, Any]) -> dict[str, Any]:
        for name, value in changes.items():
            if value is _DELETE:
                del jwks["keys"][0][name]
            else:
                jwks["keys"][0][name] = value
        return jwks

    return _jwks_text(mutate)


_DELETE = object()
OTHER_KID = hashlib.sha256(b"another key").digest()[:8].hex()


def _x_with_bad_char(jwks: dict[str, Any]) -> dict[str, Any]:
    # Four of them, so a decoder that skips unknown characters sees a well-padded text:
    # RFC 7515 section 2 allows no "other additional characters" in base64url.
    x = jwks["keys"][0]["x"]
    jwks["keys"][0]["x"] = x[:20] + "!!!!" + x[20:]
    return jwks


def _duplicate_key(jwks: dict[str, Any]) -> dict[str, Any]:
    jwks["keys"].append(dict(jwks["keys"][0]))
    return jwks


JWKS_REFUSALS = [
    ("not_json", _jwks_text(lambda j: "{not json")),
    ("not_utf8", _jwks_text(lambda j: b"\xff\xfe{}")),
    ("top_level_array", _jwks_text(lambda j: json.dumps(j["keys"]))),
    ("keys_not_an_array", _jwks_text(lambda j: {"keys": j["keys"][0]})),
    ("keys_missing", _jwks_text(lambda j: {"issuer": "110000"})),
    ("key_not_an_object", _jwks_text(lambda j: {"keys": ["k"]})),
    ("issuer_not_a_string", _jwks_text(lambda j: {**j, "issuer": 110000})),
    ("wrong_kty_EC", _key(kty="EC")),
    ("wrong_kty_missing", _key(kty=_DELETE)),
    ("wrong_crv_X25519", _key(crv="X25519")),
    ("wrong_crv_Ed448", _key(crv="Ed448")),
    ("wrong_alg_ES256", _key(alg="ES256")),
    ("kid_not_matching", _key(kid=OTHER_KID)),
    ("x_bad_base64", _key(x="%%%%")),
    ("x_not_a_string", _key(x=12345)),
    ("x_missing", _key(x=_DELETE)),
    ("x_31_bytes", _key(x=b64url(b"\x01" * 31))),
    ("x_33_bytes", _key(x=b64url(b"\x01" * 33))),
    ("x_with_a_character_outside_base64url", _jwks_text(_x_with_bad_char)),
    ("nbf_negative", _key(nbf=-1)),
    ("nbf_float", _key(nbf=1.5)),
    ("nbf_string", _key(nbf="1700000000")),
    ("nbf_bool", _key(nbf=True)),
    ("exp_negative", _key(exp=-5)),
    ("duplicate_key", _jwks_text(_duplicate_key)),
]


@pytest.mark.parametrize("build", [r[1] for r in JWKS_REFUSALS], ids=[r[0] for r in JWKS_REFUSALS])
def test_from_jwks_refuses(build):
    with pytest.raises(ConfigurationError):
        KeySet.from_jwks(build())


def test_from_jwks_accepts_the_unchanged_row_base():
    """The refusal rows differ from this JWKS in one member only."""
    loaded = KeySet.from_jwks(_jwks_text(lambda j: j)())
    assert len(loaded) == 1
    assert loaded.issuer == "110000"


def test_from_jwks_error_names_the_key_index():
    good = jwk_of(raw_public(Ed25519PrivateKey.generate()))
    bad = jwk_of(raw_public(Ed25519PrivateKey.generate()), crv="X25519")
    with pytest.raises(ConfigurationError) as info:
        KeySet.from_jwks({"keys": [good, bad]})
    assert "keys[1]" in str(info.value)


# --------------------------------------------------------------------------------------------
# Small-order and non-canonical public keys (RFC 8032 section 5.1.3 decoding)
# --------------------------------------------------------------------------------------------


def _le(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


WEAK_KEYS = [
    # (name, encoding): small-order points have 8*P = identity (the group has cofactor 8).
    ("identity_y1", _le(1)),  # (0, 1), order 1: bytes 01 00..00
    ("order2_y_p_minus_1", _le(P - 1)),  # (0, -1), order 2
    ("order4_y0", _le(0)),  # (sqrt(-1), 0), order 4
    ("order4_y0_negative_x", _le(0, sign=1)),  # (-sqrt(-1), 0), order 4
    # The order-8 points (libsodium's blocklist; "Taming the many EdDSAs", 2020).
    (
        "order8_a",
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    ),
    (
        "order8_b",
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    ),
    (
        "order8_c",
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    ),
    (
        "order8_d",
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    ),
    # Non-canonical: y >= p is not a valid encoding (RFC 8032 section 5.1.3 step 1).
    ("noncanonical_y_p", _le(P)),  # y = p, i.e. 0 mod p
    ("noncanonical_y_p_plus_1", _le(P + 1)),  # y = p + 1, the identity again
    ("noncanonical_y_2_255_minus_1", _le(2**255 - 1)),
    ("identity_with_sign_bit", _le(1, sign=1)),  # x = 0 with the sign bit set
    ("not_on_curve_y2", _le(2)),  # (y^2 - 1)/(d y^2 + 1) is not a square for y = 2
]


def test_weak_key_table_encodings():
    """The encodings above are what their names say, from RFC 8032 alone."""
    names = dict(WEAK_KEYS)
    assert names["identity_y1"] == b"\x01" + b"\x00" * 31
    assert names["order2_y_p_minus_1"] == b"\xec" + b"\xff" * 30 + b"\x7f"
    assert names["order4_y0"] == b"\x00" * 32
    assert names["noncanonical_y_p"] == b"\xed" + b"\xff" * 30 + b"\x7f"


@pytest.mark.parametrize("raw", [w[1] for w in WEAK_KEYS], ids=[w[0] for w in WEAK_KEYS])
def test_weak_public_key_is_refused_at_load(raw):
    assert is_weak_ed25519_key(raw)
    with pytest.raises(ConfigurationError):
        PublicKey.from_jwk(jwk_of(raw))
    with pytest.raises(ConfigurationError):
        KeySet.from_jwks({"keys": [jwk_of(raw)]})
    try:
        loaded = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return  # cryptography refuses it itself
    with pytest.raises(ConfigurationError):
        PublicKey.from_ed25519(loaded)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_length_is_weak(length):
    assert is_weak_ed25519_key(b"\x01" * length)


def test_fresh_keys_are_not_weak():
    for _ in range(32):
        raw = raw_public(Ed25519PrivateKey.generate())
        assert not is_weak_ed25519_key(raw)
        assert PublicKey.from_jwk(jwk_of(raw)).raw == raw


def test_rfc8032_test_1_public_key_is_not_weak():
    # RFC 8032 section 7.1, TEST 1.
    raw = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert not is_weak_ed25519_key(raw)


# --------------------------------------------------------------------------------------------
# KeySet.verify and the other key formats
# --------------------------------------------------------------------------------------------


def test_verify_rules():
    signer = Ed25519Signer.generate()
    pk = PublicKey.from_ed25519(signer.public_key.key, not_before=100, not_after=200)
    keys = KeySet([pk])
    sig = signer.sign(b"data")
    assert keys.verify(key_id=signer.kid, signature=sig, data=b"data", at=100) == pk
    assert keys.verify(key_id=signer.kid, signature=sig, data=b"data", at=200) == pk
    with pytest.raises(ExpiredError):
        keys.verify(key_id=signer.kid, signature=sig, data=b"data", at=99)
    with pytest.raises(ExpiredError):
        keys.verify(key_id=signer.kid, signature=sig, data=b"data", at=201)
    with pytest.raises(BadSignatureError):
        keys.verify(key_id=signer.kid, signature=sig, data=b"datA", at=150)
    with pytest.raises(BadSignatureError):
        keys.verify(key_id=signer.kid, signature=sig[:-1], data=b"data", at=150)
    with pytest.raises(UnknownKeyError):
        keys.verify(key_id=None, signature=sig, data=b"data", at=150)
    with pytest.raises(UnknownKeyError):
        keys.verify(key_id=Ed25519Signer.generate().kid, signature=sig, data=b"data", at=150)


def test_key_id_is_only_a_hint():
    """A signature by key A under key B's id does not verify, even though B is trusted."""
    a, b = Ed25519Signer.generate(), Ed25519Signer.generate()
    keys = KeySet([a.public_key, b.public_key])
    with pytest.raises(BadSignatureError):
        keys.verify(key_id=b.kid, signature=a.sign(b"m"), data=b"m", at=0)


def test_duplicate_key_in_a_key_set_is_refused():
    signer = Ed25519Signer.generate()
    with pytest.raises(ConfigurationError):
        KeySet([signer.public_key, signer.public_key])


def test_pem_round_trips():
    signer = Ed25519Signer.generate()
    again = Ed25519Signer.from_pem(signer.to_pem())
    assert again.kid == signer.kid
    assert PublicKey.from_pem(signer.public_key.to_pem()).raw == signer.public_key.raw
    with pytest.raises(ConfigurationError):
        PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigurationError):
        Ed25519Signer.from_pem(b"not a key")


# --------------------------------------------------------------------------------------------
# Wycheproof
# --------------------------------------------------------------------------------------------

VECTOR_NAME = "wycheproof_ed25519_test.json"
COMMITTED = pathlib.Path(__file__).resolve().parents[1] / "vectors" / VECTOR_NAME
# The SHA-256 of the file as taken from Wycheproof (tests/vectors/README.md).
COMMITTED_SHA256 = "752d2ea7d7c6cf4736381b6cbacb61f8182b126ab7cd9b058f00c50084975536"

WYCHEPROOF: dict[str, Any] = json.loads(COMMITTED.read_text("utf-8"))
VECTORS = [
    (group["publicKey"]["pk"], test)
    for group in WYCHEPROOF["testGroups"]
    for test in group["tests"]
]


def test_committed_vectors_are_the_published_file():
    assert hashlib.sha256(COMMITTED.read_bytes()).hexdigest() == COMMITTED_SHA256


def test_every_vector_in_the_file_is_run():
    assert WYCHEPROOF["algorithm"] == "EDDSA"
    assert all(g["type"] == "EddsaVerify" for g in WYCHEPROOF["testGroups"])
    assert len(VECTORS) == WYCHEPROOF["numberOfTests"]
    assert len({t["tcId"] for _, t in VECTORS}) == len(VECTORS)
    assert {t["result"] for _, t in VECTORS} <= {"valid", "invalid", "acceptable"}


def test_acceptable_vectors_are_documented():
    """Wycheproof marks some cases "acceptable" (either answer is fine). This file has none.

    What we do with one: our verifier is strict (OpenSSL's Ed25519 via cryptography, and
    small-order keys refused at load), so an "acceptable" case either verifies or raises a
    staycheck.geo.errors.Error, never anything else; test_wycheproof_vector enforces that. If a
    newer file adds such cases, record here which way each goes.
    """
    assert [t["tcId"] for _, t in VECTORS if t["result"] == "acceptable"] == []


def _vector_id(vector: tuple[str, dict[str, Any]]) -> str:
    _, test = vector
    return f"tc{test['tcId']}-{test['result']}-{'-'.join(test['flags'])}"


def _check(pk_hex: str, test: dict[str, Any]) -> str:
    """Run one vector through KeySet.verify; return "verified", or the error's class name."""
    pk = bytes.fromhex(pk_hex)
    try:
        key = PublicKey.from_ed25519(Ed25519PublicKey.from_public_bytes(pk))
        keys = KeySet([key])
        keys.verify(
            key_id=key.kid,
            signature=bytes.fromhex(test["sig"]),
            data=bytes.fromhex(test["msg"]),
            at=0,
        )
    except (BadSignatureError, ConfigurationError) as e:
        return type(e).__name__
    return "verified"


@pytest.mark.parametrize(("pk_hex", "test"), VECTORS, ids=[_vector_id(v) for v in VECTORS])
def test_wycheproof_vector(pk_hex, test):
    if test["result"] == "valid":
        assert _check(pk_hex, test) == "verified"
    elif test["result"] == "invalid":
        assert _check(pk_hex, test) in ("BadSignatureError", "ConfigurationError")
    else:  # "acceptable": either way, but only through our error tree
        with contextlib.suppress(Error):
            _check(pk_hex, test)


def test_wycheproof_valid_and_invalid_counts():
    """All vectors of the file, by result: each was run by test_wycheproof_vector."""
    results = [t["result"] for _, t in VECTORS]
    assert results.count("valid") + results.count("invalid") == WYCHEPROOF["numberOfTests"]
    outcomes = [_check(pk, t) for pk, t in VECTORS]
    assert len(outcomes) == WYCHEPROOF["numberOfTests"]
    verified = sum(o == "verified" for o in outcomes)
    assert verified == results.count("valid")

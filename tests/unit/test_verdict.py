"""Verdict tokens (staycheck.trust.verdict), the offline verifier (staycheck.trust.verifier), base45
(staycheck.trust.base45) and the subject binding (staycheck.trust.binding).

Expected values come from SPEC.md ("Verdict", "Privacy promises"), docs/formats.md, RFC 9285
(base45), RFC 8392/9052 (CWT, COSE_Sign1) and RFC 2104/4231 (HMAC), never from the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import argon2.low_level
import cbor2
import pytest
from staycheck.geo.errors import (
    BadSignatureError,
    BindingMismatchError,
    ExpiredError,
    MalformedError,
    SignedDataError,
    StaleVersionError,
    UnknownKeyError,
)
from staycheck.geo.itinerary import Status
from staycheck.trust import base45, cose
from staycheck.trust.binding import (
    BINDING_LENGTH,
    SALT_LENGTH,
    BindingParameters,
    binding_matches,
    compute_binding,
)
from staycheck.trust.keys import Ed25519Signer, KeySet, PublicKey, VerdictKeySet
from staycheck.trust.verdict import (
    MAX_TOKEN_CHARS,
    TokenSigner,
    Verdict,
    issue_verdict,
)
from staycheck.trust.verifier import (
    DEFAULT_SKEW_S,
    NO_BINDING_CHECK,
    SubjectBinding,
    SubjectId,
    reason,
    verify_token,
)

from tests.helpers import DAY, HOUR, NOW

ISSUER = "110000"  # Beijing (SPEC.md)
OTHER_ISSUER = "120000"  # Tianjin
VERSION = 7
BUNDLE_EXPIRES = NOW + 2 * DAY
SKEW = 120  # docs/formats.md: now in [iat - 120 s, exp + 120 s]
BUCKET = 300  # SPEC.md: minutes, not seconds; docs/formats.md: a 5-minute bucket
TTL_MAX = 24 * 3600  # SPEC.md: 24 h at most
# NOW = 1_795_000_000 is 100 s past a bucket start: 1_795_000_000 = 5_983_333 * 300 + 100.
IAT = NOW - 100
SALT = bytes(range(16))
ID_NUMBER = "11010519491231002X"  # the example resident ID number of GB 11643
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"  # RFC 9285, table 1


# The cheapest parameters a token may name (docs/formats.md: memory at least 19 MiB, memory
# x passes at least 38 MiB): tests derive many bindings.
FAST = BindingParameters(memory_kib=19 * 1024, iterations=2, lanes=1)


def binding_of(id_number: str, salt: bytes = SALT, params: BindingParameters = FAST) -> bytes:
    """docs/formats.md: Argon2id (RFC 9106, version 0x13) of the ID number trimmed and
    upper-cased, with the salt, 32 bytes; computed here by the reference C implementation
    (argon2-cffi), not by the library the code uses."""
    return argon2.low_level.hash_secret_raw(
        id_number.strip().upper().encode(),
        salt,
        time_cost=params.iterations,
        memory_cost=params.memory_kib,
        parallelism=params.lanes,
        hash_len=32,
        type=argon2.low_level.Type.ID,
        version=0x13,
    )


BINDING = binding_of(ID_NUMBER)


def verdict_keys(
    *signers: Ed25519Signer,
    not_before: int | None = NOW - 30 * DAY,
    not_after: int | None = None,
    issuer: str = ISSUER,
) -> VerdictKeySet:
    keys = [
        PublicKey.from_ed25519(s.public_key.key, not_before=not_before, not_after=not_after)
        for s in signers
    ]
    return VerdictKeySet(KeySet(keys, issuer=issuer))


def make_token(
    signer: Ed25519Signer,
    *,
    now: int = NOW,
    status: Status = Status.NO_ABNORMALITY,
    issuer: str = ISSUER,
    version: int = VERSION,
    binding: bytes = BINDING,
    params: BindingParameters = FAST,
) -> tuple[str, Verdict]:
    verdict = issue_verdict(
        status,
        now=now,
        issuer=issuer,
        riskset_version=version,
        bundle_expires_at=BUNDLE_EXPIRES,
        binding=binding,
        binding_params=params if binding else None,
    )
    return TokenSigner(signer).sign(verdict), verdict


def cose_bytes(token: str) -> bytes:
    assert token.startswith("SC1:")
    return base45.b45decode(token[4:])


def to_token(data: bytes) -> str:
    return "SC1:" + base45.b45encode(data)


def claims_of(verdict: Verdict) -> dict[int, Any]:
    """The claims map of docs/formats.md, written out here rather than taken from the code."""
    sc: dict[int, Any] = {1: int(verdict.status), 2: verdict.riskset_version}
    if verdict.binding:
        assert verdict.binding_params is not None
        p = verdict.binding_params
        sc[3] = verdict.binding
        sc[4] = [p.memory_kib, p.iterations, p.lanes]
    return {
        1: verdict.issuer,
        4: verdict.expires_at,
        6: verdict.issued_at,
        7: verdict.verdict_id,
        -65537: sc,
    }


def hand_token(
    signer: Ed25519Signer,
    claims: dict[int, Any],
    *,
    header: dict[int, Any] | None = None,
) -> str:
    """A token built by hand with cbor2 and signed properly by ``signer``."""
    if header is None:
        header = {1: -8, 4: signer.kid}
    protected = cbor2.dumps(header, canonical=True)
    payload = cbor2.dumps(claims, canonical=True)
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    signature = signer.sign(to_be_signed)
    return to_token(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature])))


# --------------------------------------------------------------------------------------------
# Accept
# --------------------------------------------------------------------------------------------


@pytest.fixture
def signer() -> Ed25519Signer:
    """A fresh verdict key for each test."""
    return Ed25519Signer.generate()


@pytest.mark.parametrize("status", list(Status))
def test_round_trip(signer, status):
    token, issued = make_token(signer, status=status)
    verdict = verify_token(
        token,
        verdict_keys(signer),
        now=NOW,
        identity=SubjectBinding(BINDING),
        min_riskset_version=VERSION,
    )
    assert verdict == issued
    assert verdict.status is status
    assert verdict.issuer == ISSUER
    assert verdict.riskset_version == VERSION
    assert verdict.binding == BINDING
    assert verdict.issued_at == IAT


def test_round_trip_unbound_token(signer):
    token, _ = make_token(signer, binding=b"")
    verdict = verify_token(token, verdict_keys(signer), now=NOW, identity=NO_BINDING_CHECK)
    assert verdict.binding == b""


def test_hand_built_token_verifies(signer):
    """The hand-built tokens of the reject table differ from this one in one thing only."""
    _, issued = make_token(signer)
    token = hand_token(signer, claims_of(issued))
    assert verify_token(token, verdict_keys(signer), now=NOW, identity=NO_BINDING_CHECK) == issued


def test_token_layout_is_the_documented_one(signer):
    token, issued = make_token(signer)
    obj = cbor2.loads(cose_bytes(token))
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == 18
    protected, unprotected, payload, signature = obj.value
    assert cbor2.loads(protected) == {1: -8, 4: signer.kid}
    assert dict(unprotected) == {}
    assert len(signature) == 64
    # Privacy: exactly these claims, nothing of the itinerary.
    assert cbor2.loads(payload) == claims_of(issued)


def test_token_is_short_qr_alphanumeric_text(signer):
    token, _ = make_token(signer)
    assert set(token) <= set(ALPHABET)  # "SC1:" is inside the alphabet too
    assert len(token) <= MAX_TOKEN_CHARS
    assert len(token) < 400  # docs/formats.md: "about 260 characters"


def test_skew_boundaries_are_accepted(signer):
    token, issued = make_token(signer)
    keys = verdict_keys(signer)
    assert (
        verify_token(token, keys, now=issued.issued_at - SKEW, identity=NO_BINDING_CHECK) == issued
    )
    assert (
        verify_token(token, keys, now=issued.expires_at + SKEW, identity=NO_BINDING_CHECK) == issued
    )
    assert DEFAULT_SKEW_S == SKEW


def test_key_valid_exactly_at_iat_is_accepted(signer):
    token, issued = make_token(signer)
    keys = verdict_keys(signer, not_before=issued.issued_at, not_after=issued.issued_at)
    assert verify_token(token, keys, now=NOW, identity=NO_BINDING_CHECK) == issued


def test_key_retired_after_iat_still_verifies_its_old_tokens(signer):
    """STYLE.md: an expired key may still verify old data."""
    token, issued = make_token(signer)
    keys = verdict_keys(signer, not_after=issued.issued_at + 60)
    assert (
        verify_token(token, keys, now=issued.issued_at + HOUR, identity=NO_BINDING_CHECK) == issued
    )


def test_min_version_equal_to_the_token_is_accepted(signer):
    token, _ = make_token(signer)
    assert verify_token(
        token, verdict_keys(signer), now=NOW, min_riskset_version=VERSION, identity=NO_BINDING_CHECK
    )


def test_surrounding_whitespace_is_tolerated(signer):
    token, issued = make_token(signer)
    assert (
        verify_token(f"  {token}\n", verdict_keys(signer), now=NOW, identity=NO_BINDING_CHECK)
        == issued
    )


def test_key_set_with_several_keys(signer):
    other = Ed25519Signer.generate()
    token, issued = make_token(signer)
    assert (
        verify_token(token, verdict_keys(other, signer), now=NOW, identity=NO_BINDING_CHECK)
        == issued
    )


# --------------------------------------------------------------------------------------------
# issue_verdict
# --------------------------------------------------------------------------------------------

BUCKET_START = 5_983_334 * 300  # 1_795_000_200, a multiple of 300


@pytest.mark.parametrize(
    ("now", "iat"),
    [
        (BUCKET_START, BUCKET_START),
        (BUCKET_START + 1, BUCKET_START),
        (BUCKET_START + 299, BUCKET_START),
        (BUCKET_START + 300, BUCKET_START + 300),
        (NOW, NOW - 100),
    ],
)
def test_issue_time_is_rounded_down_to_a_5_minute_bucket(now, iat):
    verdict = issue_verdict(
        Status.NO_ABNORMALITY,
        now=now,
        issuer=ISSUER,
        riskset_version=1,
        bundle_expires_at=now + 10 * DAY,
    )
    assert verdict.issued_at == iat
    assert verdict.issued_at % BUCKET == 0
    assert verdict.expires_at == iat + TTL_MAX  # default: the 24 h maximum


def _issue(**kwargs: Any) -> Verdict:
    args: dict[str, Any] = {
        "now": BUCKET_START + 123,
        "issuer": ISSUER,
        "riskset_version": 1,
        "bundle_expires_at": BUCKET_START + 10 * DAY,
    }
    args.update(kwargs)
    return issue_verdict(Status.REVIEW_REQUIRED, **args)


def test_expiry_is_iat_plus_ttl():
    assert _issue(ttl_s=HOUR).expires_at == BUCKET_START + HOUR


def test_expiry_never_past_the_bundle_expiry():
    v = _issue(bundle_expires_at=BUCKET_START + 1000)
    assert v.expires_at == BUCKET_START + 1000
    v = _issue(bundle_expires_at=BUCKET_START + 1000, ttl_s=HOUR)
    assert v.expires_at == BUCKET_START + 1000


@pytest.mark.parametrize("ttl_s", [0, -1, TTL_MAX + 1, 2 * TTL_MAX])
def test_ttl_outside_24h_is_refused(ttl_s):
    with pytest.raises(ValueError):
        _issue(ttl_s=ttl_s)


def test_expiry_at_most_24h_after_iat():
    v = _issue(ttl_s=TTL_MAX)
    assert v.expires_at - v.issued_at == TTL_MAX


@pytest.mark.parametrize("length", [1, 16, 31, 33, 64])
def test_binding_of_wrong_length_is_refused(length):
    with pytest.raises(ValueError):
        _issue(binding=b"\x01" * length)


def test_verdict_id_is_16_random_bytes():
    a, b = _issue(), _issue()
    assert len(a.verdict_id) == 16
    assert len(b.verdict_id) == 16
    assert a.verdict_id != b.verdict_id


def test_two_tokens_of_the_same_verdict_content_differ(signer):
    token_a, _ = make_token(signer)
    token_b, _ = make_token(signer)
    assert token_a != token_b


# --------------------------------------------------------------------------------------------
# Reject: one row per attack, with the error class and the verifier's reason text.
# --------------------------------------------------------------------------------------------


@dataclass
class Attack:
    token: str
    keys: VerdictKeySet
    kwargs: dict[str, Any] = field(default_factory=dict)


def _wrong_kid(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s)
    return Attack(token, verdict_keys(Ed25519Signer.generate()))


def _kid_of_another_trusted_key(s: Ed25519Signer) -> Attack:
    other = Ed25519Signer.generate()
    _, issued = make_token(s)
    token = hand_token(s, claims_of(issued), header={1: -8, 4: other.kid})
    return Attack(token, verdict_keys(s, other))


def _no_kid(s: Ed25519Signer) -> Attack:
    _, issued = make_token(s)
    return Attack(hand_token(s, claims_of(issued), header={1: -8}), verdict_keys(s))


def _key_window_ended_before_iat(s: Ed25519Signer) -> Attack:
    token, issued = make_token(s)
    return Attack(token, verdict_keys(s, not_after=issued.issued_at - 1))


def _key_not_yet_valid_at_iat(s: Ed25519Signer) -> Attack:
    token, issued = make_token(s)
    return Attack(token, verdict_keys(s, not_before=issued.issued_at + 1))


def _alg_es256_resigned(s: Ed25519Signer) -> Attack:
    _, issued = make_token(s)
    return Attack(hand_token(s, claims_of(issued), header={1: -7, 4: s.kid}), verdict_keys(s))


def _alg_missing(s: Ed25519Signer) -> Attack:
    _, issued = make_token(s)
    return Attack(hand_token(s, claims_of(issued), header={4: s.kid}), verdict_keys(s))


def _header_with_content_type(s: Ed25519Signer) -> Attack:
    _, issued = make_token(s)
    header = {1: -8, 3: "application/cwt", 4: s.kid}
    return Attack(hand_token(s, claims_of(issued), header=header), verdict_keys(s))


def _another_issuer(s: Ed25519Signer) -> Attack:
    tianjin = Ed25519Signer.generate()
    token, _ = make_token(tianjin, issuer=OTHER_ISSUER)
    return Attack(token, verdict_keys(s))


def _iss_of_another_issuer_with_our_key(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s, issuer=OTHER_ISSUER)
    return Attack(token, verdict_keys(s))


def _binding_of_another_person(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s, binding=binding_of("110105194912310029"))
    return Attack(token, verdict_keys(s), {"identity": SubjectBinding(BINDING)})


def _another_person_at_the_desk(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s)
    return Attack(token, verdict_keys(s), {"identity": SubjectId("110105194912310029", SALT)})


def _unbound_token_when_binding_asked(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s, binding=b"")
    return Attack(token, verdict_keys(s), {"identity": SubjectBinding(BINDING)})


def _unbound_token_when_id_checked(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s, binding=b"")
    return Attack(token, verdict_keys(s), {"identity": SubjectId(ID_NUMBER, SALT)})


def _stale_version(s: Ed25519Signer) -> Attack:
    token, _ = make_token(s)
    return Attack(token, verdict_keys(s), {"min_riskset_version": VERSION + 1})


def _expired(s: Ed25519Signer) -> Attack:
    token, issued = make_token(s)
    return Attack(token, verdict_keys(s), {"now": issued.expires_at + SKEW + 1})


def _not_yet_valid(s: Ed25519Signer) -> Attack:
    token, issued = make_token(s)
    return Attack(token, verdict_keys(s), {"now": issued.issued_at - SKEW - 1})


def _claims(mutate: Callable[[dict[int, Any]], None]) -> Callable[[Ed25519Signer], Attack]:
    def build(s: Ed25519Signer) -> Attack:
        _, issued = make_token(s)
        claims = claims_of(issued)
        mutate(claims)
        return Attack(hand_token(s, claims), verdict_keys(s))

    return build


def _set(key: int, value: Any) -> Callable[[dict[int, Any]], None]:
    return lambda c: c.__setitem__(key, value)


def _set_sc(key: int, value: Any) -> Callable[[dict[int, Any]], None]:
    return lambda c: c[-65537].__setitem__(key, value)


def _del(key: int) -> Callable[[dict[int, Any]], None]:
    return lambda c: c.__delitem__(key)


def _del_sc(key: int) -> Callable[[dict[int, Any]], None]:
    return lambda c: c[-65537].__delitem__(key)


def _text(text: str) -> Callable[[Ed25519Signer], Attack]:
    return lambda s: Attack(text, verdict_keys(s))


def _edit(change: Callable[[str], str]) -> Callable[[Ed25519Signer], Attack]:
    def build(s: Ed25519Signer) -> Attack:
        token, _ = make_token(s)
        return Attack(change(token), verdict_keys(s))

    return build


def _edit_bytes(change: Callable[[bytes], bytes]) -> Callable[[Ed25519Signer], Attack]:
    return _edit(lambda t: to_token(change(cose_bytes(t))))


def _pad_to_too_long(token: str) -> str:
    return " " * (MAX_TOKEN_CHARS + 1 - len(token)) + token


REJECTS: list[tuple[str, Callable[[Ed25519Signer], Attack], type[SignedDataError], str]] = [
    ("wrong_kid_key_not_in_set", _wrong_kid, UnknownKeyError, "unknown key"),
    ("kid_of_another_trusted_key", _kid_of_another_trusted_key, BadSignatureError, "bad signature"),
    ("no_kid", _no_kid, MalformedError, "malformed"),
    ("key_window_ended_before_iat", _key_window_ended_before_iat, ExpiredError, "expired"),
    ("key_not_yet_valid_at_iat", _key_not_yet_valid_at_iat, ExpiredError, "expired"),
    (
        "alg_es256_resigned_by_the_right_key",
        _alg_es256_resigned,
        BadSignatureError,
        "bad signature",
    ),
    ("alg_missing", _alg_missing, MalformedError, "malformed"),
    ("header_with_content_type", _header_with_content_type, MalformedError, "malformed"),
    ("token_of_another_issuer", _another_issuer, UnknownKeyError, "unknown key"),
    (
        "iss_of_another_issuer_our_key",
        _iss_of_another_issuer_with_our_key,
        UnknownKeyError,
        "unknown key",
    ),
    (
        "binding_of_another_person",
        _binding_of_another_person,
        BindingMismatchError,
        "binding mismatch",
    ),
    (
        "unbound_token_binding_asked",
        _unbound_token_when_binding_asked,
        BindingMismatchError,
        "binding mismatch",
    ),
    (
        "another_person_at_the_desk",
        _another_person_at_the_desk,
        BindingMismatchError,
        "binding mismatch",
    ),
    (
        "unbound_token_id_checked",
        _unbound_token_when_id_checked,
        BindingMismatchError,
        "binding mismatch",
    ),
    ("stale_version", _stale_version, StaleVersionError, "stale bundle version"),
    ("expired_past_exp_plus_skew", _expired, ExpiredError, "expired"),
    ("not_yet_valid_before_iat_minus_skew", _not_yet_valid, ExpiredError, "expired"),
    ("claims_extra_key_sub", _claims(_set(2, "someone")), MalformedError, "malformed"),
    ("claims_extra_key_nbf", _claims(_set(5, NOW)), MalformedError, "malformed"),
    ("claims_extra_staycheck_key_city", _claims(_set_sc(5, "120100")), MalformedError, "malformed"),
    ("iss_not_six_digits", _claims(_set(1, "1100000")), MalformedError, "malformed"),
    ("iss_letters", _claims(_set(1, "BEIJIN")), MalformedError, "malformed"),
    (
        "iss_fullwidth_digits",
        _claims(_set(1, "\uff11\uff11\uff10\uff10\uff10\uff10")),
        MalformedError,
        "malformed",
    ),
    ("claims_binding_without_params", _claims(_del_sc(4)), MalformedError, "malformed"),
    ("claims_params_without_binding", _claims(_del_sc(3)), MalformedError, "malformed"),
    # docs/formats.md: memory 19456..262144 KiB, passes 1..16, lanes 1..16, memory x passes
    # 38912..262144: below the floor a screenshot is cheap to guess, above the ceiling a
    # token could make a verifier spend seconds.
    ("params_memory_below_floor", _claims(_set_sc(4, [19455, 4, 1])), MalformedError, "malformed"),
    ("params_cost_below_floor", _claims(_set_sc(4, [19456, 1, 1])), MalformedError, "malformed"),
    (
        "params_memory_above_ceiling",
        _claims(_set_sc(4, [262145, 1, 1])),
        MalformedError,
        "malformed",
    ),
    ("params_cost_above_ceiling", _claims(_set_sc(4, [262144, 3, 1])), MalformedError, "malformed"),
    ("params_256mib_two_passes", _claims(_set_sc(4, [262144, 2, 1])), MalformedError, "malformed"),
    ("params_zero_lanes", _claims(_set_sc(4, [65536, 2, 0])), MalformedError, "malformed"),
    ("params_17_lanes", _claims(_set_sc(4, [65536, 2, 17])), MalformedError, "malformed"),
    ("params_bool_passes", _claims(_set_sc(4, [65536, True, 4])), MalformedError, "malformed"),
    ("params_two_members", _claims(_set_sc(4, [65536, 2])), MalformedError, "malformed"),
    ("params_as_map", _claims(_set_sc(4, {1: 65536, 2: 2, 3: 4})), MalformedError, "malformed"),
    ("claims_missing_cti", _claims(_del(7)), MalformedError, "malformed"),
    ("claims_missing_iss", _claims(_del(1)), MalformedError, "malformed"),
    ("claims_missing_exp", _claims(_del(4)), MalformedError, "malformed"),
    ("claims_missing_status", _claims(_del_sc(1)), MalformedError, "malformed"),
    ("claims_missing_version", _claims(_del_sc(2)), MalformedError, "malformed"),
    ("cti_15_bytes", _claims(_set(7, b"\x00" * 15)), MalformedError, "malformed"),
    ("status_unknown_3", _claims(_set_sc(1, 3)), MalformedError, "malformed"),
    ("status_as_text", _claims(_set_sc(1, "NO_ABNORMALITY")), MalformedError, "malformed"),
    ("binding_31_bytes", _claims(_set_sc(3, b"\x00" * 31)), MalformedError, "malformed"),
    ("version_0", _claims(_set_sc(2, 0)), MalformedError, "malformed"),
    ("iat_as_text", _claims(_set(6, str(IAT))), MalformedError, "malformed"),
    ("exp_negative", _claims(_set(4, -1)), MalformedError, "malformed"),
    ("claims_empty_map", _claims(lambda c: c.clear()), MalformedError, "malformed"),
    ("no_prefix", _edit(lambda t: t[4:]), MalformedError, "malformed"),
    ("lowercase_prefix", _edit(lambda t: "sc1:" + t[4:]), MalformedError, "malformed"),
    ("other_prefix_version", _edit(lambda t: "SC2:" + t[4:]), MalformedError, "malformed"),
    ("too_long", _text("SC1:" + "0" * (MAX_TOKEN_CHARS - 3)), MalformedError, "malformed"),
    # A good token made too long by padding: refused on its length before any other work.
    ("too_long_padded_good_token", _edit(_pad_to_too_long), MalformedError, "malformed"),
    ("cose_over_1024_bytes", _text(to_token(b"\x00" * 1025)), MalformedError, "malformed"),
    ("empty_string", _text(""), MalformedError, "malformed"),
    ("prefix_only", _text("SC1:"), MalformedError, "malformed"),
    (
        "character_outside_base45",
        _edit(lambda t: t[:10] + "a" + t[11:]),
        MalformedError,
        "malformed",
    ),
    ("truncated_text", _edit(lambda t: t[:-3]), MalformedError, "malformed"),
    ("truncated_cose", _edit_bytes(lambda b: b[:-1]), MalformedError, "malformed"),
    ("trailing_bytes_after_cose", _edit_bytes(lambda b: b + b"\x00"), MalformedError, "malformed"),
    ("untagged_cose", _edit_bytes(lambda b: b[1:]), MalformedError, "malformed"),
]


@pytest.mark.parametrize(
    ("build", "expected", "text"), [r[1:] for r in REJECTS], ids=[r[0] for r in REJECTS]
)
def test_reject(signer, build, expected, text):
    attack = build(signer)
    kwargs = {"now": NOW, "identity": NO_BINDING_CHECK, **attack.kwargs}
    with pytest.raises(expected) as info:
        verify_token(attack.token, attack.keys, **kwargs)
    assert reason(info.value) == text


def test_cose_bytes_verify_like_the_text(signer):
    token, issued = make_token(signer)
    keys = verdict_keys(signer)
    assert verify_token(cose_bytes(token), keys, now=NOW, identity=NO_BINDING_CHECK) == issued


def test_non_string_token_is_refused(signer):
    with pytest.raises(MalformedError):
        verify_token(12345, verdict_keys(signer), now=NOW, identity=NO_BINDING_CHECK)  # type: ignore[arg-type]


def test_identity_is_a_required_choice(signer):
    """SPEC.md: identity is checked unless the verifier explicitly chose not to; there is no
    default that skips it, and a stray value is not read as "skip"."""
    token, _ = make_token(signer)
    with pytest.raises(TypeError):
        verify_token(token, verdict_keys(signer), now=NOW)  # type: ignore[call-arg]
    for stray in (None, BINDING, False, ID_NUMBER):
        with pytest.raises(TypeError):
            verify_token(token, verdict_keys(signer), now=NOW, identity=stray)  # type: ignore[arg-type]


def _refusals(token: str, keys: VerdictKeySet, variants: list[tuple[int, str]]) -> list[int]:
    accepted = []
    for position, variant in variants:
        try:
            verify_token(variant, keys, now=NOW, identity=NO_BINDING_CHECK)
        except SignedDataError as e:
            assert reason(e) != "invalid", position
        else:
            accepted.append(position)
    return accepted


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF], ids=["bit0", "bit7", "all_bits"])
def test_every_flipped_byte_of_the_cose_bytes_is_refused(signer, mask):
    token, _ = make_token(signer)
    keys = verdict_keys(signer)
    data = cose_bytes(token)
    variants = []
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= mask
        variants.append((i, to_token(bytes(flipped))))
    assert len(variants) == len(data) > 100
    assert _refusals(token, keys, variants) == []


def test_every_changed_character_of_the_text_form_is_refused(signer):
    token, _ = make_token(signer)
    keys = verdict_keys(signer)
    variants = []
    for i in range(len(token)):
        # The next character of the alphabet (":" of the prefix becomes "0").
        changed = ALPHABET[(ALPHABET.index(token[i]) + 1) % len(ALPHABET)]
        variants.append((i, token[:i] + changed + token[i + 1 :]))
    assert _refusals(token, keys, variants) == []


def test_reason_texts():
    assert reason(MalformedError("x")) == "malformed"
    assert reason(BadSignatureError("x")) == "bad signature"
    assert reason(UnknownKeyError("x")) == "unknown key"
    assert reason(ExpiredError("x")) == "expired"
    assert reason(BindingMismatchError("x")) == "binding mismatch"
    assert reason(StaleVersionError("x")) == "stale bundle version"
    assert reason(SignedDataError("x")) == "invalid"


# --------------------------------------------------------------------------------------------
# Base45 (RFC 9285)
# --------------------------------------------------------------------------------------------

RFC9285_EXAMPLES = [
    (b"AB", "BB8"),  # section 4.3
    (b"Hello!!", "%69 VD92EX0"),  # section 4.3
    (b"base-45", "UJCLQE7W581"),  # section 4.3
    (b"ietf!", "QED8WEX0"),  # section 4.4 (decoding)
]


@pytest.mark.parametrize(("raw", "text"), RFC9285_EXAMPLES)
def test_base45_rfc9285_examples(raw, text):
    assert base45.b45encode(raw) == text
    assert base45.b45decode(text) == raw


def test_base45_edge_values():
    # RFC 9285 section 4: [a, b] -> a*256 + b = c + d*45 + e*45^2, output c d e.
    assert base45.b45encode(b"") == ""
    assert base45.b45decode("") == b""
    assert base45.b45encode(b"\x00\x00") == "000"
    assert base45.b45encode(b"\xff\xff") == "FGW"  # 65535 = 15 + 16*45 + 32*2025
    assert base45.b45encode(b"\xff") == "U5"  # 255 = 30 + 5*45
    assert base45.b45decode("FGW") == b"\xff\xff"


def test_base45_round_trip_all_byte_values():
    data = bytes(range(256))
    for n in range(len(data) + 1):
        assert base45.b45decode(base45.b45encode(data[:n])) == data[:n]


@pytest.mark.parametrize(
    "text",
    [
        "GGW",  # RFC 9285 section 6: 65536, out of range
        "ZZZ",  # 35 + 35*45 + 35*2025 > 65535
        "::",  # 44 + 44*45 = 2024 > 255 for a trailing pair
        "BB8A",  # length 3n+1
        "A",
        "bb8",  # lowercase is outside the alphabet
        "BB!",
        "BB8=",
        "BB\u00d8",
    ],
)
def test_base45_invalid_input_raises_value_error(text):
    with pytest.raises(ValueError):
        base45.b45decode(text)


# --------------------------------------------------------------------------------------------
# Subject binding
# --------------------------------------------------------------------------------------------


def test_binding_is_the_documented_argon2id():
    assert compute_binding(ID_NUMBER, SALT, FAST) == binding_of(ID_NUMBER)
    assert len(compute_binding(ID_NUMBER, SALT, FAST)) == BINDING_LENGTH == 32


def test_default_parameters_are_the_documented_ones():
    """docs/formats.md: 64 MiB, 2 passes, 4 lanes by default."""
    params = BindingParameters()
    assert (params.memory_kib, params.iterations, params.lanes) == (65536, 2, 4)
    assert compute_binding(ID_NUMBER, SALT) == binding_of(ID_NUMBER, params=params)


def test_argon2id_rfc9106_vector():
    """RFC 9106 section 5.3 (Argon2id, m=32 KiB, t=3, p=4, with secret and associated data):
    the library the binding uses computes the RFC's own tag."""
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    kdf = Argon2id(
        salt=b"\x02" * 16,
        length=32,
        iterations=3,
        lanes=4,
        memory_cost=32,
        ad=b"\x04" * 12,
        secret=b"\x03" * 8,
    )
    tag = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    assert kdf.derive(b"\x01" * 32).hex() == tag


def test_binding_same_id_and_salt_same_binding():
    assert compute_binding(ID_NUMBER, SALT, FAST) == compute_binding(ID_NUMBER, bytes(SALT), FAST)


def test_binding_check_character_case_does_not_matter():
    upper = compute_binding("11010519491231002X", SALT, FAST)
    lower = compute_binding("11010519491231002x", SALT, FAST)
    assert upper == lower
    assert compute_binding(" 11010519491231002x\n", SALT, FAST) == upper


def test_binding_differs_with_salt_and_id():
    other_salt = bytes(range(1, 17))
    assert compute_binding(ID_NUMBER, other_salt, FAST) != compute_binding(ID_NUMBER, SALT, FAST)
    assert compute_binding("110105194912310029", SALT, FAST) != compute_binding(
        ID_NUMBER, SALT, FAST
    )


@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_binding_wrong_salt_length_raises(length):
    assert length != SALT_LENGTH
    with pytest.raises(ValueError):
        compute_binding(ID_NUMBER, b"\x00" * length, FAST)


def test_binding_normalization_is_the_documented_one():
    """docs/formats.md: NFKC, whitespace removed, upper-cased; full-width digits from a
    Chinese input method and spaces inside the number give the same binding."""
    # U+FF10..U+FF19 are the full-width digits 0..9.
    full_width = "".join(chr(0xFF10 + int(c)) for c in ID_NUMBER[:-1]) + "x"
    assert compute_binding(full_width, SALT, FAST) == binding_of(ID_NUMBER)
    assert compute_binding("110105 19491231 002X", SALT, FAST) == binding_of(ID_NUMBER)


@pytest.mark.parametrize("id_number", ["11010519491231002X!", "1101051949123100\u00c9", "x" * 65])
def test_binding_refuses_what_is_not_letters_and_digits(id_number):
    with pytest.raises(ValueError):
        compute_binding(id_number, SALT, FAST)


@pytest.mark.parametrize("id_number", ["", "   "])
def test_binding_empty_identity_raises(id_number):
    with pytest.raises(ValueError):
        compute_binding(id_number, SALT, FAST)


def test_binding_matches():
    b = compute_binding(ID_NUMBER, SALT, FAST)
    assert binding_matches(b, ID_NUMBER.lower(), SALT, FAST)
    assert not binding_matches(b, "110105194912310029", SALT, FAST)
    assert not binding_matches(b, ID_NUMBER, bytes(range(1, 17)), FAST)
    # The same ID and salt under other parameters is another binding.
    assert not binding_matches(b, ID_NUMBER, SALT, BindingParameters(20 * 1024, 2, 1))


def test_binding_matches_a_verified_token(signer):
    """The verifier's path: derive from the ID card, the salt and the token's parameters."""
    token, _ = make_token(signer, binding=compute_binding(ID_NUMBER, SALT, FAST))
    keys = verdict_keys(signer)
    card = SubjectId("11010519491231002x", SALT)
    assert verify_token(token, keys, now=NOW, identity=card).binding == BINDING


def test_binding_uses_the_parameters_the_token_names(signer):
    """Parameters can be raised: a token naming other parameters is checked with those."""
    params = BindingParameters(memory_kib=24 * 1024, iterations=2, lanes=2)
    token, _ = make_token(signer, binding=binding_of(ID_NUMBER, params=params), params=params)
    keys = verdict_keys(signer)
    assert verify_token(token, keys, now=NOW, identity=SubjectId(ID_NUMBER, SALT))


def test_subject_id_without_salt_is_a_mismatch_for_a_bound_token(signer):
    token, _ = make_token(signer)
    with pytest.raises(BindingMismatchError):
        verify_token(token, verdict_keys(signer), now=NOW, identity=SubjectId(ID_NUMBER, b""))


def test_identity_values_do_not_print_the_id():
    assert ID_NUMBER not in repr(SubjectId(ID_NUMBER, SALT))
    assert BINDING.hex() not in repr(SubjectBinding(BINDING))


def test_verdict_claims_helper_agrees_with_cose_layout(signer):
    """Guards the test's own claims_of against drifting from docs/formats.md."""
    token, issued = make_token(signer)
    payload = cbor2.loads(cose_bytes(token)).value[2]
    assert cbor2.dumps(claims_of(issued), canonical=True) == payload
    assert cose.ALG_EDDSA == -8

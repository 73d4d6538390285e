"""Fuzzing in ``make test``, bounded (Hypothesis, about 300 examples a target, no deadline);
``bench/fuzz.py`` runs the same targets for as long as asked (``make fuzz``).

Targets and findings are defined in ``tests/fuzz/targets.py``: the request path from raw
bytes to a verdict must raise nothing but our own errors (and protobuf's ``DecodeError`` when
parsing), refusals must name a field and a rule and quote nothing; the token verifier must
raise nothing but ``SignedDataError`` and accept nothing but what was signed.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, example, find, given, settings
from hypothesis import strategies as st
from staycheck.geo.errors import InvalidInputError
from staycheck.geo.itinerary import Status
from staycheck.trust.base45 import b45decode, b45encode
from staycheck.trust.verdict import decode_token

from tests.fuzz import targets
from tests.helpers import DAY, NOW

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = targets.seed_requests()


# --- the request path -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff\x00" * 8)
@example(SEEDS[0])
def test_request_path_from_raw_bytes(data):
    targets.request_path(data)


@st.composite
def mutated_seed(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["set", "insert", "delete", "splice"]))
        if op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i]
        else:
            data[i:i] = draw(st.sampled_from(SEEDS))
    return bytes(data)


@FUZZ
@given(mutated_seed())
def test_request_path_from_mutated_requests(data):
    targets.request_path(data)


@FUZZ
@given(targets.requests())
def test_request_path_from_structured_stays(request):
    targets.request_path(request.SerializeToString())
    targets.run_request(request)


def test_the_seeds_reach_a_verdict():
    """The targets above get past parsing and validation: the seeds give SPEC.md's answers
    (6 h inside square B at now-3d: REVIEW_REQUIRED; an empty itinerary: NO_ABNORMALITY)."""
    assert targets.request_path(SEEDS[0]) is Status.REVIEW_REQUIRED
    assert targets.request_path(SEEDS[3]) is Status.NO_ABNORMALITY
    assert targets.request_path(b"\x0a\x02\x0a\x00") is None  # a stay with no times


def test_structured_requests_reach_both_verdicts():
    """The structured strategy does get through validation to matching, both ways."""
    for status in Status:
        find(
            targets.requests(),
            lambda r, s=status: targets.run_request(r) is s,
            settings=settings(
                deadline=None, database=None, max_examples=2000, phases=[Phase.generate]
            ),
        )


# --- the token verifier ---------------------------------------------------------------------


@FUZZ
@given(targets.tokens_any)
@example("")
@example("SC1:")
@example("SC1:" + "Z" * 2000)
@example(targets.TOKEN + " ")
def test_token_verifier_from_arbitrary_text(text):
    targets.token_path(text)


@FUZZ
@given(targets.mutated_tokens())
def test_token_verifier_from_mutated_real_tokens(text):
    targets.token_path(text)


@FUZZ
@given(targets.structured_tokens())
def test_token_verifier_from_structured_cose(text):
    targets.token_path(text)


def test_the_real_token_verifies_and_a_flip_does_not():
    """The token targets can tell an accepted token from a refused one."""
    assert targets.token_path(targets.TOKEN) == targets.VERDICT
    data = bytearray(b45decode(targets.TOKEN[4:]))
    data[-1] ^= 1
    assert targets.token_path("SC1:" + b45encode(bytes(data))) is None
    assert targets.token_path(targets.TOKEN, now=NOW + 3 * DAY) is None  # expired
    assert decode_token(targets.TOKEN)[1] == targets.VERDICT


@pytest.mark.parametrize(
    ("field", "rule"),
    [
        ("stays[0].location.latitude", "95.1234567 is over 90"),
        ("stays[2].arrival", "1795000000 is before 1970-01-01"),
        ("stays[0].city_code", "ABCDEFGHIJ is not a code"),
        ("stays[0].place", "unknown field"),
        ("120100", "must be a prefecture-level code"),
    ],
)
def test_a_refusal_that_quotes_a_value_is_a_finding(field, rule):
    """The refusal check of the request target can fail."""
    with pytest.raises(AssertionError):
        targets.check_refusal(InvalidInputError(field, rule), ["ABCDEFGHIJ"])
    targets.check_refusal(InvalidInputError("stays[0].arrival", "required"), ["ABCDEFGHIJ"])

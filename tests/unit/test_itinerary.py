"""Itinerary validation (``staycheck.geo.itinerary.validate``): one row per rejection rule.

Each row puts the offending stay at index 2, after two valid stays, and checks the
exception type, the field path it names, and that its message (which may be logged and
shown to a caller) does not carry the offending value (SPEC.md, privacy promises; STYLE.md,
errors name the field and the rule, never the value).
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest
from staycheck.cli.samples import rfc3339
from staycheck.geo.errors import Error, InvalidInputError
from staycheck.geo.itinerary import DEFAULT_LIMITS, ItineraryLimits, Stay, is_city_code, validate

from tests.helpers import BJ_LAT, BJ_LON, DAY, HOUR, NOW, TJ_LAT, TJ_LON

CITIES_JSON = pathlib.Path(__file__).parents[2] / "cli" / "data" / "jjj_cities.json"

A = NOW - 3 * DAY  # a valid arrival


def good_prefix() -> list[Stay]:
    return [
        Stay("110100", A, A + 6 * HOUR, (BJ_LAT, BJ_LON)),
        Stay("120100", A + 6 * HOUR, A + 12 * HOUR),
    ]


# (rule, offending stay at index 2, expected field, offending values that must not be shown)
REJECTIONS = [
    (
        "nan_latitude",
        Stay("120100", A, A + HOUR, (math.nan, TJ_LON)),
        "stays[2].location",
        ["nan", "NaN"],
    ),
    (
        "infinite_longitude",
        Stay("120100", A, A + HOUR, (TJ_LAT, math.inf)),
        "stays[2].location",
        ["inf", "Infinity"],
    ),
    (
        "negative_infinite_latitude",
        Stay("120100", A, A + HOUR, (-math.inf, TJ_LON)),
        "stays[2].location",
        ["-inf", "Infinity"],
    ),
    (
        "latitude_above_90",
        Stay("120100", A, A + HOUR, (91.0, TJ_LON)),
        "stays[2].location.latitude",
        ["91"],
    ),
    (
        "latitude_below_minus_90",
        Stay("120100", A, A + HOUR, (-90.5, TJ_LON)),
        "stays[2].location.latitude",
        ["-90.5"],
    ),
    (
        "longitude_below_minus_180",
        Stay("120100", A, A + HOUR, (TJ_LAT, -181.0)),
        "stays[2].location.longitude",
        ["-181", "181"],
    ),
    (
        "longitude_above_180",
        Stay("120100", A, A + HOUR, (TJ_LAT, 180.25)),
        "stays[2].location.longitude",
        ["180.25"],
    ),
    (
        "departure_before_arrival",
        Stay("120100", A + HOUR, A + HOUR - 1, (TJ_LAT, TJ_LON)),
        "stays[2].departure",
        [str(A + HOUR), str(A + HOUR - 1), rfc3339(A + HOUR)[:10]],
    ),
    (
        "departure_equal_to_arrival",
        Stay("120100", A + HOUR, A + HOUR),
        "stays[2].departure",
        [str(A + HOUR), rfc3339(A + HOUR)[:10]],
    ),
    (
        "arrival_before_1970",
        Stay("120100", -12_345, A),
        "stays[2].arrival",
        ["-12345", "12345", "1969"],
    ),
    (
        "departure_too_far_in_the_future",
        Stay("120100", A, NOW + DEFAULT_LIMITS.max_future_s + 1),
        "stays[2].departure",
        [str(NOW + DEFAULT_LIMITS.max_future_s + 1), rfc3339(NOW + DAY + 1)[:10]],
    ),
    ("empty_city_code", Stay("", A, A + HOUR), "stays[2].city_code", []),
    ("non_numeric_city_code", Stay("12O1OO", A, A + HOUR), "stays[2].city_code", ["12O1OO"]),
    (
        "non_ascii_digit_city_code",
        Stay("１２０１００", A, A + HOUR),
        "stays[2].city_code",
        ["１２０１００"],
    ),
    ("five_digit_city_code", Stay("12010", A, A + HOUR), "stays[2].city_code", ["12010"]),
    ("seven_digit_city_code", Stay("1201000", A, A + HOUR), "stays[2].city_code", ["1201000"]),
    ("county_level_code", Stay("110105", A, A + HOUR), "stays[2].city_code", ["110105"]),
    ("province_code", Stay("110000", A, A + HOUR), "stays[2].city_code", ["110000"]),
    ("unknown_province_code", Stay("990100", A, A + HOUR), "stays[2].city_code", ["990100"]),
]


@pytest.mark.parametrize(
    ("rule", "bad", "field", "values"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
def test_rejection_rule(rule, bad, field, values):
    with pytest.raises(InvalidInputError) as info:
        validate([*good_prefix(), bad], now=NOW)
    err = info.value
    assert isinstance(err, Error)
    assert err.field == field
    assert err.rule  # a non-empty rule text
    message = str(err)
    assert message.startswith(f"{field}: ")
    for value in values:
        assert value not in message


def test_rejection_too_many_stays():
    n = DEFAULT_LIMITS.max_stays + 1
    stays = [Stay("120100", A + i, A + i + 1) for i in range(n)]
    with pytest.raises(InvalidInputError) as info:
        validate(stays, now=NOW)
    assert info.value.field == "stays"
    assert str(n) not in str(info.value)


def test_rejection_too_many_stays_custom_limit():
    limits = ItineraryLimits(max_stays=3)
    stays = [Stay("120100", A + i, A + i + 1) for i in range(4)]
    with pytest.raises(InvalidInputError) as info:
        validate(stays, now=NOW, limits=limits)
    assert info.value.field == "stays"
    validate(stays[:3], now=NOW, limits=limits)


def test_rejection_departure_too_far_custom_limit():
    limits = ItineraryLimits(max_future_s=HOUR)
    with pytest.raises(InvalidInputError) as info:
        validate([Stay("120100", A, NOW + HOUR + 1)], now=NOW, limits=limits)
    assert info.value.field == "stays[0].departure"
    validate([Stay("120100", A, NOW + HOUR)], now=NOW, limits=limits)


def test_rejection_names_the_first_bad_stay():
    stays = [*good_prefix(), Stay("110105", A, A + HOUR), Stay("120100", A, A - 1)]
    with pytest.raises(InvalidInputError) as info:
        validate(stays, now=NOW)
    assert info.value.field == "stays[2].city_code"


ACCEPTED = [
    ("empty_itinerary", []),
    ("duplicate_stays", [Stay("120100", A, A + 6 * HOUR)] * 2),
    (
        "duplicate_located_stays",
        [
            Stay("120100", A, A + 6 * HOUR, (TJ_LAT, TJ_LON)),
            Stay("120100", A, A + 6 * HOUR, (TJ_LAT, TJ_LON)),
        ],
    ),
    (
        "overlapping_stays",
        [Stay("120100", A, A + 3 * HOUR), Stay("120100", A + HOUR, A + 4 * HOUR)],
    ),
    (
        "overlapping_stays_in_two_cities",
        [Stay("120100", A, A + 3 * HOUR), Stay("131000", A + HOUR, A + 4 * HOUR)],
    ),
    ("stay_wholly_before_the_window", [Stay("120100", NOW - 30 * DAY, NOW - 20 * DAY)]),
    ("one_second_stay", [Stay("120100", A, A + 1)]),
    ("departure_exactly_max_future", [Stay("120100", A, NOW + DEFAULT_LIMITS.max_future_s)]),
    ("arrival_exactly_1970", [Stay("120100", 0, 1)]),
    (
        "latitude_and_longitude_bounds",
        [Stay("120100", A, A + 1, (90.0, 180.0)), Stay("120100", A, A + 1, (-90.0, -180.0))],
    ),
    ("province_administered_county", [Stay("429004", A, A + HOUR)]),
    ("max_stays", [Stay("120100", A + i, A + i + 1) for i in range(DEFAULT_LIMITS.max_stays)]),
]


@pytest.mark.parametrize(("title", "stays"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted(title, stays):
    validate(stays, now=NOW)  # does not raise


def test_every_shipped_city_code_is_accepted():
    codes = [c["code"] for c in json.loads(CITIES_JSON.read_text("utf-8"))["cities"]]
    assert len(codes) >= 13  # Beijing, Tianjin and Hebei's 11 cities at least
    for code in codes:
        assert is_city_code(code), code
        validate([Stay(code, A, A + HOUR)], now=NOW)


@pytest.mark.parametrize("code", ["110100", "120100", "131000", "130600", "500100", "429004"])
def test_is_city_code_accepts_prefecture_codes(code):
    assert is_city_code(code)


@pytest.mark.parametrize(
    "code",
    ["", "110000", "110105", "120101", "100100", "990100", "11010", "1101000", "11 100", "1101OO"],
)
def test_is_city_code_rejects_non_prefecture_codes(code):
    assert not is_city_code(code)

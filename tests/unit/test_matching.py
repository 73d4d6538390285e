"""The matching rule of SPEC.md ("Matching rule (normative)"), boundary by boundary.

Every case goes through the pure core: a bundle built by ``staycheck.geo.authoring.build_bundle``,
decoded with ``RiskAreaBundle.from_proto``, and ``staycheck.geo.matching.evaluate`` at a fixed
``now``. Itineraries are validated first (``evaluate`` expects validated input). Expected verdicts
come from the rule's text, not from running the code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pytest
from staycheck.cli.samples import cities, feature, square
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Level, Policy, RiskAreaBundle
from staycheck.geo.itinerary import Status, Stay, validate
from staycheck.geo.matching import evaluate

from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, collection, offset_north, square_feature

NO = Status.NO_ABNORMALITY
REVIEW = Status.REVIEW_REQUIRED

W0 = NOW - 14 * DAY  # start of the default window
T = NOW - 3 * DAY  # a start time well inside the window

LF = cities()["131000"]
INSIDE = (TJ_LAT, TJ_LON)  # centre of the 1 km square at the Tianjin centre
RING = square(TJ_LAT, TJ_LON, 1000)[0]
TOP_LAT = max(lat for _, lat in RING)  # latitude of the square's top (northern) edge
WEST_LON = min(lon for lon, _ in RING)
EAST_LON = max(lon for lon, _ in RING)
# 2 km north of the square: still in Tianjin (120100), outside the area.
OUTSIDE_SAME_CITY = (TJ_LAT + 2500 / 111_000, TJ_LON)
# Where the stays of the located/unlocated variants are: inside the square, or no location.
PLACES = {"located inside": INSIDE, "no location": None}


@functools.cache
def north_of_top(metres: float) -> float:
    """Latitude ``metres`` due north of the square's top edge (independent meridian arc)."""
    return offset_north(TOP_LAT, metres)


def make_bundle(*features: dict[str, Any], policy: Policy | None = None) -> RiskAreaBundle:
    msg = build_bundle(
        collection(*features),
        version=1,
        issued_at=NOW - HOUR,
        expires_at=NOW + 2 * DAY,
        policy=policy or Policy(),
    )
    return RiskAreaBundle.from_proto(msg, digest="x")


def verdict(stays: Sequence[Stay], bundle: RiskAreaBundle, *, now: int = NOW) -> Status:
    validate(stays, now=now)  # the cases are legal itineraries; evaluate expects that
    return evaluate(stays, bundle, now=now)


def tj(arrival: int, departure: int, location: tuple[float, float] | None = None) -> Stay:
    return Stay("120100", arrival, departure, location)


def lf(arrival: int, departure: int, location: tuple[float, float] | None = None) -> Stay:
    return Stay("131000", arrival, departure, location)


def city_bundle() -> RiskAreaBundle:
    """Areas always active (from now-60d, open end) in 120100 (high) and 131000 (medium)."""
    return make_bundle(
        square_feature("TJ", active_from=NOW - 60 * DAY),
        square_feature(
            "LF",
            city_code="131000",
            level="medium",
            lat=LF.lat,
            lon=LF.lon,
            active_from=NOW - 60 * DAY,
        ),
    )


# Durations, unions, cities and the window, with stays that have no location (city-level rule
# against areas that are always active), so only rules 1 and 2 decide.
DURATION_CASES = [
    ("total 3h59m59s does not qualify", [tj(T, T + 4 * HOUR - 1)], NO),
    ("total exactly 4h qualifies", [tj(T, T + 4 * HOUR)], REVIEW),
    (
        "two 3h stays overlapping by 2h are 4h",
        [tj(T, T + 3 * HOUR), tj(T + HOUR, T + 4 * HOUR)],
        REVIEW,
    ),
    ("two identical 3h stays are 3h", [tj(T, T + 3 * HOUR), tj(T, T + 3 * HOUR)], NO),
    ("1h stay within a 3h stay is 3h", [tj(T, T + 3 * HOUR), tj(T + HOUR, T + 2 * HOUR)], NO),
    (
        "overlapping stays spanning 3h59m59s",
        [tj(T + 2 * HOUR, T + 4 * HOUR - 1), tj(T, T + 3 * HOUR)],
        NO,
    ),
    ("two touching 2h stays are 4h", [tj(T, T + 2 * HOUR), tj(T + 2 * HOUR, T + 4 * HOUR)], REVIEW),
    (
        "two 2h stays a day apart are 4h",
        [tj(T, T + 2 * HOUR), tj(T + DAY, T + DAY + 2 * HOUR)],
        REVIEW,
    ),
    (
        "3h in 120100 and 3h in 131000 do not add up",
        [tj(T, T + 3 * HOUR), lf(T + 3 * HOUR, T + 6 * HOUR)],
        NO,
    ),
    (
        "3h in 120100 and 3h in 131000 at the same time",
        [tj(T, T + 3 * HOUR), lf(T, T + 3 * HOUR)],
        NO,
    ),
    ("4h in 131000 qualifies (control)", [lf(T, T + 4 * HOUR)], REVIEW),
    ("stay across the window start counts its 3h inside", [tj(W0 - 2 * HOUR, W0 + 3 * HOUR)], NO),
    (
        "clipped 3h plus 1h later in the city make 4h",
        [tj(W0 - 2 * HOUR, W0 + 3 * HOUR), tj(T, T + HOUR)],
        REVIEW,
    ),
    (
        "clipped 3h plus 59m59s later make under 4h",
        [tj(W0 - 2 * HOUR, W0 + 3 * HOUR), tj(T, T + HOUR - 1)],
        NO,
    ),
    ("6 days wholly before the window are ignored", [tj(W0 - 8 * DAY, W0 - 2 * DAY)], NO),
    ("a stay ending 1 s before the window start is ignored", [tj(W0 - DAY, W0 - 1)], NO),
    ("a stay ending exactly at the window start is ignored", [tj(W0 - DAY, W0)], NO),
    ("a stay ending 4h after the window start counts 4h", [tj(W0 - DAY, W0 + 4 * HOUR)], REVIEW),
    (
        "departure after now is clipped at now (3h before now)",
        [tj(NOW - 3 * HOUR, NOW + 12 * HOUR)],
        NO,
    ),
    (
        "departure after now is clipped at now (4h before now)",
        [tj(NOW - 4 * HOUR, NOW + 12 * HOUR)],
        REVIEW,
    ),
    ("a planned stay wholly after now is ignored", [tj(NOW + HOUR, NOW + 20 * HOUR)], NO),
    ("empty itinerary", [], NO),
]


@pytest.mark.parametrize(
    ("title", "stays", "expected"), DURATION_CASES, ids=[c[0] for c in DURATION_CASES]
)
def test_min_stay_union_and_window(title, stays, expected):
    assert verdict(stays, city_bundle()) is expected


def test_stay_order_does_not_change_the_union():
    stays = [tj(T + HOUR, T + 4 * HOUR), tj(T + DAY, T + DAY + HOUR), tj(T, T + 3 * HOUR)]
    # Union of the first and third is [T, T+4h): 4h without the second stay.
    assert verdict(stays, city_bundle()) is REVIEW
    assert verdict(list(reversed(stays)), city_bundle()) is REVIEW


# Area activation: the area's [active_from, active_until) against the stay's clipped interval.
# (stay arrival, stay departure, area active_from, area active_until, expected)
ACTIVATION_CASES = [
    ("active_from exactly at departure", T, T + 6 * HOUR, T + 6 * HOUR, None, NO),
    ("active_from 1 s before departure", T, T + 6 * HOUR, T + 6 * HOUR - 1, None, REVIEW),
    ("active_until exactly at arrival", T, T + 6 * HOUR, T - DAY, T, NO),
    ("active_until 1 s after arrival", T, T + 6 * HOUR, T - DAY, T + 1, REVIEW),
    ("active only strictly within the stay", T, T + 6 * HOUR, T + HOUR, T + HOUR + 1, REVIEW),
    ("active_from exactly at clipped end (now)", NOW - 6 * HOUR, NOW + 12 * HOUR, NOW, None, NO),
    (
        "active_from 1 s before clipped end (now)",
        NOW - 6 * HOUR,
        NOW + 12 * HOUR,
        NOW - 1,
        None,
        REVIEW,
    ),
    ("active_until exactly at clipped start", W0 - DAY, W0 + 6 * HOUR, W0 - 2 * DAY, W0, NO),
    ("active_until 1 s after clipped start", W0 - DAY, W0 + 6 * HOUR, W0 - 2 * DAY, W0 + 1, REVIEW),
    ("area ended 2 days before", T, T + 6 * HOUR, T - 10 * DAY, T - 2 * DAY, NO),
    ("area starts 2 days after", T, T + 6 * HOUR, T + 2 * DAY, None, NO),
]


@pytest.mark.parametrize("place", list(PLACES.values()), ids=list(PLACES))
@pytest.mark.parametrize(
    ("title", "arrival", "departure", "active_from", "active_until", "expected"),
    ACTIVATION_CASES,
    ids=[c[0] for c in ACTIVATION_CASES],
)
def test_area_activation_edges(
    title, arrival, departure, active_from, active_until, expected, place
):
    bundle = make_bundle(square_feature(active_from=active_from, active_until=active_until))
    assert verdict([tj(arrival, departure, place)], bundle) is expected


# (area level, flagged levels or None for the default, expected)
LEVEL_CASES = [
    ("low", None, NO),
    ("medium", None, REVIEW),
    ("high", None, REVIEW),
    ("low", {Level.LOW}, REVIEW),
    ("high", {Level.LOW}, NO),
    ("medium", {Level.HIGH}, NO),
    ("high", {Level.HIGH}, REVIEW),
    ("low", {Level.LOW, Level.MEDIUM, Level.HIGH}, REVIEW),
]


@pytest.mark.parametrize("place", list(PLACES.values()), ids=list(PLACES))
@pytest.mark.parametrize(("level", "flagged", "expected"), LEVEL_CASES)
def test_flagged_levels(level, flagged, expected, place):
    policy = Policy() if flagged is None else Policy(flagged_levels=frozenset(flagged))
    bundle = make_bundle(square_feature(level=level, active_from=NOW - 5 * DAY), policy=policy)
    assert verdict([tj(T, T + 6 * HOUR, place)], bundle) is expected


def test_low_area_does_not_mask_a_high_area_elsewhere():
    bundle = make_bundle(
        square_feature("LOW", level="low", active_from=NOW - 5 * DAY),
        square_feature(
            "HIGH", city_code="131000", lat=LF.lat, lon=LF.lon, active_from=NOW - 5 * DAY
        ),
    )
    assert verdict([tj(T, T + 6 * HOUR)], bundle) is NO
    assert verdict([lf(T, T + 6 * HOUR)], bundle) is REVIEW


def tj_area_only() -> RiskAreaBundle:
    return make_bundle(square_feature(active_from=NOW - 5 * DAY))


def lf_area_only() -> RiskAreaBundle:
    return make_bundle(
        square_feature("LF", city_code="131000", lat=LF.lat, lon=LF.lon, active_from=NOW - 5 * DAY)
    )


def test_city_rule_no_location_area_in_same_city_hits():
    assert verdict([tj(T, T + 6 * HOUR)], tj_area_only()) is REVIEW


def test_city_rule_no_location_area_in_other_city_does_not_hit():
    assert verdict([tj(T, T + 6 * HOUR)], lf_area_only()) is NO


def test_located_stay_outside_polygon_in_area_city_does_not_hit():
    # The city holds an area, but a located stay is judged by the spatial rule only.
    assert verdict([tj(T, T + 6 * HOUR, OUTSIDE_SAME_CITY)], tj_area_only()) is NO


def test_located_stay_hits_by_point_whatever_its_city_code():
    # Rule 3: for a located stay only the point counts, not the area's city code.
    assert verdict([lf(T, T + 6 * HOUR, INSIDE)], tj_area_only()) is REVIEW


def test_short_stay_inside_area_hits_when_its_city_qualifies():
    # 5h in Tianjin outside the area make the city qualify; the 10 min stay inside hits.
    stays = [tj(T, T + 5 * HOUR, OUTSIDE_SAME_CITY), tj(T + DAY, T + DAY + 600, INSIDE)]
    assert verdict(stays, tj_area_only()) is REVIEW


def test_short_stay_inside_area_alone_does_not_hit():
    assert verdict([tj(T + DAY, T + DAY + 600, INSIDE)], tj_area_only()) is NO


def test_short_stay_inside_area_does_not_borrow_another_citys_time():
    stays = [lf(T, T + 5 * HOUR), tj(T + DAY, T + DAY + 600, INSIDE)]
    assert verdict(stays, tj_area_only()) is NO


def test_activity_is_checked_against_the_stay_inside_not_the_city():
    # Area active from T; the stay inside the area ended before that, the long one
    # (outside the area) is during the activity: no stay hits.
    bundle = make_bundle(square_feature(active_from=T))
    stays = [tj(T - DAY, T - DAY + 600, INSIDE), tj(T, T + 5 * HOUR, OUTSIDE_SAME_CITY)]
    assert verdict(stays, bundle) is NO


BOUNDARY_POINTS = {
    "top edge midpoint": (TOP_LAT, TJ_LON),
    "north-east vertex": (TOP_LAT, EAST_LON),
    "west edge midpoint": (TJ_LAT, WEST_LON),
}


@pytest.mark.parametrize("point", list(BOUNDARY_POINTS.values()), ids=list(BOUNDARY_POINTS))
def test_point_exactly_on_the_polygon_boundary_hits(point):
    assert verdict([tj(T, T + 6 * HOUR, point)], tj_area_only()) is REVIEW


def test_point_one_centimetre_outside_the_boundary_does_not_hit():
    assert verdict([tj(T, T + 6 * HOUR, (north_of_top(0.01), TJ_LON))], tj_area_only()) is NO


def multipolygon_bundle() -> RiskAreaBundle:
    # Two 1 km squares in Tianjin, one at the centre and one 5 km east of it.
    dlon_5km = 5000 / (111_320 * 0.7757)  # cos(39.1256 deg) ~ 0.7757
    area = feature("MP", "120100", "high", [], active_from=NOW - 5 * DAY)
    area["geometry"] = {
        "type": "MultiPolygon",
        "coordinates": [square(TJ_LAT, TJ_LON, 1000), square(TJ_LAT, TJ_LON + dlon_5km, 1000)],
    }
    return make_bundle(area)


MULTI_CASES = [
    ("in the first part", (TJ_LAT, TJ_LON), REVIEW),
    ("in the second part", (TJ_LAT, TJ_LON + 5000 / (111_320 * 0.7757)), REVIEW),
    ("between the parts", (TJ_LAT, TJ_LON + 2500 / (111_320 * 0.7757)), NO),
]


@pytest.mark.parametrize(
    ("title", "point", "expected"), MULTI_CASES, ids=[c[0] for c in MULTI_CASES]
)
def test_multipolygon_area(title, point, expected):
    assert verdict([tj(T, T + 6 * HOUR, point)], multipolygon_bundle()) is expected


# (tolerance_m, metres due north of the top edge, expected)
TOLERANCE_CASES = [
    (100.0, 99.0, REVIEW),
    (100.0, 101.0, NO),
    (0.0, 99.0, NO),
    (1000.0, 990.0, REVIEW),
    (1000.0, 1010.0, NO),
    (20_000.0, 19_990.0, REVIEW),
    (20_000.0, 20_010.0, NO),
]


@pytest.mark.parametrize(("tolerance_m", "metres", "expected"), TOLERANCE_CASES)
def test_tolerance_north_of_top_edge(tolerance_m, metres, expected):
    # Due north of a parallel edge, the geodesic distance to the square is the meridian arc.
    bundle = make_bundle(
        square_feature(active_from=NOW - 5 * DAY), policy=Policy(tolerance_m=tolerance_m)
    )
    assert verdict([tj(T, T + 6 * HOUR, (north_of_top(metres), TJ_LON))], bundle) is expected


def test_tolerance_does_not_extend_the_active_interval():
    bundle = make_bundle(square_feature(active_from=T + DAY), policy=Policy(tolerance_m=100.0))
    # Within tolerance, but the stay ended before the area became active.
    assert verdict([tj(T, T + 6 * HOUR, (north_of_top(50.0), TJ_LON))], bundle) is NO


def test_empty_itinerary():
    assert verdict([], tj_area_only()) is NO


def test_bundle_without_areas():
    assert verdict([tj(T, T + 6 * HOUR, INSIDE), tj(T, T + 6 * HOUR)], make_bundle()) is NO


# Custom window_days: a 6h stay at now-10d and a stay across the 7-day window's start.
WINDOW_CASES = [
    (7, [tj(NOW - 10 * DAY, NOW - 10 * DAY + 6 * HOUR)], NO),
    (14, [tj(NOW - 10 * DAY, NOW - 10 * DAY + 6 * HOUR)], REVIEW),
    (7, [tj(NOW - 7 * DAY - 2 * HOUR, NOW - 7 * DAY + 4 * HOUR)], REVIEW),
    (7, [tj(NOW - 7 * DAY - 2 * HOUR, NOW - 7 * DAY + 4 * HOUR - 1)], NO),
    (30, [tj(NOW - 20 * DAY, NOW - 20 * DAY + 6 * HOUR)], REVIEW),
    (14, [tj(NOW - 20 * DAY, NOW - 20 * DAY + 6 * HOUR)], NO),
]


@pytest.mark.parametrize(("window_days", "stays", "expected"), WINDOW_CASES)
@pytest.mark.parametrize("place", list(PLACES.values()), ids=list(PLACES))
def test_custom_window_days(window_days, stays, expected, place):
    bundle = make_bundle(
        square_feature(active_from=NOW - 60 * DAY), policy=Policy(window_days=window_days)
    )
    stays = [Stay(s.city_code, s.arrival, s.departure, place) for s in stays]
    assert verdict(stays, bundle) is expected


# Custom min_stay: (min_stay_s, stay length in seconds, expected)
MIN_STAY_CASES = [
    (HOUR, HOUR, REVIEW),
    (HOUR, HOUR - 1, NO),
    (8 * HOUR, 6 * HOUR, NO),
    (8 * HOUR, 8 * HOUR, REVIEW),
    (1, 1, REVIEW),
]


@pytest.mark.parametrize(("min_stay_s", "length", "expected"), MIN_STAY_CASES)
@pytest.mark.parametrize("place", list(PLACES.values()), ids=list(PLACES))
def test_custom_min_stay(min_stay_s, length, expected, place):
    bundle = make_bundle(
        square_feature(active_from=NOW - 60 * DAY), policy=Policy(min_stay_s=min_stay_s)
    )
    assert verdict([tj(T, T + length, place)], bundle) is expected


def test_evaluate_uses_the_given_now():
    # The same 6h stay is inside the window at NOW and outside it 20 days later.
    stays = [tj(T, T + 6 * HOUR)]
    assert verdict(stays, city_bundle()) is REVIEW
    assert verdict(stays, city_bundle(), now=NOW + 20 * DAY) is NO

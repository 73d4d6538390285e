"""Property tests (hypothesis) of the matching rule, ``staycheck.geo.matching.evaluate``.

Properties that follow from SPEC.md's rule, whatever the itinerary:

1. the order of the stays does not matter;
2. splitting a stay into two touching stays (same city and location) changes nothing;
3. adding a stay never turns REVIEW_REQUIRED into NO_ABNORMALITY;
4. an itinerary wholly before the window gives NO_ABNORMALITY.

The bundle is fixed and built once: located squares in 120100 and 131000 (one of them low,
so never flagged), and an area in 130600 that no generated location comes near, so it can
only be hit through the city-level rule. Generated locations are None or scattered around
the squares, so that hits do happen (checked by ``test_strategy_produces_both_verdicts``).
"""

from __future__ import annotations

import math

from hypothesis import find, given, settings
from hypothesis import strategies as st
from staycheck.cli.samples import cities
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.itinerary import Status, Stay, validate
from staycheck.geo.matching import evaluate

from tests.helpers import DAY, HOUR, NOW, collection, square_feature

NO = Status.NO_ABNORMALITY
REVIEW = Status.REVIEW_REQUIRED
PROPERTY = settings(max_examples=1000, deadline=None)

_C = cities()
TJ, LF, BD = _C["120100"], _C["131000"], _C["130600"]
M_PER_DEG = 111_320.0


def shifted(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / M_PER_DEG,
        lon + east_m / (M_PER_DEG * math.cos(math.radians(lat))),
    )


# Centres and sides of the located squares; generated locations scatter around these.
TJ2 = shifted(TJ.lat, TJ.lon, 0, 3000)
LF2 = shifted(LF.lat, LF.lon, 5000, 0)
SQUARES = [((TJ.lat, TJ.lon), 1000), (TJ2, 600), ((LF.lat, LF.lon), 2000), (LF2, 3000)]
POLICY = Policy(tolerance_m=100.0)
BUNDLE = RiskAreaBundle.from_proto(
    build_bundle(
        collection(
            square_feature("TJ-1", active_from=NOW - 10 * DAY),
            square_feature(
                "TJ-2",
                level="medium",
                lat=TJ2[0],
                lon=TJ2[1],
                side_m=600,
                active_from=NOW - 18 * DAY,
                active_until=NOW - 6 * DAY,
            ),
            square_feature(
                "LF-1",
                city_code="131000",
                level="medium",
                lat=LF.lat,
                lon=LF.lon,
                side_m=2000,
                active_from=NOW - 12 * DAY,
                active_until=NOW - 4 * DAY,
            ),
            square_feature(
                "LF-LOW",
                city_code="131000",
                level="low",
                lat=LF2[0],
                lon=LF2[1],
                side_m=3000,
                active_from=NOW - 60 * DAY,
            ),
            square_feature(
                "BD-1",
                city_code="130600",
                lat=BD.lat,
                lon=BD.lon,
                active_from=NOW - 9 * DAY,
                active_until=NOW - 2 * DAY,
            ),
        ),
        version=1,
        issued_at=NOW - HOUR,
        expires_at=NOW + 2 * DAY,
        policy=POLICY,
    ),
    digest="x",
)
WINDOW_START = NOW - POLICY.window_s
CITY_CODES = ["110100", "120100", "131000", "130600"]


@st.composite
def locations(draw: st.DrawFn) -> tuple[float, float]:
    (lat, lon), side = draw(st.sampled_from(SQUARES))
    reach = int(side)  # up to a full side from the centre: inside, near and outside
    return shifted(lat, lon, draw(st.integers(-reach, reach)), draw(st.integers(-reach, reach)))


@st.composite
def stays(draw: st.DrawFn, *, min_length: int = 1) -> Stay:
    arrival = draw(st.integers(NOW - 20 * DAY, NOW - min_length))
    length = draw(st.integers(min_length, min(3 * DAY, NOW - arrival)))
    city = draw(st.sampled_from(CITY_CODES))
    location = draw(st.none() | locations())
    return Stay(city, arrival, arrival + length, location)


itineraries = st.lists(stays(), max_size=8)


def check(stays_: list[Stay]) -> Status:
    validate(stays_, now=NOW)  # generated itineraries are legal input
    return evaluate(stays_, BUNDLE, now=NOW)


@PROPERTY
@given(itineraries, st.data())
def test_order_of_stays_does_not_matter(its, data):
    permuted = data.draw(st.permutations(its))
    assert check(permuted) is check(its)


@PROPERTY
@given(itineraries, stays(min_length=2), st.data())
def test_splitting_a_stay_does_not_change_the_verdict(its, whole, data):
    cut = data.draw(st.integers(whole.arrival + 1, whole.departure - 1))
    first = Stay(whole.city_code, whole.arrival, cut, whole.location)
    second = Stay(whole.city_code, cut, whole.departure, whole.location)
    at = data.draw(st.integers(0, len(its)))
    assert check([*its[:at], first, second, *its[at:]]) is check([*its[:at], whole, *its[at:]])


@PROPERTY
@given(itineraries, stays(), st.data())
def test_adding_a_stay_never_clears_a_review(its, extra, data):
    at = data.draw(st.integers(0, len(its)))
    before = check(its)
    after = check([*its[:at], extra, *its[at:]])
    if before is REVIEW:
        assert after is REVIEW


@PROPERTY
@given(st.lists(stays(), min_size=1, max_size=8), st.integers(1, 30 * DAY))
def test_itinerary_wholly_before_the_window_is_clear(its, gap):
    # Shift every stay so that the last departure is ``gap`` seconds before the window.
    delta = max(s.departure for s in its) - WINDOW_START + gap
    moved = [Stay(s.city_code, s.arrival - delta, s.departure - delta, s.location) for s in its]
    assert all(s.departure < WINDOW_START for s in moved)
    assert check(moved) is NO


def test_strategy_produces_both_verdicts():
    # The properties above are only meaningful if the generated itineraries reach both
    # verdicts, through both the spatial and the city-level rule.
    cfg = settings(max_examples=5000, database=None)
    located = find(
        itineraries,
        lambda s: all(x.location is not None for x in s) and check(s) is REVIEW,
        settings=cfg,
    )
    assert located
    city_level = find(
        itineraries,
        lambda s: all(x.location is None for x in s) and check(s) is REVIEW,
        settings=cfg,
    )
    assert city_level
    # NO_ABNORMALITY although a city qualifies (one stay of 4 h or more inside the window).
    clear = find(
        itineraries,
        lambda s: (
            any(x.arrival >= WINDOW_START and x.departure - x.arrival >= 4 * HOUR for x in s)
            and check(s) is NO
        ),
        settings=cfg,
    )
    assert clear

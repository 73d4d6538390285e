"""Batch matching, ``staycheck.geo.matching.evaluate_batch``: each itinerary of a batch gets
the verdict it gets alone.

The matching rule (docs/rules.md, section 2) is stated for one itinerary, so a batch of N
itineraries must give exactly ``[evaluate(x) for x in batch]``, whatever else is in the batch
and wherever each itinerary stands in it. ``evaluate`` has its own tests against the rule's
text (tests/unit/test_matching.py, tests/unit/test_properties.py); here:

- property tests, with a seeded ``random.Random``, on random bundles (tolerance 0 and above,
  active and ended areas of every level) and random batches (located and unlocated stays,
  inside, near and outside the areas, the same places and stays in several itineraries,
  empty itineraries), checked to reach both verdicts by every path;
- SPEC.md's public example cases, each at every position of a batch of other itineraries;
- the tolerance's vertex cap (docs/limits.md), which is per itinerary: an itinerary over it
  fails closed, one under it in the same batch is measured as if the other were not there;
- ``RiskIndex.point_hits`` itself: ``groups`` omitted is one group.

Expected values come from the rule's text or from ``evaluate`` of the itinerary alone.
(``evaluate`` is itself a batch of one: equality with it says that batching changes no
answer; that the answer of a batch of one is the rule's is for those other tests.)
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from staycheck.cli.samples import feature
from staycheck.geo import bundle as bundle_module
from staycheck.geo.bundle import Level, Policy, RiskAreaBundle
from staycheck.geo.itinerary import Status, Stay, validate
from staycheck.geo.matching import evaluate, evaluate_batch

from tests.helpers import BJ_LAT, BJ_LON, DAY, HOUR, NOW, TJ_LAT, TJ_LON, offset_north
from tests.helpers import square_feature as square_area
from tests.unit.test_matching import INSIDE, T, make_bundle, north_of_top, tj
from tests.unit.test_properties import BD, LF, TJ, shifted

NO = Status.NO_ABNORMALITY
REVIEW = Status.REVIEW_REQUIRED
SEEDS = range(120)

# The cities of generated stays and areas, and the centres the areas lie around.
CENTRES = {
    "110100": (BJ_LAT, BJ_LON),
    "120100": (TJ.lat, TJ.lon),
    "131000": (LF.lat, LF.lon),
    "130600": (BD.lat, BD.lon),
}
LEVELS = ["low", "medium", "high"]
FLAGGED = [
    frozenset({Level.MEDIUM, Level.HIGH}),
    frozenset({Level.HIGH}),
    frozenset({Level.LOW, Level.MEDIUM, Level.HIGH}),
]


def legal(itineraries: Sequence[Sequence[Stay]]) -> None:
    for stays in itineraries:
        validate(stays, now=NOW)  # evaluate expects validated input


def alone(itineraries: Sequence[Sequence[Stay]], bundle: RiskAreaBundle) -> list[Status]:
    return [evaluate(stays, bundle, now=NOW) for stays in itineraries]


def batch(itineraries: Sequence[Sequence[Stay]], bundle: RiskAreaBundle) -> list[Status]:
    legal(itineraries)
    return evaluate_batch(itineraries, bundle, now=NOW)


def at(place: tuple[float, float], day: int = 3) -> Stay:
    """6 h in Tianjin at ``place`` from ``day`` days before now."""
    return tj(NOW - day * DAY, NOW - day * DAY + 6 * HOUR, place)


# --- random bundles and batches -----------------------------------------------------------


@dataclass(frozen=True)
class Square:
    lat: float
    lon: float
    side_m: float


@dataclass(frozen=True)
class Case:
    """One seed's bundle (and its features and policy, to rebuild it) and batch."""

    seed: int
    features: tuple[dict[str, Any], ...]
    policy: Policy
    bundle: RiskAreaBundle
    itineraries: tuple[tuple[Stay, ...], ...]


def random_areas(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], list[Square]]:
    """``n`` squares near the city centres, of any level, some still active, some ended
    before ``now`` or starting during the window."""
    features, squares = [], []
    for i in range(n):
        code = rng.choice(list(CENTRES))
        lat, lon = shifted(*CENTRES[code], rng.uniform(-4000, 4000), rng.uniform(-4000, 4000))
        side = rng.choice([300.0, 1000.0, 2500.0])
        start = NOW - rng.randint(0, 20 * DAY)
        end = None if rng.random() < 0.4 else start + rng.randint(HOUR, 8 * DAY)
        features.append(
            square_area(
                f"A{i}",
                city_code=code,
                level=rng.choice(LEVELS),
                lat=lat,
                lon=lon,
                side_m=side,
                active_from=start,
                active_until=end,
            )
        )
        squares.append(Square(lat, lon, side))
    return features, squares


def random_places(
    rng: random.Random, squares: Sequence[Square], reach_m: float
) -> list[tuple[float, float]]:
    """Places at the squares' centres, near their edges (within ``reach_m`` either side of
    an edge) and at the city centres."""
    places = [(s.lat, s.lon) for s in squares]
    for s in squares:
        for _ in range(2):
            half = s.side_m / 2 + rng.uniform(-reach_m, reach_m)
            north, east = rng.choice([(half, 0.0), (-half, 0.0), (0.0, half), (0.0, -half)])
            places.append(shifted(s.lat, s.lon, north, east))
    places.extend(CENTRES.values())
    rng.shuffle(places)
    return places[:12]


def random_stay(rng: random.Random, places: Sequence[tuple[float, float]]) -> Stay:
    arrival = NOW - rng.randint(-12 * HOUR, 17 * DAY)  # a few planned, a few before the window
    length = rng.choice(
        [rng.randint(60, 3 * HOUR), rng.randint(3 * HOUR, 8 * HOUR), rng.randint(8 * HOUR, 3 * DAY)]
    )
    departure = min(arrival + length, NOW + DAY)  # I5: at most 24 h after now
    location = None if rng.random() < 0.3 else rng.choice(places)
    return Stay(rng.choice(list(CENTRES)), arrival, departure, location)


def random_batch(
    rng: random.Random, places: Sequence[tuple[float, float]], size: int
) -> list[tuple[Stay, ...]]:
    """``size`` itineraries of 0-5 stays; some repeat an earlier itinerary or one of its
    stays, and all draw their locations from the same few places."""
    itineraries: list[tuple[Stay, ...]] = []
    for _ in range(size):
        if itineraries and rng.random() < 0.15:
            itineraries.append(rng.choice(itineraries))
            continue
        stays = []
        for _ in range(rng.randint(0, 5)):
            earlier = [s for it in itineraries for s in it]
            if earlier and rng.random() < 0.2:
                stays.append(rng.choice(earlier))
            else:
                stays.append(random_stay(rng, places))
        itineraries.append(tuple(stays))
    return itineraries


def build(features: Sequence[dict[str, Any]], policy: Policy) -> RiskAreaBundle:
    return make_bundle(*features, policy=policy)


@functools.cache
def cases(tolerance_m: float) -> tuple[Case, ...]:
    """One case per seed: a random bundle whose policy has ``tolerance_m`` and a batch of
    0-14 itineraries."""
    made = []
    for seed in SEEDS:
        rng = random.Random(f"{tolerance_m}/{seed}")
        features, squares = random_areas(rng, rng.randint(1, 8))
        policy = Policy(
            window_days=rng.choice([7, 14]),
            min_stay_s=rng.choice([HOUR, 4 * HOUR]),
            flagged_levels=rng.choice(FLAGGED),
            tolerance_m=tolerance_m,
        )
        places = random_places(rng, squares, reach_m=max(2 * tolerance_m, 200.0))
        itineraries = random_batch(rng, places, rng.randint(0, 14))
        legal(itineraries)
        bundle = build(features, policy)
        made.append(Case(seed, tuple(features), policy, bundle, tuple(itineraries)))
    return tuple(made)


TOLERANCES = [0.0, 150.0, 2000.0]


@pytest.mark.parametrize("tolerance_m", TOLERANCES)
def test_a_batch_gives_each_itinerary_its_verdict_alone(tolerance_m):
    for case in cases(tolerance_m):
        expected = alone(case.itineraries, case.bundle)
        assert evaluate_batch(case.itineraries, case.bundle, now=NOW) == expected, case.seed
        # Any order: each answer moves with its itinerary.
        order = list(range(len(case.itineraries)))
        random.Random(case.seed).shuffle(order)
        shuffled = [case.itineraries[i] for i in order]
        assert evaluate_batch(shuffled, case.bundle, now=NOW) == [expected[i] for i in order]


CROWD_TOLERANCE_M = 1000.0


@functools.cache
def crowded_cases() -> tuple[tuple[RiskAreaBundle, tuple[tuple[Stay, ...], ...]], ...]:
    """Batches of itineraries of 6 h stays in Tianjin, all at places 5-25 % beyond a 1 km
    tolerance due north or south of a 300 m square (always active, high): candidates of the
    planar search, which reaches about 30 % farther north and south, but mostly no hit.
    Each itinerary has its own number of candidate vertices (5 per square and place)."""
    made = []
    for seed in range(60):
        rng = random.Random(f"crowded/{seed}")
        features, places = [], []
        for i in range(rng.randint(4, 12)):
            lat, lon = shifted(TJ_LAT, TJ_LON, rng.uniform(-2500, 2500), rng.uniform(-6000, 6000))
            features.append(
                square_area(f"S{i}", lat=lat, lon=lon, side_m=300, active_from=NOW - 20 * DAY)
            )
            beyond = 150 + rng.uniform(1.05, 1.25) * CROWD_TOLERANCE_M
            places.append(shifted(lat, lon, beyond * rng.choice([1, -1]), 0.0))
        itineraries = []
        for _ in range(rng.randint(0, 12)):
            days = rng.sample(range(1, 12), rng.randint(0, 4))
            itineraries.append(tuple(at(rng.choice(places), d) for d in days))
        legal(itineraries)
        bundle = make_bundle(*features, policy=Policy(tolerance_m=CROWD_TOLERANCE_M))
        made.append((bundle, tuple(itineraries)))
    return tuple(made)


@pytest.mark.parametrize("cap", [4, 9, 14])
def test_a_batch_under_a_small_vertex_cap_gives_each_itinerary_its_verdict_alone(cap, monkeypatch):
    # Some itineraries go over the cap and fail closed; the others must still be measured
    # on their own candidates only.
    uncapped = [alone(itineraries, bundle) for bundle, itineraries in crowded_cases()]
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", cap)
    closed_beside_clear = 0
    for (bundle, itineraries), before in zip(crowded_cases(), uncapped, strict=True):
        expected = alone(itineraries, bundle)
        assert evaluate_batch(itineraries, bundle, now=NOW) == expected
        closed = any(b is NO and e is REVIEW for b, e in zip(before, expected, strict=True))
        closed_beside_clear += closed and NO in expected
    # Batches where the cap turned an itinerary to REVIEW_REQUIRED and another stayed clear.
    assert closed_beside_clear >= 15


FAR = (30.0, 100.0)  # far from every generated area


def located_in_a_qualifying_city(stays: Sequence[Stay], policy: Policy) -> bool:
    """Whether a located stay inside the window belongs to a city whose clipped stays
    cover at least ``min_stay`` (M1, M2): one that the spatial rule has to decide."""
    w0 = NOW - policy.window_s
    clipped: dict[str, list[tuple[int, int]]] = {}
    for s in stays:
        lo, hi = max(s.arrival, w0), min(s.departure, NOW)
        if lo < hi:
            clipped.setdefault(s.city_code, []).append((lo, hi))
    covered = {}
    for code, intervals in clipped.items():
        total, reach = 0, w0
        for lo, hi in sorted(intervals):
            total += max(hi - max(lo, reach), 0)
            reach = max(reach, hi)
        covered[code] = total
    return any(
        s.location is not None
        and s.city_code in clipped
        and covered[s.city_code] >= policy.min_stay_s
        and max(s.arrival, w0) < min(s.departure, NOW)
        for s in stays
    )


@pytest.mark.parametrize("tolerance_m", TOLERANCES)
def test_random_batches_reach_every_path(tolerance_m):
    """The properties above are only meaningful if the generated batches mix both verdicts,
    reach REVIEW_REQUIRED through the spatial rule and through the city-level rule, clear
    qualifying located stays, and put one place in itineraries with different verdicts."""
    mixed = located_review = city_review = located_clear = shared_place = 0
    for case in cases(tolerance_m):
        verdicts = alone(case.itineraries, case.bundle)
        mixed += {NO, REVIEW} <= set(verdicts)
        verdict_at: dict[tuple[float, float], set[Status]] = {}
        for stays, verdict in zip(case.itineraries, verdicts, strict=True):
            if not stays:
                continue
            if verdict is REVIEW:
                # Which rule decided: the verdict once every located stay is moved far away.
                moved = [x if x.location is None else x._replace(location=FAR) for x in stays]
                if evaluate(moved, case.bundle, now=NOW) is REVIEW:
                    city_review += 1
                else:
                    located_review += 1
            located_clear += verdict is NO and located_in_a_qualifying_city(stays, case.policy)
            for s in stays:
                if s.location is not None:
                    verdict_at.setdefault(s.location, set()).add(verdict)
        shared_place += any(len(v) == 2 for v in verdict_at.values())
    assert mixed >= 30  # of 120 batches
    assert located_review >= 40
    assert city_review >= 40
    assert located_clear >= 100
    assert shared_place >= 20


@pytest.mark.parametrize("tolerance_m", [150.0, 2000.0])
def test_random_tolerance_batches_depend_on_the_tolerance(tolerance_m):
    # With a tolerance, some verdicts are decided by the geodesic measure: the same areas
    # under tolerance 0 give another verdict for some itineraries.
    differ = 0
    for case in cases(tolerance_m):
        exact = build(case.features, Policy(**{**vars(case.policy), "tolerance_m": 0.0}))
        differ += alone(case.itineraries, exact) != alone(case.itineraries, case.bundle)
    assert differ >= 5


# --- edge batches -------------------------------------------------------------------------


def spec_b(policy: Policy | None = None) -> RiskAreaBundle:
    """SPEC.md's bundle B: one high-risk 1 km square at the Tianjin centre in 120100, active
    from now-5d with no end."""
    return make_bundle(square_area(active_from=NOW - 5 * DAY), policy=policy)


# 5 km north of the square's centre: 4.5 km outside its northern edge.
OUTSIDE_5KM = (TJ_LAT + 5000 / 111_000, TJ_LON)
RISKY = (tj(T, T + 6 * HOUR, INSIDE),)  # SPEC: 6 h inside the square at now-3d
NO_LOCATION = (tj(T, T + 6 * HOUR),)  # SPEC: city-level rule
CLEAN = (Stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)),)  # SPEC: 14 days in Beijing


@pytest.mark.parametrize("policy", [Policy(), Policy(tolerance_m=100.0)], ids=["tol-0", "tol-100"])
def test_an_empty_batch_gives_no_verdicts(policy):
    assert evaluate_batch([], spec_b(policy), now=NOW) == []
    assert evaluate_batch((), spec_b(policy), now=NOW) == []


@pytest.mark.parametrize("policy", [Policy(), Policy(tolerance_m=100.0)], ids=["tol-0", "tol-100"])
def test_empty_itineraries_in_a_batch_are_clear(policy):
    # M4: an empty itinerary gives NO_ABNORMALITY, wherever it stands in the batch.
    b = spec_b(policy)
    assert batch([(), (), ()], b) == [NO, NO, NO]
    assert batch([(), RISKY, (), CLEAN, (), NO_LOCATION, ()], b) == [
        NO,
        REVIEW,
        NO,
        NO,
        NO,
        REVIEW,
        NO,
    ]


def test_a_batch_with_only_unlocated_stays():
    # No located stay at all: the index's point query has nothing to do.
    lf_city = (Stay("131000", T, T + 6 * HOUR),)  # no area in 131000
    assert batch([NO_LOCATION, lf_city, NO_LOCATION, ()], spec_b()) == [REVIEW, NO, REVIEW, NO]


def test_a_batch_against_a_set_without_areas_is_clear():
    assert batch([RISKY, NO_LOCATION, CLEAN], make_bundle()) == [NO, NO, NO]


@pytest.mark.parametrize("tolerance_m", [0.0, 100.0])
def test_the_same_place_in_several_itineraries_is_judged_per_stay(tolerance_m):
    """One place, inside the square (or 50 m outside it, within a 100 m tolerance), in five
    itineraries: only the stays that qualify and overlap the area's activity hit (M2, M3)."""
    place = INSIDE if tolerance_m == 0 else (north_of_top(50.0), TJ_LON)
    b = spec_b(Policy(tolerance_m=tolerance_m))
    during = (tj(T, T + 6 * HOUR, place),)  # active, 6 h: a hit
    before = (tj(NOW - 7 * DAY, NOW - 7 * DAY + 6 * HOUR, place),)  # area not active yet
    short = (tj(T, T + 2 * HOUR, place),)  # city total under 4 h
    # 10 min there and 6 h in Beijing: Tianjin's total is under 4 h.
    borrowed = (tj(T, T + 600, place), Stay("110100", T, T + 6 * HOUR))
    assert batch([before, during, short, during, borrowed], b) == [NO, REVIEW, NO, REVIEW, NO]
    assert batch([before, short, borrowed], b) == [NO, NO, NO]


def test_a_city_level_hit_leaves_the_other_itineraries_alone():
    # The first itinerary is REVIEW_REQUIRED by its unlocated stay; its located stay (5 km
    # outside) and the located stays of the others are still for their own itineraries.
    first = (tj(T, T + 6 * HOUR), tj(T + DAY, T + DAY + 6 * HOUR, OUTSIDE_5KM))
    second = (tj(T, T + 6 * HOUR, OUTSIDE_5KM),)
    assert batch([first, second, RISKY, second], spec_b()) == [REVIEW, NO, REVIEW, NO]


# --- SPEC.md's public examples in batches -------------------------------------------------

SPEC_CASES = [
    ("14 days in 110100 only", CLEAN, NO),
    ("6 h in 120100 at now-3d inside the square", RISKY, REVIEW),
    ("6 h in 120100 at now-3d 5 km outside the square", (tj(T, T + 6 * HOUR, OUTSIDE_5KM),), NO),
    ("2 h in 120100 inside the square at now-3d", (tj(T, T + 2 * HOUR, INSIDE),), NO),
    (
        "6 h in 120100 inside the square at now-7d",
        (tj(NOW - 7 * DAY, NOW - 7 * DAY + 6 * HOUR, INSIDE),),
        NO,
    ),
    ("6 h in 120100 with no location at now-3d", NO_LOCATION, REVIEW),
    (
        "6 h in 120100 inside the square at now-16d",
        (tj(NOW - 16 * DAY, NOW - 16 * DAY + 6 * HOUR, INSIDE),),
        NO,
    ),
]
# SPEC's verdicts hold with a 1 km tolerance as well: the one located case that is not a
# hit lies 4.5 km from the square, the others are decided by time, window or being inside.
SPEC_POLICIES = [Policy(), Policy(tolerance_m=1000.0)]


def spec_fillers() -> list[tuple[tuple[Stay, ...], Status | None]]:
    """Random itineraries around B (their verdict: None, to be taken alone)."""
    rng = random.Random("spec fillers")
    places = random_places(rng, [Square(TJ_LAT, TJ_LON, 1000.0)], reach_m=1500.0)
    return [(it, None) for it in random_batch(rng, places, 6)]


@pytest.mark.parametrize("policy", SPEC_POLICIES, ids=["tol-0", "tol-1000"])
def test_spec_examples_in_one_batch(policy):
    b = spec_b(policy)
    itineraries = [stays for _, stays, _ in SPEC_CASES]
    expected = [verdict for _, _, verdict in SPEC_CASES]
    assert batch(itineraries, b) == expected
    assert batch(itineraries[::-1], b) == expected[::-1]


@pytest.mark.parametrize("policy", SPEC_POLICIES, ids=["tol-0", "tol-1000"])
@pytest.mark.parametrize(("title", "stays", "expected"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_spec_example_at_every_position_of_a_batch(title, stays, expected, policy):
    b = spec_b(policy)
    # The other SPEC cases, with their SPEC verdicts, interleaved with random itineraries.
    others = [(s, v) for t, s, v in SPEC_CASES if t != title]
    fillers: list[tuple[tuple[Stay, ...], Status | None]] = []
    for pair in zip(others, spec_fillers(), strict=True):
        fillers.extend(pair)
    for pos in range(len(fillers) + 1):
        rows = [*fillers[:pos], (stays, expected), *fillers[pos:]]
        got = batch([s for s, _ in rows], b)
        assert got[pos] is expected, pos
        want = [v if v is not None else evaluate(s, b, now=NOW) for s, v in rows]
        assert got == want, pos


# --- the vertex cap is per itinerary (docs/limits.md) -------------------------------------

CAP_TOLERANCE_M = 1000.0
# Strips of 5 vertices each; "far" ones lie 1 100 m due north of their place (outside the
# tolerance, but within the planar search radius, so they are candidates to be measured),
# the "near" one 500 m north of its place (inside the tolerance).
P_CROWDED = (TJ_LAT, TJ_LON)  # 4 far strips: 20 vertices
P_CLEAN = (TJ_LAT, TJ_LON + 0.2)  # about 17 km east; 1 far strip: 5 vertices
P_NEAR = (TJ_LAT, TJ_LON + 0.4)  # 1 near strip: 5 vertices
P_CLEAN2 = (TJ_LAT, TJ_LON + 0.6)  # 1 far strip: 5 vertices


def strip(area_id: str, place: tuple[float, float], north_m: float, east_deg: float = 0.0):
    """A strip 0.004 degrees wide and 0.002 deep whose south edge lies ``north_m`` due north
    of ``place``; shifted east by less than its half width, it still spans the place's
    meridian, so its nearest point is due north (as in tests/hostile/test_large_tolerance.py)."""
    lat, lon = place
    south = offset_north(lat, north_m)
    west, east = lon + east_deg - 0.002, lon + east_deg + 0.002
    ring = [[west, south], [east, south], [east, south + 0.002], [west, south + 0.002]]
    return feature(area_id, "120100", "high", [[*ring, ring[0]]], active_from=NOW - 20 * DAY)


@functools.cache
def cap_bundle() -> RiskAreaBundle:
    shifts = (-0.0006, -0.0002, 0.0002, 0.0006)  # degrees east, under the 0.002 half width
    crowded = [strip(f"C{i}", P_CROWDED, 1100, east_deg=d) for i, d in enumerate(shifts)]
    return make_bundle(
        *crowded,
        strip("CLEAN", P_CLEAN, 1100),
        strip("NEAR", P_NEAR, 500),
        strip("CLEAN2", P_CLEAN2, 1100),
        policy=Policy(tolerance_m=CAP_TOLERANCE_M),
    )


CROWDED = (at(P_CROWDED),)  # candidates: 20 vertices
CAP_CLEAN = (at(P_CLEAN),)  # 5
NEAR = (at(P_NEAR),)  # 5, and a hit
TWO_PLACES = (at(P_CLEAN), at(P_CLEAN2))  # 5 + 5
CROWDED_AND_CLEAN = (at(P_CROWDED), at(P_CLEAN))  # 25, sharing P_CLEAN with others
SAME_PLACE_TWICE = (at(P_CLEAN, 3), at(P_CLEAN, 2))  # one place, measured once: 5
CAP_BATCH = [CAP_CLEAN, CROWDED, NEAR, TWO_PLACES, CROWDED_AND_CLEAN, SAME_PLACE_TWICE, CAP_CLEAN]


def test_without_the_cap_the_strips_are_measured():
    # The far strips lie 100 m outside the tolerance, the near one 500 m inside it.
    expected = [NO, NO, REVIEW, NO, NO, NO, NO]
    assert batch(CAP_BATCH, cap_bundle()) == expected
    assert alone(CAP_BATCH, cap_bundle()) == expected


def test_an_itinerary_over_the_cap_fails_closed_and_leaves_the_others_measured(monkeypatch):
    # Cap 10: CROWDED (20) and CROWDED_AND_CLEAN (25) are over it, the rest at 10 or under,
    # though the batch as a whole holds 75 vertices of candidates.
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 10)
    expected = [NO, REVIEW, REVIEW, NO, REVIEW, NO, NO]
    assert batch(CAP_BATCH, cap_bundle()) == expected
    assert alone(CAP_BATCH, cap_bundle()) == expected
    assert batch([CROWDED, CAP_CLEAN], cap_bundle()) == [REVIEW, NO]
    assert batch([CAP_CLEAN, CROWDED], cap_bundle()) == [NO, REVIEW]


def test_the_cap_counts_the_itinerarys_own_places(monkeypatch):
    # TWO_PLACES has 10 vertices of candidates at two places: over a cap of 9, not of 10.
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 9)
    assert batch([CAP_CLEAN, TWO_PLACES, SAME_PLACE_TWICE], cap_bundle()) == [NO, REVIEW, NO]
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 20)
    assert batch([CROWDED, TWO_PLACES, CROWDED_AND_CLEAN], cap_bundle()) == [NO, NO, REVIEW]


def test_the_clean_itinerary_has_candidates_of_its_own(monkeypatch):
    # Control for the tests above: CAP_CLEAN's strip is a candidate (5 vertices), so it was
    # measured under the cap, not skipped; over a cap of 4 it fails closed too.
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 4)
    assert batch([CAP_CLEAN], cap_bundle()) == [REVIEW]
    assert batch([(at(P_CLEAN, 3),), ()], cap_bundle()) == [REVIEW, NO]


# --- RiskIndex.point_hits -----------------------------------------------------------------


def points(
    places: Sequence[tuple[float, float]], start: int = T, end: int = T + 6 * HOUR
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(longitude, latitude) rows and the intervals, as ``point_hits`` takes them."""
    lonlat = np.array([(lon, lat) for lat, lon in places], dtype=np.float64)
    n = len(places)
    return lonlat, np.full(n, start, dtype=np.int64), np.full(n, end, dtype=np.int64)


def located_points(stays: Sequence[Stay]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``point_hits``' arguments for located stays, over their whole ``[arrival, departure)``."""
    lonlat = np.array([(s.location[1], s.location[0]) for s in stays], dtype=np.float64)
    starts = np.array([s.arrival for s in stays], dtype=np.int64)
    ends = np.array([s.departure for s in stays], dtype=np.int64)
    return lonlat, starts, ends


def groups(*numbers: int) -> np.ndarray:
    return np.array(numbers, dtype=np.int64)


def test_point_hits_per_group(monkeypatch):
    index = cap_bundle().index
    query = points([P_CROWDED, P_CLEAN, P_NEAR, P_CLEAN2])
    assert index.point_hits(*query).tolist() == [False, False, True, False]
    assert index.point_hits(*query, groups(0, 0, 0, 0)).tolist() == [False, False, True, False]
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 10)
    # All one group (35 vertices): every point fails closed.
    assert index.point_hits(*query).tolist() == [True, True, True, True]
    assert index.point_hits(*query, groups(0, 0, 0, 0)).tolist() == [True, True, True, True]
    assert index.point_hits(*query, groups(7, 7, 7, 7)).tolist() == [True, True, True, True]
    # One group each: only the crowded place's is over the cap.
    assert index.point_hits(*query, groups(0, 1, 2, 3)).tolist() == [True, False, True, False]
    # 20 + 5 = 25 over it; 5 + 5 = 10 not.
    assert index.point_hits(*query, groups(1, 1, 0, 0)).tolist() == [True, True, True, False]
    assert index.point_hits(*query, groups(0, 1, 1, 2)).tolist() == [True, False, True, False]


@pytest.mark.parametrize("cap", [None, 12])
@pytest.mark.parametrize("tolerance_m", TOLERANCES)
def test_point_hits_without_groups_is_one_group(tolerance_m, cap, monkeypatch):
    if cap is not None:
        monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", cap)
    mixed = 0
    for case in cases(tolerance_m):
        located = [s for it in case.itineraries for s in it if s.location is not None]
        if not located:
            continue
        lonlat, starts, ends = located_points(located)
        index = case.bundle.index
        whole = index.point_hits(lonlat, starts, ends)
        one = random.Random(case.seed).randint(1, 50)
        for same in (np.zeros(len(located), dtype=np.int64), np.full(len(located), one)):
            assert index.point_hits(lonlat, starts, ends, same).tolist() == whole.tolist()
        mixed += bool(whole.any()) and not bool(whole.all())
    assert mixed >= 10  # answers differ between points, so a shuffled answer would show


@pytest.mark.parametrize("tolerance_m", TOLERANCES)
def test_point_hits_answers_each_point_as_if_alone(tolerance_m):
    # Under the (default, large) cap, a point's answer is its own: the same as queried alone.
    for case in cases(tolerance_m):
        located = [s for it in case.itineraries for s in it if s.location is not None]
        if not located:
            continue
        lonlat, starts, ends = located_points(located)
        index = case.bundle.index
        got = index.point_hits(lonlat, starts, ends, np.arange(len(located), dtype=np.int64))
        singles = [
            bool(index.point_hits(lonlat[i : i + 1], starts[i : i + 1], ends[i : i + 1])[0])
            for i in range(len(located))
        ]
        assert got.tolist() == singles, case.seed
        assert index.point_hits(lonlat, starts, ends).tolist() == singles, case.seed

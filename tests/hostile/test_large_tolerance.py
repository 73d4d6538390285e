"""A policy tolerance of tens of kilometres near thousands of areas (docs/limits.md listed
it as known: each candidate was measured in a Python loop, seconds per request). Now each
located stay's candidates are measured in one vectorised pass, and a request whose
candidates hold more than ``MAX_CANDIDATE_COORDS`` vertices counts as a hit (fail closed)
instead of taking unbounded CPU.

Distances come from ``tests.helpers.offset_north`` (a WGS-84 meridian arc integrated here,
independent of ``staycheck.geo.geodesy``): every area is a strip whose south edge lies a
known distance due north of the stays, so its nearest point is that far away.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from staycheck.cli.samples import rfc3339
from staycheck.geo import bundle as bundle_module
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.itinerary import Status, Stay, validate
from staycheck.geo.matching import evaluate

from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, collection, offset_north

TOLERANCE_M = 50_000.0  # the largest a policy may carry (geodesy.MAX_TOLERANCE_M)
AREAS = 3000
# Fourteen located 6-hour stays in Tianjin, one a day: the most a traveller sends in 14 days.
STAYS = [
    Stay("120100", NOW - d * DAY, NOW - d * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)) for d in range(1, 15)
]


@functools.cache
def _north(metres: float) -> float:
    return offset_north(TJ_LAT, metres)


def _strip(area_id: str, south_m: float, east_deg: float = 0.0) -> dict[str, Any]:
    """A strip 0.004 degrees wide and 0.002 deep whose south edge lies ``south_m`` due north
    of the stays, shifted ``east_deg`` east (a shift only moves it farther away)."""
    south = _north(south_m)
    west, east = TJ_LON + east_deg - 0.002, TJ_LON + east_deg + 0.002
    ring = [[west, south], [east, south], [east, south + 0.002], [west, south + 0.002]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        "properties": {
            "id": area_id,
            "city_code": "120100",
            "level": "high",
            "active_from": rfc3339(NOW - 20 * DAY),
            "active_until": None,
        },
    }


def _bundle(features: list[dict[str, Any]]) -> RiskAreaBundle:
    msg = build_bundle(
        collection(*features),
        version=1,
        issued_at=NOW - HOUR,
        expires_at=NOW + 2 * DAY,
        policy=Policy(tolerance_m=TOLERANCE_M),
    )
    return RiskAreaBundle.from_proto(msg, digest="x")


@pytest.fixture(scope="module")
def ring() -> list[dict[str, Any]]:
    """3 000 areas 50.5 km north or farther, side by side eastwards: all outside the 50 km
    tolerance (by more than the 1e-4 relative error geodesy allows), all candidates of the
    planar search."""
    return [_strip(f"N-{i}", 50_500, east_deg=(i - AREAS // 2) * 0.0002) for i in range(AREAS)]


def _verdict(bundle: RiskAreaBundle) -> Status:
    validate(STAYS, now=NOW)
    return evaluate(STAYS, bundle, now=NOW)


def test_thousands_of_areas_just_outside_a_50_km_tolerance_are_no_hit(ring):
    assert _verdict(_bundle(ring)) is Status.NO_ABNORMALITY


def test_one_area_inside_the_tolerance_among_thousands_is_a_hit(ring):
    assert _verdict(_bundle([*ring, _strip("IN", 49_500)])) is Status.REVIEW_REQUIRED


def test_candidates_over_the_vertex_cap_fail_closed(ring, monkeypatch):
    bundle = _bundle(ring)  # 3 000 strips of 5 vertices: 15 000 vertices to measure
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 14_999)
    assert _verdict(bundle) is Status.REVIEW_REQUIRED
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 15_000)
    assert _verdict(bundle) is Status.NO_ABNORMALITY


def test_a_batch_costs_the_memory_of_its_largest_itinerary_not_of_all(ring, monkeypatch):
    """A partner message matched as one batch: with a tolerance, each located stay may have
    thousands of candidates, so the candidate pairs are built one itinerary at a time (the
    review of 2026-12-02 measured a joint query growing by about 240 MiB per such itinerary).
    Four copies of one itinerary must not take four times the memory of one."""
    import tracemalloc

    from staycheck.geo.matching import evaluate_batch

    bundle = _bundle(ring)
    # Past the cap at once (fail closed, no geodesic measurement): the cost left is the
    # query's candidate pairs, 200 distinct places x 3 000 areas.
    monkeypatch.setattr(bundle_module, "MAX_CANDIDATE_COORDS", 1)
    one = [
        Stay("120100", NOW - DAY, NOW - DAY + 6 * HOUR, (TJ_LAT + k * 1e-5, TJ_LON))
        for k in range(200)
    ]
    validate(one, now=NOW)

    def peak(batch: list[list[Stay]]) -> int:
        tracemalloc.start()
        try:
            assert evaluate_batch(batch, bundle, now=NOW) == [Status.REVIEW_REQUIRED] * len(batch)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    alone = peak([one])
    assert alone > 10 * 2**20  # the pairs are really there: 600 000 of them, tens of MiB
    assert peak([one] * 4) < 1.5 * alone

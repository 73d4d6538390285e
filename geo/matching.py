"""The matching rule of SPEC.md: which itineraries get a pop-up.

:func:`evaluate` takes validated stays, a bundle and ``now`` and returns a :class:`Status`
(:func:`evaluate_batch` the same for many itineraries at once, sharing one index query):

1. Each stay is clipped to ``[now - window, now]``; a stay wholly outside is ignored.
2. Per city, the union of its clipped intervals is summed; the city qualifies when the sum
   is at least ``min_stay`` (overlapping stays are not counted twice).
3. A stay of a qualifying city hits an area of a flagged level that is active at some time
   of the stay's clipped interval, when its point lies in the area (or within the geodesic
   tolerance), or, for a stay without a location, when the area is in the stay's city.
4. Any hit: REVIEW_REQUIRED; none: NO_ABNORMALITY.

Stay intervals are half-open ``[arrival, departure)``, as are area intervals. Pure: no clock,
no I/O; ``evaluate`` does not validate (see ``staycheck.geo.itinerary.validate``) and keeps nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from operator import itemgetter

import numpy as np
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.itinerary import Status, Stay


def evaluate(stays: Sequence[Stay], bundle: RiskAreaBundle, *, now: int) -> Status:
    """Apply the matching rule; see the module docstring."""
    return evaluate_batch((stays,), bundle, now=now)[0]


def evaluate_batch(
    itineraries: Sequence[Sequence[Stay]], bundle: RiskAreaBundle, *, now: int
) -> list[Status]:
    """:func:`evaluate` of each itinerary, in order, with one index query for them all.

    Each itinerary is read once: its stays clipped to the window and grouped by city, each
    city's covered time summed (steps 1 and 2), and the stays of qualifying cities either
    looked up by city (no location) or queued. Then the queued stays of *every* itinerary go
    to the index together: one STRtree query and one time-overlap test
    (:meth:`~staycheck.geo.bundle.RiskIndex.point_hits`); with a tolerance above 0, one
    query per itinerary, whose candidates may be many. An itinerary's verdict comes from
    its own stays only: a batch of one is :func:`evaluate`, and no answer depends on what
    else is in the batch.
    """
    policy = bundle.policy
    index = bundle.index
    w0, min_stay = now - policy.window_s, policy.min_stay_s
    statuses = [Status.NO_ABNORMALITY] * len(itineraries)
    lonlat: list[tuple[float, float]] = []  # (longitude, latitude): GeoJSON's order, the index's
    starts: list[int] = []
    ends: list[int] = []
    owners: list[int] = []
    for k, stays in enumerate(itineraries):
        by_city: dict[str, list[tuple[int, int, tuple[float, float] | None]]] = {}
        for code, arrival, departure, location in stays:
            start = arrival if arrival > w0 else w0
            end = departure if departure < now else now
            if start < end:
                clipped = by_city.get(code)
                if clipped is None:
                    by_city[code] = [(start, end, location)]
                else:
                    clipped.append((start, end, location))
        queued = len(owners)
        for code, clipped in by_city.items():
            if _covered(clipped) < min_stay:
                continue
            for start, end, location in clipped:
                if location is not None:
                    lonlat.append((location[1], location[0]))
                    starts.append(start)
                    ends.append(end)
                    owners.append(k)
                elif index.any_city_hit(code, start, end):
                    statuses[k] = Status.REVIEW_REQUIRED
                    break
            if statuses[k] is Status.REVIEW_REQUIRED:
                del lonlat[queued:], starts[queued:], ends[queued:], owners[queued:]
                break
    if not owners:
        return statuses
    groups = np.array(owners, dtype=np.int64)
    points = np.array(lonlat, dtype=np.float64)
    begin, finish = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
    if policy.tolerance_m > 0:
        # A tolerance can give each stay thousands of candidates (docs/limits.md): query one
        # itinerary at a time, so memory stays bounded by one itinerary's candidates.
        bounds = np.flatnonzero(np.diff(groups, prepend=-1, append=len(itineraries))).tolist()
        parts = list(itertools.pairwise(bounds))
    else:
        parts = [(0, len(groups))]
    for lo, hi in parts:
        hits = index.point_hits(points[lo:hi], begin[lo:hi], finish[lo:hi], groups[lo:hi])
        for k in set(groups[lo:hi][hits].tolist()):
            statuses[k] = Status.REVIEW_REQUIRED
    return statuses


def _covered(clipped: list[tuple[int, int, tuple[float, float] | None]]) -> int:
    """The length of the union of the ``[start, end)`` intervals (overlaps counted once)."""
    if len(clipped) == 1:
        return clipped[0][1] - clipped[0][0]
    ordered = sorted(clipped, key=itemgetter(0))  # by start (a location may be None)
    total = 0
    cur_start, cur_end, _ = ordered[0]
    for start, end, _ in ordered[1:]:
        if start > cur_end:
            total += cur_end - cur_start
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    return total + cur_end - cur_start

"""The matching rule of SPEC.md: which itineraries get a pop-up.

:func:`evaluate` takes validated stays, a bundle and ``now`` and returns a :class:`Status`:

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

from collections.abc import Sequence

import numpy as np
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.itinerary import Status, Stay


def qualifying(
    stays: Sequence[Stay], *, now: int, window_s: int, min_stay_s: int
) -> list[tuple[Stay, int, int]]:
    """Clipped ``(stay, start, end)`` of the stays whose city meets the minimum stay."""
    w0 = now - window_s
    by_city: dict[str, list[tuple[Stay, int, int]]] = {}
    for stay in stays:
        start = max(stay.arrival, w0)
        end = min(stay.departure, now)
        if start < end:
            by_city.setdefault(stay.city_code, []).append((stay, start, end))
    result: list[tuple[Stay, int, int]] = []
    for clipped in by_city.values():
        total = 0
        cur_start = cur_end = None
        for _, start, end in sorted(clipped, key=lambda c: c[1]):
            if cur_end is None or start > cur_end:
                if cur_end is not None and cur_start is not None:
                    total += cur_end - cur_start
                cur_start, cur_end = start, end
            elif end > cur_end:
                cur_end = end
        if cur_end is not None and cur_start is not None:
            total += cur_end - cur_start
        if total >= min_stay_s:
            result.extend(clipped)
    return result


def evaluate(stays: Sequence[Stay], bundle: RiskAreaBundle, *, now: int) -> Status:
    """Apply the matching rule; see the module docstring."""
    policy = bundle.policy
    candidates = qualifying(stays, now=now, window_s=policy.window_s, min_stay_s=policy.min_stay_s)
    if not candidates:
        return Status.NO_ABNORMALITY
    index = bundle.index
    located = [(c, c[0].location) for c in candidates if c[0].location is not None]
    for stay, start, end in candidates:
        if stay.location is None and index.any_city_hit(stay.city_code, start, end):
            return Status.REVIEW_REQUIRED
    if located:
        # (longitude, latitude) rows: the order of GeoJSON and of the index.
        coords = np.array([(lon, lat) for _, (lat, lon) in located], dtype=np.float64)
        starts = np.array([c[1] for c, _ in located], dtype=np.int64)
        ends = np.array([c[2] for c, _ in located], dtype=np.int64)
        if index.any_point_hit(coords, starts, ends):
            return Status.REVIEW_REQUIRED
    return Status.NO_ABNORMALITY

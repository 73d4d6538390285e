"""Synthetic, seeded benchmark data: risk areas published in a TUF repository, and itineraries.

Areas are small squares (200-500 m a side, each turned by a random angle) spread uniformly
over the Beijing-Tianjin-Hebei bounding box (latitude 36-42.6, longitude 113.5-119.9), each
given the code of the nearest Beijing/Tianjin/Hebei city of ``cli/data/jjj_cities.json``,
with mixed levels (20 % low, 50 % medium, 30 % high) and active intervals (80 % still active,
20 % ended). They are generated as arrays (vectorised, so 100 000 areas take well under a
second) and published the way a health authority publishes them: as GeoJSON, by one or more
departments of a real repository (``tests.harness.write_server_files`` over
``staycheck.cli.repository.AuthorityRepository``), each department an equal share, checked
by the workspace as any publication is (about 0.1 ms per area), and served from a folder
that ``staycheck serve --repository DIR --trusted-root ROOT.json`` follows.

Itineraries have 14 consecutive stays of 20 h over the last 14 days (so every city
qualifies and all the matching work is done). Located stays lie *near* an area: inside its
bounding box but outside every polygon, so the STRtree returns candidates and the exact
predicate runs. Stays without a location are in cities outside Beijing-Tianjin-Hebei, which
hold no area, so the city-level rule never ends the evaluation early. A ``hit`` itinerary has
one located stay inside a flagged, active area (REVIEW_REQUIRED).

Times are relative to ``now``: build requests at run time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import pathlib
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from staycheck.cli.samples import METRES_PER_DEG_LAT, cities
from staycheck.geo.bundle import Level, Policy, RiskAreaBundle
from staycheck.v1 import verification_pb2 as pb

from tests import harness

DAY = 86400
HOUR = 3600
LAT_RANGE = (36.0, 42.6)
LON_RANGE = (113.5, 119.9)
LEVEL_WEIGHTS = {Level.LOW: 0.2, Level.MEDIUM: 0.5, Level.HIGH: 0.3}
JJJ_PREFIXES = ("11", "12", "13")
DEPARTMENTS = (harness.DEPARTMENT, "police", "transport", "customs", "rail", "aviation")
"""Departments of a bench repository, in the order they are added."""


@dataclasses.dataclass(frozen=True)
class Areas:
    """Synthetic areas as parallel arrays (index ``i`` is the area published as ``A{i:07d}``)."""

    polygons: npt.NDArray[np.object_]
    city_codes: list[str]
    levels: npt.NDArray[np.int64]
    active_from: npt.NDArray[np.int64]
    active_until: npt.NDArray[np.int64]
    """-1 for an area still active."""

    def __len__(self) -> int:
        return len(self.polygons)

    def flagged_active(self, policy: Policy, now: int) -> npt.NDArray[np.bool_]:
        levels = np.isin(self.levels, [int(v) for v in policy.flagged_levels])
        open_or_later = (self.active_until < 0) | (self.active_until > now)
        return levels & open_or_later & (self.active_from < now - DAY)


def _jjj_centres() -> tuple[list[str], npt.NDArray[np.float64]]:
    jjj = [c for c in cities().values() if c.code.startswith(JJJ_PREFIXES)]
    return [c.code for c in jjj], np.array([(c.lat, c.lon) for c in jjj], dtype=np.float64)


def other_city_codes() -> list[str]:
    """Shipped cities outside Beijing-Tianjin-Hebei: they hold no synthetic area."""
    return sorted(c for c in cities() if not c.startswith(JJJ_PREFIXES))


def make_areas(n: int, *, now: int, seed: int = 1) -> Areas:
    rng = np.random.default_rng(seed)
    lat = rng.uniform(*LAT_RANGE, n)
    lon = rng.uniform(*LON_RANGE, n)
    side = rng.uniform(200.0, 500.0, n)
    turn = rng.uniform(0.0, math.pi / 2, n)
    # Corners at turn + 45, 135, 225, 315 degrees: counter-clockwise in (lon, lat).
    angles = turn[:, None] + np.array([1, 3, 5, 7, 1]) * (math.pi / 4)
    radius = side[:, None] / math.sqrt(2)
    dlat = radius * np.sin(angles) / METRES_PER_DEG_LAT
    dlon = radius * np.cos(angles) / (METRES_PER_DEG_LAT * np.cos(np.radians(lat))[:, None])
    rings = np.stack([lon[:, None] + dlon, lat[:, None] + dlat], axis=-1)
    polygons = shapely.polygons(rings)

    codes, centres = _jjj_centres()
    scale = np.cos(np.radians(39.0))
    d2 = (lat[:, None] - centres[None, :, 0]) ** 2 + (
        (lon[:, None] - centres[None, :, 1]) * scale
    ) ** 2
    nearest = np.argmin(d2, axis=1)

    level_values = np.array([int(v) for v in LEVEL_WEIGHTS], dtype=np.int64)
    levels = rng.choice(level_values, size=n, p=list(LEVEL_WEIGHTS.values()))
    active_from = now - rng.integers(2 * DAY, 12 * DAY, n)
    ended = rng.random(n) < 0.2
    active_until = np.where(ended, active_from + rng.integers(DAY, 5 * DAY, n), -1)
    return Areas(
        polygons, [codes[i] for i in nearest], levels, active_from.astype(np.int64), active_until
    )


def _rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def features(areas: Areas, indices: Sequence[int] | npt.NDArray[np.int64]) -> list[dict[str, Any]]:
    """GeoJSON Features of the areas at ``indices`` (area ``i`` has the id ``A{i:07d}``), as a
    department's GeoJSON file holds them."""
    picked = np.asarray(indices, dtype=np.int64)
    rings = shapely.get_coordinates(areas.polygons[picked]).reshape(len(picked), 5, 2).tolist()
    labels = {int(level): level.label for level in Level}
    out = []
    for k, i in enumerate(picked.tolist()):
        until = int(areas.active_until[i])
        out.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [rings[k]]},
                "properties": {
                    "id": f"A{i:07d}",
                    "city_code": areas.city_codes[i],
                    "level": labels[int(areas.levels[i])],
                    "active_from": _rfc3339(int(areas.active_from[i])),
                    "active_until": _rfc3339(until) if until >= 0 else None,
                },
            }
        )
    return out


def shares(n: int, departments: int) -> dict[str, npt.NDArray[np.int64]]:
    """Which of ``n`` areas each of the first ``departments`` of :data:`DEPARTMENTS`
    publishes: equal shares of consecutive indices."""
    if not 1 <= departments <= len(DEPARTMENTS):
        raise ValueError(f"departments: 1 to {len(DEPARTMENTS)}")
    parts = np.array_split(np.arange(n, dtype=np.int64), departments)
    return dict(zip(DEPARTMENTS[:departments], parts, strict=True))


def publish(
    files: harness.ServerFiles,
    areas: Areas,
    *,
    departments: int = 1,
    only: str | None = None,
    now: int | None = None,
) -> None:
    """Each of the first ``departments`` of :data:`DEPARTMENTS` (added to the repository when
    missing) publishes its share of ``areas`` (:func:`shares`), or only the department
    ``only`` does, through the workspace's own checks of GeoJSON
    (``AuthorityRepository.publish_areas``), signed at ``tests.harness.signing_time``; then
    the repository is served."""
    at = harness.signing_time(now)
    repo = files.repository
    for name, share in shares(len(areas), departments).items():
        if name not in repo.departments():
            repo.add_department(name, now=at)
        if only is None or name == only:
            collection = {"type": "FeatureCollection", "features": features(areas, share)}
            repo.publish_areas(name, collection, now=at)
    files.serve()


def server_files(
    root: pathlib.Path, areas: Areas, *, departments: int = 1, now: int | None = None
) -> harness.ServerFiles:
    """A health authority's repository in ``root`` (``tests.harness.write_server_files``: one
    key for each offline role) with ``areas`` published by ``departments`` departments
    (:func:`publish`) and served: what ``staycheck serve --repository`` follows."""
    files = harness.write_server_files(root, areas=None, now=now)
    publish(files, areas, departments=departments, now=now)
    return files


def merged_bundle(files: harness.ServerFiles, *, now: int) -> RiskAreaBundle:
    """The risk areas ``files`` publish, merged and indexed in this process the way a server
    does after its refresh (``AuthorityRepository.merged``; no TUF): for the in-process
    figures and for checking a server's answers."""
    return RiskAreaBundle.from_proto(
        files.repository.merged(now=now), digest="the repository's merged set"
    )


class ItineraryMaker:
    """Seeded itineraries against one set of areas (see the module docstring)."""

    def __init__(self, areas: Areas, *, now: int, seed: int = 2) -> None:
        self._areas = areas
        self._now = now
        self._rng = np.random.default_rng(seed)
        self._tree = shapely.STRtree(areas.polygons)
        self._bounds = shapely.bounds(areas.polygons)
        self._hit_candidates = np.flatnonzero(areas.flagged_active(Policy(), now))
        self._others = other_city_codes()

    def _near_point(self, i: int) -> tuple[float, float]:
        """(lat, lon) inside area ``i``'s bounding box but outside every polygon."""
        minx, miny, maxx, maxy = self._bounds[i]
        for _ in range(50):
            lon = float(self._rng.uniform(minx, maxx))
            lat = float(self._rng.uniform(miny, maxy))
            if not len(self._tree.query(shapely.Point(lon, lat), predicate="intersects")):
                return lat, lon
        # Nearly axis-aligned square: just past its bounding box's corner.
        return float(maxy + 1e-5), float(maxx + 1e-5)

    def _inside_point(self, i: int) -> tuple[float, float]:
        c = shapely.centroid(self._areas.polygons[i])
        return float(c.y), float(c.x)

    def itinerary(self, *, stays: int = 14, unlocated: int = 4, hit: bool = False) -> pb.Itinerary:
        """``stays`` consecutive 20 h stays ending an hour ago; ``unlocated`` of them without
        a location; with ``hit``, one located stay inside a flagged, active area."""
        now = self._now
        located = stays - unlocated
        picks: Any = self._rng.integers(0, len(self._areas), max(located, 0))
        no_loc = set(self._rng.choice(stays, size=min(unlocated, stays), replace=False).tolist())
        hit_slot, hit_area = -1, -1
        if hit and located > 0:
            hit_slot = located - 1  # the latest located stay
            s_hit = sorted(set(range(stays)) - no_loc)[hit_slot]
            arr = now - stays * DAY + s_hit * DAY + HOUR
            c = self._hit_candidates
            until = self._areas.active_until[c]
            ok = (self._areas.active_from[c] < arr + 20 * HOUR) & ((until < 0) | (until > arr))
            if ok.any():
                hit_area = int(self._rng.choice(c[ok]))
        out = pb.Itinerary()
        k = 0
        span = stays * DAY
        for s in range(stays):
            arrival = now - span + s * DAY + HOUR
            stay = out.stays.add()
            stay.arrival.seconds = arrival
            stay.departure.seconds = arrival + 20 * HOUR
            if s in no_loc:
                stay.city_code = self._others[int(self._rng.integers(0, len(self._others)))]
                continue
            if k == hit_slot and hit_area >= 0:
                i = hit_area
                lat, lon = self._inside_point(i)
            else:
                i = int(picks[k])
                lat, lon = self._near_point(i)
            k += 1
            stay.city_code = self._areas.city_codes[i]
            stay.location.latitude = lat
            stay.location.longitude = lon
        return out

    def request(self, **kwargs: object) -> pb.SubmitItineraryRequest:
        return pb.SubmitItineraryRequest(
            itinerary=self.itinerary(**kwargs),  # type: ignore[arg-type]
            subject_binding=secrets.token_bytes(32),
            binding_parameters=pb.BindingParameters(memory_kib=65536, iterations=2, lanes=4),
        )


def grpc_frame(message: bytes) -> bytes:
    """A length-prefixed gRPC message (uncompressed), as sent on the wire."""
    return b"\x00" + len(message).to_bytes(4, "big") + message

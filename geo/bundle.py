"""The risk-area bundle: its model, its invariants and its spatial index.

What it does: decodes the signed payload (a serialized ``staycheck.v1.RiskAreaBundle``),
checks every invariant once, at construction (versions, dates, policy ranges, unique area
ids, city codes, valid Polygon/MultiPolygon geometries, active intervals), and builds the
:class:`RiskIndex` used by matching: an STRtree over the areas of flagged levels only, with
their active intervals as NumPy arrays, built once per bundle.

What it does not do: check signatures, versions against what is trusted, or expiry against
a clock; TUF does (``staycheck.server.follower``), and the server checks the expiry it
carries. It opens no file.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import numpy.typing as npt
import shapely
from google.protobuf.message import DecodeError
from staycheck.geo import geodesy
from staycheck.geo.errors import MalformedError
from staycheck.geo.itinerary import is_city_code
from staycheck.v1 import bundle_pb2

OPEN_END = np.iinfo(np.int64).max
"""``active_until`` of an area that is still active."""
MAX_CANDIDATE_COORDS = 2_000_000
"""Most polygon vertices one itinerary may need measured for the tolerance (about 50 ms of
numpy on one core); beyond, it counts as a hit (REVIEW_REQUIRED, fail closed)."""


class Level(enum.IntEnum):
    LOW = bundle_pb2.RISK_LEVEL_LOW
    MEDIUM = bundle_pb2.RISK_LEVEL_MEDIUM
    HIGH = bundle_pb2.RISK_LEVEL_HIGH

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Level:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError("level must be one of low, medium, high") from None


@dataclass(frozen=True)
class Policy:
    """How an itinerary is matched (SPEC.md, matching rule)."""

    window_days: int = 14
    """Look-back window, days (1-60)."""
    min_stay_s: int = 4 * 3600
    """Minimum total stay in a city for it to count, seconds (1 s to the window)."""
    flagged_levels: frozenset[Level] = frozenset({Level.MEDIUM, Level.HIGH})
    """Levels that make a hit; at least one."""
    tolerance_m: float = 0.0
    """Geodesic metres within which a point near an area still hits it (0-50 000)."""

    @property
    def window_s(self) -> int:
        return self.window_days * 86400

    def check(self) -> None:
        """Raise :class:`MalformedError` if a field is out of range."""
        if not 1 <= self.window_days <= 60:
            raise MalformedError("policy.window_days: must be within 1-60")
        if not 1 <= self.min_stay_s <= self.window_s:
            raise MalformedError("policy.min_stay_seconds: must be within 1 s and the window")
        if not self.flagged_levels:
            raise MalformedError("policy.flagged_levels: must name at least one level")
        if not 0.0 <= self.tolerance_m <= geodesy.MAX_TOLERANCE_M:  # also refuses NaN
            raise MalformedError(
                f"policy.tolerance_m: must be within 0-{geodesy.MAX_TOLERANCE_M:.0f} metres"
            )

    def to_proto(self) -> bundle_pb2.Policy:
        return bundle_pb2.Policy(
            window_days=self.window_days,
            min_stay_seconds=self.min_stay_s,
            flagged_levels=sorted(
                bundle_pb2.RiskLevel.ValueType(level) for level in self.flagged_levels
            ),
            tolerance_m=self.tolerance_m,
        )

    @classmethod
    def from_proto(cls, msg: bundle_pb2.Policy) -> Policy:
        try:
            levels = frozenset(Level(v) for v in msg.flagged_levels)
        except ValueError:
            raise MalformedError("policy.flagged_levels: unknown level") from None
        policy = cls(msg.window_days, msg.min_stay_seconds, levels, msg.tolerance_m)
        policy.check()
        return policy


class RiskIndex:
    """Spatial and temporal index over the areas of flagged levels."""

    def __init__(
        self,
        geometries: npt.NDArray[np.object_],
        city_codes: list[str],
        active_from: npt.NDArray[np.int64],
        active_until: npt.NDArray[np.int64],
        *,
        tolerance_m: float,
    ) -> None:
        self._geometries = geometries
        self._from = active_from
        self._until = active_until
        self._tolerance_m = tolerance_m
        # No shapely.prepare here: prepared GEOS geometries are not thread-safe
        # (libgeos/geos#825) and every request thread shares these. The tree query prepares
        # its query points instead, which are each call's own.
        self._tree = shapely.STRtree(geometries)
        self._vertices = shapely.get_num_coordinates(geometries).astype(np.float64)
        # City-level rule: per city, active_from sorted ascending with the running maximum of
        # active_until, so "some area active in [start, end)" is one bisection.
        self._by_city: dict[str, tuple[list[int], list[int]]] = {}
        if len(city_codes):
            cities, city = np.unique(np.array(city_codes), return_inverse=True)
            order = np.lexsort((active_from, city.reshape(-1)))
            bounds = np.searchsorted(city.reshape(-1)[order], np.arange(len(cities) + 1))
            starts, ends = active_from[order], active_until[order]
            for code, lo, hi in zip(cities.tolist(), bounds[:-1], bounds[1:], strict=True):
                running = np.maximum.accumulate(ends[lo:hi])
                self._by_city[code] = (starts[lo:hi].tolist(), running.tolist())

    def __len__(self) -> int:
        return len(self._geometries)

    def point_hits(
        self,
        lonlat: npt.NDArray[np.float64],
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
        groups: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """For each point (rows of ``lonlat``: longitude, latitude), whether it lies in (or
        within tolerance of) an area active at some time of its interval ``[starts, ends)``.

        One STRtree query and one time-overlap test for all the points, however many
        itineraries they come from. ``groups`` (one non-negative number per point: the
        itinerary it belongs to; all one group if omitted) bounds the tolerance test: a
        group whose candidates hold more than :data:`MAX_CANDIDATE_COORDS` vertices has all
        its points hit (fail closed), and the other groups are measured as if it were not
        there, so one itinerary's answer never depends on another's.
        """
        hit = np.zeros(len(lonlat), dtype=bool)
        if not len(self._geometries) or not len(lonlat):
            return hit
        points = shapely.points(lonlat)
        lats, lons = lonlat[:, 1], lonlat[:, 0]
        if self._tolerance_m > 0:
            radius = geodesy.search_radius_deg(lats, self._tolerance_m)
            pairs = self._tree.query(points, predicate="dwithin", distance=radius)
        else:
            pairs = self._tree.query(points, predicate="intersects")
        pi, ai = pairs
        active = (self._from[ai] < ends[pi]) & (starts[pi] < self._until[ai])
        pi, ai = pi[active], ai[active]
        if not len(pi):
            return hit
        if self._tolerance_m <= 0:
            hit[pi] = True
            return hit
        # The exact geodesic test, once per distinct (place, area): stays at the same place
        # share their measurements.
        _, first, place = np.unique(lonlat, axis=0, return_index=True, return_inverse=True)
        place = place.reshape(-1).astype(np.int64)  # first[q]: a stay at place q
        n_areas, n_places = len(self._geometries), len(first)
        if groups is None:
            groups = np.zeros(len(lonlat), dtype=np.int64)
        # Its cost grows with the candidates' vertices: past the cap, the group counts as a
        # hit (fail closed) rather than taking seconds of CPU (docs/limits.md).
        owned = np.unique((groups[pi] * n_places + place[pi]) * n_areas + ai)
        owner, owned_area = owned // (n_places * n_areas), owned % n_areas
        cost = np.bincount(owner, weights=self._vertices[owned_area])
        over = np.flatnonzero(cost > MAX_CANDIDATE_COORDS)
        if len(over):
            hit |= np.isin(groups, over)
            keep = ~np.isin(groups[pi], over)
            pi, ai = pi[keep], ai[keep]
        keys, inverse = np.unique(place[pi] * n_areas + ai, return_inverse=True)
        places, areas = np.divmod(keys, n_areas)
        within = np.zeros(len(keys), dtype=bool)
        for q in np.unique(places).tolist():
            mine = places == q
            p = int(first[q])
            near = self._geometries[areas[mine]]
            within[mine] = geodesy.distances_m(float(lats[p]), float(lons[p]), near) <= (
                self._tolerance_m
            )
        hit[pi[within[inverse.reshape(-1)]]] = True
        return hit

    def any_city_hit(self, city_code: str, start: int, end: int) -> bool:
        """True if ``city_code`` holds an area active at some time in ``[start, end)``."""
        windows = self._by_city.get(city_code)
        if windows is None:
            return False
        starts, latest_end = windows
        k = bisect.bisect_left(starts, end)  # areas that became active before ``end``
        return k > 0 and latest_end[k - 1] > start


@dataclass(frozen=True)
class RiskAreaBundle:
    """A decoded, internally consistent risk-area set (the merged message of every
    department's areas and the policy). Build with :meth:`from_proto`."""

    version: int
    issued_at: int
    expires_at: int
    policy: Policy
    area_count: int
    digest: str
    """SHA-256 (hex) naming the content: for a set from the repository, over the signed
    hashes of the policy and every areas file (``staycheck.server.follower.Refreshed``)."""
    index: RiskIndex = field(repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: bytes, *, digest: str) -> RiskAreaBundle:
        try:
            msg = bundle_pb2.RiskAreaBundle.FromString(payload)
        except DecodeError as e:
            raise MalformedError("bundle: payload is not a RiskAreaBundle") from e
        return cls.from_proto(msg, digest=digest)

    @classmethod
    def from_proto(cls, msg: bundle_pb2.RiskAreaBundle, *, digest: str) -> RiskAreaBundle:
        if msg.version <= 0:
            raise MalformedError("bundle.version: must be positive")
        if not (msg.HasField("issued_at") and msg.HasField("expires_at")):
            raise MalformedError("bundle: issued_at and expires_at are required")
        issued_at, expires_at = msg.issued_at.seconds, msg.expires_at.seconds
        if expires_at <= issued_at:
            raise MalformedError("bundle.expires_at: must be after issued_at")
        policy = Policy.from_proto(msg.policy) if msg.HasField("policy") else Policy()
        flagged = {int(level) for level in policy.flagged_levels}

        # One pass reads every field (upb's field access is most of the cost); the checks
        # then run over the columns, and only a failure looks for the first bad area.
        ids: list[str] = []
        codes: list[str] = []
        levels: list[int] = []
        starts: list[int | None] = []
        ends: list[int | None] = []
        wkbs: list[bytes] = []
        for area in msg.areas:
            ids.append(area.id)
            codes.append(area.city_code)
            levels.append(area.level)
            starts.append(area.active_from.seconds if area.HasField("active_from") else None)
            ends.append(area.active_until.seconds if area.HasField("active_until") else None)
            wkbs.append(area.geometry_wkb)
        n = len(ids)
        level = np.array(levels, dtype=np.int64)
        bad_level = ~np.isin(level, [Level.LOW, Level.MEDIUM, Level.HIGH])
        if (
            "" in ids
            or len(set(ids)) != n
            or not all(map(is_city_code, set(codes)))
            or bad_level.any()
            or None in starts
        ):
            _first_bad_area(ids, codes, bad_level.tolist(), starts, ends)
        active_from = np.array(starts, dtype=np.int64)
        until_given = np.array([end is not None for end in ends], dtype=bool)
        active_until = np.array([OPEN_END if end is None else end for end in ends], np.int64)
        if ((active_until <= active_from) & until_given).any():
            _first_bad_area(ids, codes, bad_level.tolist(), starts, ends)
        keep = np.isin(level, list(flagged))
        del ids, levels, starts, ends  # memory: 100 000 areas hold tens of MiB in these lists

        try:
            geometries = shapely.from_wkb(np.array(wkbs, dtype=object), on_invalid="raise")
        except Exception as e:  # shapely raises GEOSException and others on bad WKB
            raise MalformedError("areas: geometry_wkb is not valid WKB") from e
        finally:
            del wkbs
        _check_geometries(geometries)
        idx = np.flatnonzero(keep)
        index = RiskIndex(
            geometries[idx],
            [codes[i] for i in idx],
            active_from[idx],
            active_until[idx],
            tolerance_m=policy.tolerance_m,
        )
        return cls(msg.version, issued_at, expires_at, policy, n, digest, index)


def _first_bad_area(
    ids: list[str],
    codes: list[str],
    bad_level: list[bool],
    starts: list[int | None],
    ends: list[int | None],
) -> NoReturn:
    """Raise the error of the first area that breaks a rule, its first rule broken, in the
    order the rules are listed (called once a column check has found some fault)."""
    seen: set[str] = set()
    for i, area_id in enumerate(ids):
        if not area_id or area_id in seen:
            raise MalformedError(f"areas[{i}].id: must be non-empty and unique")
        seen.add(area_id)
        if not is_city_code(codes[i]):
            raise MalformedError(f"areas[{i}].city_code: must be a prefecture-level code")
        if bad_level[i]:
            raise MalformedError(f"areas[{i}].level: must be low, medium or high")
        start, end = starts[i], ends[i]
        if start is None:
            raise MalformedError(f"areas[{i}].active_from: required")
        if end is not None and end <= start:
            raise MalformedError(f"areas[{i}].active_until: must be after active_from")
    raise AssertionError("a column check found a fault that no area has")


_POLYGONAL = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def _check_geometries(geometries: npt.NDArray[np.object_]) -> None:
    if not len(geometries):
        return
    types = shapely.get_type_id(geometries)
    bad = np.flatnonzero(~np.isin(types, _POLYGONAL) | shapely.is_empty(geometries))
    if len(bad):
        raise MalformedError(f"areas[{bad[0]}].geometry_wkb: must be a Polygon or MultiPolygon")
    bounds = shapely.bounds(geometries)
    out = (bounds[:, 0] < -180) | (bounds[:, 2] > 180) | (bounds[:, 1] < -90) | (bounds[:, 3] > 90)
    out |= ~np.isfinite(bounds).all(axis=1)
    if out.any():
        raise MalformedError(
            f"areas[{np.flatnonzero(out)[0]}].geometry_wkb: coordinates out of range"
        )
    invalid = np.flatnonzero(~shapely.is_valid(geometries))
    if len(invalid):
        raise MalformedError(
            f"areas[{invalid[0]}].geometry_wkb: not a valid polygon (self-intersection?)"
        )

"""Shared test helpers: risk areas to publish, itineraries, a controllable clock and a real
server on 127.0.0.1:0 following a real TUF repository. Expected values in tests come from
SPEC.md, not from here."""

from __future__ import annotations

import contextlib
import math
import pathlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import json_format
from staycheck.cli.samples import feature, rfc3339, square
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy
from staycheck.v1 import bundle_pb2
from staycheck.v1 import verification_pb2 as pb

from tests.harness import Areas, InProcessServer, in_process

DAY = 86400
HOUR = 3600
# Tianjin centre (shared/data/jjj_cities.json), where SPEC.md's example area B lies.
TJ_LAT, TJ_LON = 39.1256, 117.1902
BJ_LAT, BJ_LON = 39.9042, 116.4074
NOW = 1_795_000_000  # 2026-11-18T09:46:40Z; a fixed evaluation time for deterministic tests


class Clock:
    """A clock tests move by hand; pass it where the code takes ``clock``."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self.now

    def advance(self, seconds: int) -> None:
        with self._lock:
            self.now += seconds


def offset_north(lat: float, metres: float) -> float:
    """Latitude ``metres`` north of ``lat`` along the meridian, for a small offset, by
    integrating the WGS-84 meridian radius of curvature (independent of staycheck.geo.geodesy)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)

    def meridian_radius(phi: float) -> float:
        return a * (1 - e2) / (1 - e2 * math.sin(phi) ** 2) ** 1.5

    phi = math.radians(lat)
    remaining = metres
    step = 0.01  # metres
    while remaining > 0:
        d = min(step, remaining)
        phi += d / meridian_radius(phi)
        remaining -= d
    return math.degrees(phi)


def square_feature(
    area_id: str = "B",
    *,
    city_code: str = "120100",
    level: str = "high",
    lat: float = TJ_LAT,
    lon: float = TJ_LON,
    side_m: float = 1000,
    active_from: int,
    active_until: int | None = None,
) -> dict[str, Any]:
    return feature(
        area_id,
        city_code,
        level,
        square(lat, lon, side_m),
        active_from=active_from,
        active_until=active_until,
    )


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def risk_areas(features: Sequence[dict[str, Any]], *, policy: Policy | None = None) -> Areas:
    """What a test server's department publishes: these GeoJSON features, this policy."""
    return Areas(tuple(features), policy or Policy())


def spec_areas(*, now: int = NOW, policy: Policy | None = None) -> Areas:
    """SPEC.md's bundle B: one high-risk 1 km square in 120100, active from now-5d."""
    return risk_areas([square_feature(active_from=now - 5 * DAY)], policy=policy)


def bundle_message(
    features: Sequence[dict[str, Any]],
    *,
    version: int = 1,
    issued_at: int = NOW - HOUR,
    expires_at: int = NOW + 2 * DAY,
    policy: Policy | None = None,
) -> bundle_pb2.RiskAreaBundle:
    """The merged bundle message of ``features`` (for unit tests of matching, rendering and
    diffs that need no repository)."""
    return build_bundle(
        collection(*features),
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        policy=policy or Policy(),
    )


def stay(
    city_code: str,
    arrival: int,
    departure: int,
    location: tuple[float, float] | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "city_code": city_code,
        "arrival": rfc3339(arrival),
        "departure": rfc3339(departure),
    }
    if location is not None:
        s["location"] = {"latitude": location[0], "longitude": location[1]}
    return s


def itinerary(*stays: dict[str, Any]) -> pb.Itinerary:
    return json_format.ParseDict({"stays": list(stays)}, pb.Itinerary())


# The in-process server of every test (tests/harness.py).
RunningServer = InProcessServer


@contextlib.contextmanager
def running_server(
    root: pathlib.Path,
    areas: Areas | None,
    *,
    clock: Clock | None = None,
    issuer: str = "110000",
    **config: Any,
) -> Iterator[InProcessServer]:
    """A real StayCheckServer on 127.0.0.1:0 with its own state dir under ``root``, on a
    clock the test moves."""
    with in_process(root, areas=areas, clock=clock or Clock(), issuer=issuer, **config) as s:
        yield s

"""``staycheck.geo.geodesy`` against independent references.

- Distances due north of a polygon's parallel (east-west) edge: the geodesic distance from a
  point to a parallel, measured from a point on the same meridian, is the meridian arc
  between them; ``tests.helpers.offset_north`` integrates that arc on WGS-84.
- ``search_radius_deg`` must contain every point at ``tolerance_m`` geodesic metres; the
  points are placed with Vincenty's direct formula on WGS-84 (written here, independently
  of ``staycheck.geo.geodesy``, and itself checked against the meridian arc and the equator).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import shapely
from staycheck.cli.samples import square
from staycheck.geo.geodesy import MAX_TOLERANCE_M, distance_m, search_radius_deg

from tests.helpers import TJ_LAT, TJ_LON, offset_north

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563


def vincenty_direct(lat: float, lon: float, azimuth_deg: float, s: float) -> tuple[float, float]:
    """Destination (lat, lon) after ``s`` metres along the geodesic with the given azimuth."""
    a, f = WGS84_A, WGS84_F
    b = a * (1 - f)
    alpha1 = math.radians(azimuth_deg)
    sin_a1, cos_a1 = math.sin(alpha1), math.cos(alpha1)
    tan_u1 = (1 - f) * math.tan(math.radians(lat))
    cos_u1 = 1 / math.sqrt(1 + tan_u1**2)
    sin_u1 = tan_u1 * cos_u1
    sigma1 = math.atan2(tan_u1, cos_a1)
    sin_alpha = cos_u1 * sin_a1
    cos2_alpha = 1 - sin_alpha**2
    u2 = cos2_alpha * (a**2 - b**2) / b**2
    big_a = 1 + u2 / 16384 * (4096 + u2 * (-768 + u2 * (320 - 175 * u2)))
    big_b = u2 / 1024 * (256 + u2 * (-128 + u2 * (74 - 47 * u2)))
    sigma = s / (b * big_a)
    for _ in range(100):
        cos_2sm = math.cos(2 * sigma1 + sigma)
        sin_s, cos_s = math.sin(sigma), math.cos(sigma)
        d_sigma = (
            big_b
            * sin_s
            * (
                cos_2sm
                + big_b
                / 4
                * (
                    cos_s * (-1 + 2 * cos_2sm**2)
                    - big_b / 6 * cos_2sm * (-3 + 4 * sin_s**2) * (-3 + 4 * cos_2sm**2)
                )
            )
        )
        new_sigma = s / (b * big_a) + d_sigma
        if abs(new_sigma - sigma) < 1e-14:
            sigma = new_sigma
            break
        sigma = new_sigma
    cos_2sm = math.cos(2 * sigma1 + sigma)
    sin_s, cos_s = math.sin(sigma), math.cos(sigma)
    tmp = sin_u1 * sin_s - cos_u1 * cos_s * cos_a1
    lat2 = math.atan2(
        sin_u1 * cos_s + cos_u1 * sin_s * cos_a1, (1 - f) * math.sqrt(sin_alpha**2 + tmp**2)
    )
    lam = math.atan2(sin_s * sin_a1, cos_u1 * cos_s - sin_u1 * sin_s * cos_a1)
    c = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha))
    big_l = lam - (1 - c) * f * sin_alpha * (
        sigma + c * sin_s * (cos_2sm + c * cos_s * (-1 + 2 * cos_2sm**2))
    )
    return math.degrees(lat2), lon + math.degrees(big_l)


@functools.cache
def north(lat: float, metres: float) -> float:
    return offset_north(lat, metres)


# The reference itself: north agrees with the meridian arc, east on the equator with a*dlon.
@pytest.mark.parametrize("lat", [0.0, 39.1256, 60.0])
def test_reference_vincenty_north_matches_meridian_arc(lat):
    lat2, lon2 = vincenty_direct(lat, 116.0, 0.0, 1000.0)
    assert lon2 == pytest.approx(116.0, abs=1e-12)
    # 1 mm of latitude is about 9e-9 degrees.
    assert lat2 == pytest.approx(north(lat, 1000.0), abs=1e-8)


def test_reference_vincenty_east_on_the_equator():
    lat2, lon2 = vincenty_direct(0.0, 10.0, 90.0, 5000.0)
    assert lat2 == pytest.approx(0.0, abs=1e-12)
    assert lon2 - 10.0 == pytest.approx(math.degrees(5000.0 / WGS84_A), rel=1e-9)


# A 1 km square (staycheck.cli.samples.square) at these centres; points due north of its top edge.
CENTRES = {"equator": (0.5, 30.0), "tianjin": (TJ_LAT, TJ_LON), "lat60": (60.0, 25.0)}


def top_edge(lat: float, lon: float) -> tuple[shapely.Polygon, float]:
    ring = square(lat, lon, 1000)[0]
    return shapely.Polygon(ring), max(y for _, y in ring)


@pytest.mark.parametrize("metres", [10.0, 1000.0, 20_000.0])
@pytest.mark.parametrize("centre", list(CENTRES.values()), ids=list(CENTRES))
def test_distance_north_of_parallel_edge(centre, metres):
    lat, lon = centre
    polygon, top = top_edge(lat, lon)
    point_lat = north(top, metres)
    got = distance_m(point_lat, lon, polygon)
    # Error below 0.5 m, or below 1e-4 relative for the longer distances.
    assert abs(got - metres) <= max(0.5, 1e-4 * metres), got


@pytest.mark.parametrize("metres", [10.0, 1000.0, 20_000.0])
@pytest.mark.parametrize("centre", list(CENTRES.values()), ids=list(CENTRES))
def test_distance_east_of_meridian_edge(centre, metres):
    # The east edge is a meridian (a geodesic); a geodesic leaving its midpoint at right
    # angles (azimuth 90) reaches a point whose distance to the edge is its length.
    lat, lon = centre
    ring = square(lat, lon, 1000)[0]
    east = max(x for x, _ in ring)
    point_lat, point_lon = vincenty_direct(lat, east, 90.0, metres)
    got = distance_m(point_lat, point_lon, shapely.Polygon(ring))
    assert abs(got - metres) <= max(0.5, 1e-4 * metres), got


@pytest.mark.parametrize("centre", list(CENTRES.values()), ids=list(CENTRES))
def test_distance_is_zero_inside_and_on_the_boundary(centre):
    lat, lon = centre
    polygon, top = top_edge(lat, lon)
    assert distance_m(lat, lon, polygon) == 0.0
    assert distance_m(top, lon, polygon) == 0.0
    assert distance_m(north(top, 1.0), lon, polygon) > 0.0


def test_distance_to_multipolygon_is_to_the_nearest_part():
    near, top = top_edge(TJ_LAT, TJ_LON)
    far, _ = top_edge(TJ_LAT - 0.1, TJ_LON)  # about 11 km south
    point_lat = north(top, 10.0)
    got = distance_m(point_lat, TJ_LON, shapely.MultiPolygon([far, near]))
    assert abs(got - 10.0) <= 0.5


COMPASS = [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]
RADIUS_LATITUDES = [0.0, 39.0, 60.0, 80.0, -39.0, -80.0]
TOLERANCES = [1.0, 100.0, 5000.0, MAX_TOLERANCE_M]


@pytest.mark.parametrize("tolerance_m", TOLERANCES)
@pytest.mark.parametrize("lat", RADIUS_LATITUDES)
def test_search_radius_is_conservative(lat, tolerance_m):
    lon = 116.0
    radius = float(search_radius_deg(np.array([lat]), tolerance_m)[0])
    offsets = []
    for azimuth in COMPASS:
        lat2, lon2 = vincenty_direct(lat, lon, azimuth, tolerance_m)
        offsets.append(math.hypot(lat2 - lat, lon2 - lon))
    assert max(offsets) <= radius, (max(offsets), radius)
    # Conservative, but not so loose that the candidate search is useless.
    assert radius <= 1.5 * max(offsets)


def test_search_radius_is_elementwise():
    lats = np.array([0.0, 39.0, 80.0])
    radii = search_radius_deg(lats, 100.0)
    assert radii.shape == (3,)
    for lat, r in zip(lats, radii, strict=True):
        assert r == float(search_radius_deg(np.array([lat]), 100.0)[0])
    assert radii[0] < radii[1] < radii[2]  # a degree of longitude shrinks towards the pole

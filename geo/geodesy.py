"""Geodesic distances between a WGS-84 point and a polygon, for the tolerance rule.

How: the polygon's vertices are projected into an azimuthal equidistant projection centred on
the point (on the unit sphere), then scaled by the ellipsoid's radii of curvature at the
point: the meridional radius M northwards, the prime-vertical radius N eastwards. At the
centre this matches the WGS-84 metric exactly, and the error grows with the square of the
distance: about 1e-4 relative at :data:`MAX_TOLERANCE_M`, far less at the tolerances used in
practice (tests check it against a meridian-arc integration). Edges are taken as straight
between projected vertices, which for edges of a few kilometres moves them by centimetres.

What it does not do: anything beyond :data:`MAX_TOLERANCE_M`, or geometry across the
antimeridian.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
MAX_TOLERANCE_M = 50_000.0
# Shortest length of one degree anywhere (of latitude, at the equator), metres, with margin.
_MIN_METRES_PER_DEGREE = 110_000.0


def radii_of_curvature(lat_deg: float) -> tuple[float, float]:
    """(M, N): meridional and prime-vertical radii of curvature of WGS-84 at ``lat_deg``."""
    w2 = 1 - WGS84_E2 * math.sin(math.radians(lat_deg)) ** 2
    n = WGS84_A / math.sqrt(w2)
    return n * (1 - WGS84_E2) / w2, n


def search_radius_deg(
    lat_deg: npt.NDArray[np.float64], tolerance_m: float
) -> npt.NDArray[np.float64]:
    """A planar radius in degrees that contains every point within ``tolerance_m`` metres.

    Conservative: a candidate search with it never misses a point in tolerance; the exact
    check follows with :func:`distance_m`.
    """
    dlat = tolerance_m / _MIN_METRES_PER_DEGREE
    worst = np.minimum(np.abs(lat_deg) + dlat, 89.9)
    return np.asarray(dlat / np.cos(np.radians(worst)), dtype=np.float64)


def _project(
    coords: npt.NDArray[np.float64], lat0: float, lon0: float, m: float, n: float
) -> npt.NDArray[np.float64]:
    lon = np.radians(coords[:, 0])
    lat = np.radians(coords[:, 1])
    phi0 = math.radians(lat0)
    dlon = lon - math.radians(lon0)
    # Angular distance by the haversine formula (accurate for small angles).
    h = np.sin((lat - phi0) / 2) ** 2 + math.cos(phi0) * np.cos(lat) * np.sin(dlon / 2) ** 2
    c = 2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(c > 1e-12, c / np.sin(c), 1.0)
    x = n * k * np.cos(lat) * np.sin(dlon)
    y = m * k * (math.cos(phi0) * np.sin(lat) - math.sin(phi0) * np.cos(lat) * np.cos(dlon))
    return np.column_stack([x, y])


def distance_m(lat: float, lon: float, geometry: shapely.Geometry) -> float:
    """Geodesic distance in metres from (lat, lon) to ``geometry`` (0 inside it)."""
    return float(distances_m(lat, lon, np.array([geometry], dtype=object))[0])


def distances_m(
    lat: float, lon: float, geometries: npt.NDArray[np.object_]
) -> npt.NDArray[np.float64]:
    """Geodesic distances in metres from (lat, lon) to each of ``geometries`` (0 inside),
    in one pass: every vertex of every geometry is projected by one numpy call."""
    m, n = radii_of_curvature(lat)
    projected = shapely.transform(geometries, lambda c: _project(c, lat, lon, m, n))
    return np.asarray(shapely.distance(shapely.Point(0.0, 0.0), projected), dtype=np.float64)

"""Geodesic distances between a WGS-84 point and a polygon, for the tolerance rule.

How: the polygon's vertices are projected into an azimuthal equidistant projection centred on
the point, on the sphere whose radius is the ellipsoid's Gaussian mean radius of curvature
at the point's latitude; the distance is then the planar distance from the origin. Distances
from the centre of that projection are geodesic to within a few parts per million for the
tolerances a policy allows (at most :data:`MAX_TOLERANCE_M`); edges are taken as straight
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


def gaussian_radius(lat_deg: float) -> float:
    """sqrt(M * N): the radius of the sphere that best fits the ellipsoid at ``lat_deg``."""
    s2 = math.sin(math.radians(lat_deg)) ** 2
    w = 1 - WGS84_E2 * s2
    return WGS84_A * math.sqrt(1 - WGS84_E2) / w


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
    coords: npt.NDArray[np.float64], lat0: float, lon0: float, radius: float
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
    x = radius * k * np.cos(lat) * np.sin(dlon)
    y = radius * k * (math.cos(phi0) * np.sin(lat) - math.sin(phi0) * np.cos(lat) * np.cos(dlon))
    return np.column_stack([x, y])


def distance_m(lat: float, lon: float, geometry: shapely.Geometry) -> float:
    """Geodesic distance in metres from (lat, lon) to ``geometry`` (0 inside it)."""
    radius = gaussian_radius(lat)
    projected = shapely.transform(geometry, lambda c: _project(c, lat, lon, radius))
    return float(shapely.distance(shapely.Point(0.0, 0.0), projected))

"""Sample data for the demo, tests and benchmarks, from the shipped city list.

``cli/data/jjj_cities.json`` holds real GB/T 2260 codes and approximate centres of the
cities of Beijing, Tianjin and Hebei (and a few others). Areas here are squares placed on
those centres; they are demo data, not real risk areas.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

METRES_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class City:
    code: str
    name_zh: str
    name_en: str
    lat: float
    lon: float


def cities() -> dict[str, City]:
    """The shipped cities by code."""
    text = resources.files("staycheck.cli.data").joinpath("jjj_cities.json").read_text("utf-8")
    return {
        c["code"]: City(c["code"], c["name_zh"], c["name_en"], c["lat"], c["lon"])
        for c in json.loads(text)["cities"]
    }


def square(lat: float, lon: float, side_m: float) -> list[list[list[float]]]:
    """GeoJSON Polygon coordinates of an approximately ``side_m`` square centred on a point."""
    dlat = side_m / 2 / METRES_PER_DEG_LAT
    dlon = side_m / 2 / (METRES_PER_DEG_LAT * math.cos(math.radians(lat)))
    ring = [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]
    return [ring]


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def feature(
    area_id: str,
    city_code: str,
    level: str,
    polygon: list[list[list[float]]],
    *,
    active_from: int,
    active_until: int | None = None,
) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": polygon},
        "properties": {
            "id": area_id,
            "city_code": city_code,
            "level": level,
            "active_from": rfc3339(active_from),
            "active_until": None if active_until is None else rfc3339(active_until),
        },
    }


def demo_areas(now: int) -> dict[str, Any]:
    """A small FeatureCollection: a high-risk square in Tianjin, a medium one in Langfang
    (ended yesterday) and a low one in Baoding (not flagged by default)."""
    c = cities()
    day = 86400
    tj, lf, bd = c["120100"], c["131000"], c["130600"]
    return {
        "type": "FeatureCollection",
        "features": [
            feature(
                "TJ-0001", tj.code, "high", square(tj.lat, tj.lon, 1000), active_from=now - 5 * day
            ),
            feature(
                "LF-0001",
                lf.code,
                "medium",
                square(lf.lat, lf.lon, 2000),
                active_from=now - 10 * day,
                active_until=now - day,
            ),
            feature(
                "BD-0001", bd.code, "low", square(bd.lat, bd.lon, 3000), active_from=now - 20 * day
            ),
        ],
    }


def stay_json(city: City, arrival: int, departure: int, *, located: bool = True) -> dict[str, Any]:
    stay: dict[str, Any] = {
        "city_code": city.code,
        "arrival": rfc3339(arrival),
        "departure": rfc3339(departure),
    }
    if located:
        stay["location"] = {"latitude": city.lat, "longitude": city.lon}
    return stay

"""The health authority's side: GeoJSON FeatureCollection in, ``RiskAreaBundle`` out.

Each feature carries a Polygon or MultiPolygon (longitude, latitude) and the properties
``id``, ``city_code``, ``level`` (low/medium/high), ``active_from`` and ``active_until``
(RFC 3339 with a zone offset, or null for still active). Every feature is checked; an error
names the feature by index and id and says which rule it breaks.

Pure: takes the parsed JSON object and returns the protobuf message; reading files and
publishing (a department's areas file in the TUF repository, ``staycheck.cli.repository``)
are the caller's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import shapely
import shapely.geometry
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.bundle import Level, Policy
from staycheck.geo.errors import InvalidInputError
from staycheck.geo.itinerary import is_city_code
from staycheck.v1 import bundle_pb2


def parse_time(text: str) -> int:
    """RFC 3339 with an explicit offset -> Unix seconds."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    value = dt.datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError("no time zone offset")
    return int(value.timestamp())


def _timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _area(i: int, feature: Any) -> bundle_pb2.RiskArea:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise InvalidInputError(f"features[{i}]", "must be a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise InvalidInputError(f"features[{i}].properties", "must be an object")
    fid = props.get("id", feature.get("id"))
    if not isinstance(fid, str | int) or isinstance(fid, bool) or str(fid) == "":
        raise InvalidInputError(f"features[{i}].properties.id", "must be a non-empty string")
    fid = str(fid)
    where = f"features[{i}] (id {fid})"
    code = props.get("city_code")
    if not isinstance(code, str) or not is_city_code(code):
        raise InvalidInputError(f"{where}.city_code", "must be a six-digit prefecture-level code")
    try:
        level = Level.parse(props.get("level", ""))
    except (ValueError, AttributeError):
        raise InvalidInputError(f"{where}.level", "must be low, medium or high") from None
    try:
        active_from = parse_time(props["active_from"])
    except (KeyError, ValueError):
        raise InvalidInputError(f"{where}.active_from", "must be RFC 3339 with offset") from None
    until_text = props.get("active_until")
    active_until = None
    if until_text is not None:
        try:
            active_until = parse_time(until_text)
        except ValueError:
            raise InvalidInputError(
                f"{where}.active_until", "must be RFC 3339 with offset, or null"
            ) from None
        if active_until <= active_from:
            raise InvalidInputError(f"{where}.active_until", "must be after active_from")
    geometry = _geometry(where, feature.get("geometry"))
    area = bundle_pb2.RiskArea(
        id=fid,
        city_code=code,
        level=bundle_pb2.RiskLevel.ValueType(level),
        geometry_wkb=shapely.to_wkb(geometry, output_dimension=2),
        active_from=_timestamp(active_from),
    )
    if active_until is not None:
        area.active_until.CopyFrom(_timestamp(active_until))
    return area


def _geometry(where: str, obj: Any) -> shapely.Geometry:
    field = f"{where}.geometry"
    if not isinstance(obj, Mapping) or obj.get("type") not in ("Polygon", "MultiPolygon"):
        raise InvalidInputError(field, "must be a GeoJSON Polygon or MultiPolygon")
    try:
        geometry = shapely.geometry.shape(obj)
    except Exception:  # shapely raises several types on malformed coordinate arrays
        raise InvalidInputError(field, "coordinates are not a valid polygon ring array") from None
    if geometry.is_empty:
        raise InvalidInputError(field, "must not be empty")
    minx, miny, maxx, maxy = geometry.bounds
    if not (minx >= -180 and maxx <= 180 and miny >= -90 and maxy <= 90):
        raise InvalidInputError(field, "coordinates out of range (longitude, latitude order?)")
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry).split("[")[0].strip()
        raise InvalidInputError(field, f"not a valid polygon: {reason}")
    # Store rings in the GeoJSON (RFC 7946) winding: exterior counter-clockwise.
    return shapely.orient_polygons(geometry)


def build_bundle(
    collection: Any,
    *,
    version: int,
    issued_at: int,
    expires_at: int,
    policy: Policy,
    progress: Callable[[int, int], None] | None = None,
) -> bundle_pb2.RiskAreaBundle:
    """Build the unsigned bundle message from a parsed GeoJSON FeatureCollection."""
    if not isinstance(collection, Mapping) or collection.get("type") != "FeatureCollection":
        raise InvalidInputError("areas", "must be a GeoJSON FeatureCollection")
    features = collection.get("features")
    if not isinstance(features, list):
        raise InvalidInputError("areas.features", "must be an array")
    if version <= 0:
        raise InvalidInputError("version", "must be a positive integer")
    if expires_at <= issued_at:
        raise InvalidInputError("expires", "must be after the issue time")
    policy.check()
    msg = bundle_pb2.RiskAreaBundle(
        version=version,
        issued_at=_timestamp(issued_at),
        expires_at=_timestamp(expires_at),
        policy=policy.to_proto(),
    )
    seen: set[str] = set()
    total = len(features)
    for i, feature in enumerate(features):
        area = _area(i, feature)
        if area.id in seen:
            raise InvalidInputError(f"features[{i}] (id {area.id}).id", "must be unique")
        seen.add(area.id)
        msg.areas.append(area)
        if progress is not None and (i + 1) % 1000 == 0:
            progress(i + 1, total)
    if progress is not None:
        progress(total, total)
    return msg

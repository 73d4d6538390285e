"""A risk-area bundle drawn as an SVG map, for a person to look at before signing.

What it does: :func:`render_svg` takes a decoded ``staycheck.v1.RiskAreaBundle`` message and
a list of city markers and returns the text of a standalone SVG document: an
equirectangular projection (longitude scaled by the cosine of the middle latitude) fitted
to the bounds of the areas and cities with a margin; one ``<path>`` per area, carrying
``data-area-id``, ``data-level`` and ``data-city-code``, filled semi-transparently by level
(low green, medium orange, high red); each city as a circle labelled with its English name
and code; a legend with the area count per level; and a title with the bundle's version and
dates. Every piece of text is escaped (area ids come from the authority's file), and
characters that XML 1.0 cannot carry at all are replaced by U+FFFD.

What it does not do: verify where the areas came from or their invariants (the caller
reads them from a checked GeoJSON file or the repository first), judge which areas are
active or flagged (it draws every area), read a clock, or open a file. The projection is
for looking at, not for measuring: distances and areas on it are approximate.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import shapely
from staycheck.geo.errors import MalformedError
from staycheck.v1 import bundle_pb2

LEVEL_LABELS: dict[int, str] = {
    bundle_pb2.RISK_LEVEL_LOW: "low",
    bundle_pb2.RISK_LEVEL_MEDIUM: "medium",
    bundle_pb2.RISK_LEVEL_HIGH: "high",
}
"""``data-level`` value by ``RiskLevel`` number; any other number is ``unspecified``."""

LEVEL_COLOURS: dict[str, str] = {
    "low": "#2e7d32",  # green
    "medium": "#ef6c00",  # orange
    "high": "#c62828",  # red
    "unspecified": "#757575",  # grey: a validated bundle has none
}
"""Fill and stroke colour by level label."""

FILL_OPACITY = 0.45
"""Areas are semi-transparent, so overlaps and city markers below stay visible."""

_TITLE_BAND_PX = 56
_LEGEND_BAND_PX = 36
_PAD_PX = 12
_MARGIN_FRACTION = 0.08  # of the larger span, added around the fitted bounds
_MIN_SPAN_DEG = 0.05  # a single point still gets a view a few kilometres wide
_LABEL_ROOM_PX = 160  # a city label right of its dot needs about this much room
_STROKE_PX = 1.5
_MIN_AREA_PX = 8.0  # an area smaller than this on the map gets a wider outline to be seen

# XML 1.0 ``Char``: anything else cannot appear in a document, even as a reference.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class CityMarker:
    """A city drawn as a labelled dot."""

    code: str
    """Six-digit GB/T 2260 code, shown beside the name."""
    name: str
    """Label, e.g. the English name."""
    lat: float
    """WGS-84 latitude, degrees."""
    lon: float
    """WGS-84 longitude, degrees."""


def _text(value: object) -> str:
    """``value`` as text safe inside an element or a double-quoted attribute."""
    return html.escape(_NOT_XML_CHAR.sub("\ufffd", str(value)), quote=True)


def _level_label(level: int) -> str:
    return LEVEL_LABELS.get(int(level), "unspecified")


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class _Projection:
    """Equirectangular: degrees to pixels, north up."""

    west: float
    north: float
    scale_x: float  # pixels per degree of longitude
    scale_y: float  # pixels per degree of latitude
    top: float  # pixel offset of the map's top edge

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (
            _PAD_PX + (lon - self.west) * self.scale_x,
            self.top + (self.north - lat) * self.scale_y,
        )


def _fit(bounds: tuple[float, float, float, float] | None, width: int) -> tuple[_Projection, float]:
    """The projection for ``bounds`` (west, south, east, north) and the map's pixel height."""
    west, south, east, north = bounds if bounds is not None else (116.0, 39.0, 118.0, 41.0)
    mid_lat = (south + north) / 2
    kx = max(math.cos(math.radians(mid_lat)), 0.05)  # stretch of a degree of longitude
    span_x = max((east - west) * kx, _MIN_SPAN_DEG)
    span_y = max(north - south, _MIN_SPAN_DEG)
    span_x = max(span_x, span_y / 1.5)  # a tall, narrow view stays at most 1.5 times as tall
    margin = _MARGIN_FRACTION * max(span_x, span_y)
    cx, cy = (west + east) / 2, mid_lat
    half_x, half_y = span_x / 2 + margin, span_y / 2 + margin  # in "latitude degrees"
    map_width = width - 2 * _PAD_PX
    scale_y = map_width / (2 * half_x)
    projection = _Projection(
        west=cx - half_x / kx,
        north=cy + half_y,
        scale_x=scale_y * kx,
        scale_y=scale_y,
        top=_TITLE_BAND_PX,
    )
    return projection, 2 * half_y * scale_y


def _ring_path(coords: Sequence[Sequence[float]], projection: _Projection) -> str:
    points = [projection.xy(float(c[0]), float(c[1])) for c in coords]
    head, *rest = points
    return f"M{head[0]:.2f},{head[1]:.2f}" + "".join(f"L{x:.2f},{y:.2f}" for x, y in rest) + "Z"


def _geometry_path(geometry: shapely.Geometry, projection: _Projection) -> str:
    """One path for a Polygon or MultiPolygon: every ring a subpath (holes by even-odd)."""
    parts = list(geometry.geoms) if geometry.geom_type == "MultiPolygon" else [geometry]
    rings: list[str] = []
    for polygon in parts:
        rings.append(_ring_path(polygon.exterior.coords, projection))
        rings.extend(_ring_path(r.coords, projection) for r in polygon.interiors)
    return "".join(rings)


def _stroke_width(geometry: shapely.Geometry, projection: _Projection) -> float:
    """The outline width: wider for an area too small to see at the map's scale."""
    west, south, east, north = (float(b) for b in geometry.bounds)
    size = max((east - west) * projection.scale_x, (north - south) * projection.scale_y)
    return max(_STROKE_PX, _MIN_AREA_PX - size)


def _geometries(msg: bundle_pb2.RiskAreaBundle) -> list[shapely.Geometry]:
    geometries = []
    for i, area in enumerate(msg.areas):
        try:
            geometry = shapely.from_wkb(area.geometry_wkb, on_invalid="raise")
        except Exception as e:  # shapely raises several types on bad WKB
            raise MalformedError(f"areas[{i}].geometry_wkb: not valid WKB") from e
        if geometry is None or geometry.is_empty:
            raise MalformedError(f"areas[{i}].geometry_wkb: must not be empty")
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise MalformedError(f"areas[{i}].geometry_wkb: must be a Polygon or MultiPolygon")
        bounds = geometry.bounds
        if not all(math.isfinite(b) for b in bounds):
            raise MalformedError(f"areas[{i}].geometry_wkb: coordinates must be finite")
        geometries.append(geometry)
    return geometries


def _bounds(
    geometries: Sequence[shapely.Geometry], cities: Sequence[CityMarker]
) -> tuple[float, float, float, float] | None:
    boxes = [tuple(float(b) for b in g.bounds) for g in geometries]
    boxes += [(c.lon, c.lat, c.lon, c.lat) for c in cities if math.isfinite(c.lat + c.lon)]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def render_svg(
    bundle: bundle_pb2.RiskAreaBundle, cities: Sequence[CityMarker], *, width: int = 1000
) -> str:
    """The SVG document (text) showing ``bundle``'s areas over ``cities``.

    ``width`` is the image width in pixels; the height follows from the bounds. Raises
    :class:`MalformedError` if an area's geometry is not a non-empty Polygon or
    MultiPolygon.
    """
    if width < 200:
        raise ValueError("width: must be at least 200 pixels")
    geometries = _geometries(bundle)
    projection, map_height = _fit(_bounds(geometries, cities), width)
    height = math.ceil(_TITLE_BAND_PX + map_height + _LEGEND_BAND_PX)
    map_bottom = _TITLE_BAND_PX + map_height

    title = f"Risk-area bundle version {bundle.version}"
    dates = []
    if bundle.HasField("issued_at"):
        dates.append(f"issued {_utc(bundle.issued_at.seconds)}")
    if bundle.HasField("expires_at"):
        dates.append(f"expires {_utc(bundle.expires_at.seconds)}")
    subtitle = ", ".join([*dates, f"{len(bundle.areas)} areas"])

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{_text(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<rect x="{_PAD_PX}" y="{_TITLE_BAND_PX}" width="{width - 2 * _PAD_PX}" '
        f'height="{map_height:.2f}" fill="#f5f7fa" stroke="#c0c6cc"/>',
        f'<text x="{_PAD_PX}" y="24" font-size="18" font-weight="bold">{_text(title)}</text>',
        f'<text x="{_PAD_PX}" y="44" fill="#444444">{_text(subtitle)}</text>',
    ]

    out.append('<g class="cities">')
    for city in cities:
        if not math.isfinite(city.lat + city.lon):
            continue
        x, y = projection.xy(city.lon, city.lat)
        label = f"{_text(city.name)} {_text(city.code)}"
        if x > width - _LABEL_ROOM_PX:  # near the right edge: label on the left of the dot
            label_at = f'x="{x - 6:.2f}" y="{y - 4:.2f}" text-anchor="end"'
        else:
            label_at = f'x="{x + 6:.2f}" y="{y - 4:.2f}"'
        out.append(
            f'<g class="city" data-city-code="{_text(city.code)}">'
            f'<circle cx="{x:.2f}" cy="{y:.2f}" r="3.5" fill="#263238" stroke="#ffffff"/>'
            f'<text {label_at} fill="#263238">{label}</text></g>'
        )
    out.append("</g>")

    # Areas above the cities: they are semi-transparent, the dots stay visible below.
    out.append(
        f'<g class="areas" stroke-linejoin="round" fill-opacity="{FILL_OPACITY}" '
        'fill-rule="evenodd">'
    )
    counts = dict.fromkeys(LEVEL_COLOURS, 0)
    for area, geometry in zip(bundle.areas, geometries, strict=True):
        level = _level_label(area.level)
        counts[level] += 1
        colour = LEVEL_COLOURS[level]
        out.append(
            f'<path class="area" data-area-id="{_text(area.id)}" data-level="{level}" '
            f'data-city-code="{_text(area.city_code)}" fill="{colour}" stroke="{colour}" '
            f'stroke-width="{_stroke_width(geometry, projection):.2f}" '
            f'd="{_geometry_path(geometry, projection)}">'
            f"<title>{_text(area.id)} ({level}, city {_text(area.city_code)})</title></path>"
        )
    out.append("</g>")

    legend_y = map_bottom + _LEGEND_BAND_PX / 2
    out.append('<g class="legend">')
    x = float(_PAD_PX)
    for level in ("low", "medium", "high"):
        colour = LEVEL_COLOURS[level]
        out.append(
            f'<rect x="{x:.2f}" y="{legend_y - 6:.2f}" width="12" height="12" fill="{colour}" '
            f'fill-opacity="{FILL_OPACITY}" stroke="{colour}"/>'
            f'<text x="{x + 18:.2f}" y="{legend_y + 4:.2f}">{level} ({counts[level]})</text>'
        )
        x += 110
    out.append(
        f'<circle cx="{x + 6:.2f}" cy="{legend_y:.2f}" r="3.5" fill="#263238"/>'
        f'<text x="{x + 18:.2f}" y="{legend_y + 4:.2f}">city (name, code)</text>'
    )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"

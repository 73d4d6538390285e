"""staycheck.geo.render: one shape per area, coloured by level, cities marked, every text escaped.

Expected values come from the bundle built here and from the rules in the module's
docstring (north up, east right; low green, medium orange, high red; semi-transparent)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from staycheck.cli.samples import feature, square
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy
from staycheck.geo.errors import MalformedError
from staycheck.geo.render import CityMarker, render_svg
from staycheck.v1 import bundle_pb2

SVG = "{http://www.w3.org/2000/svg}"
NOW = 1_795_000_000
DAY = 86400
EVIL_ID = '<script>alert("x")</script>&'

# Tianjin, Langfang and Baoding centres (client/data/jjj_cities.json).
TJ = (39.1256, 117.1902)
LF = (39.538, 116.6838)
BD = (38.8738, 115.4646)
CITIES = [
    CityMarker("120100", "Tianjin", *TJ),
    CityMarker("131000", "Langfang", *LF),
    CityMarker("130600", "Baoding", *BD),
]


def _multipolygon_feature(area_id: str, level: str) -> dict[str, object]:
    """Two separate 1 km squares in Langfang, 20 km apart east-west."""
    f = feature(area_id, "131000", level, square(*LF, 1000), active_from=NOW - DAY)
    east = square(LF[0], LF[1] + 0.2, 1000)
    f["geometry"] = {"type": "MultiPolygon", "coordinates": [square(*LF, 1000), east]}
    return f


def _bundle(features: list[dict[str, object]], version: int = 7) -> bundle_pb2.RiskAreaBundle:
    return build_bundle(
        {"type": "FeatureCollection", "features": features},
        version=version,
        issued_at=NOW,
        expires_at=NOW + DAY,
        policy=Policy(),
    )


@pytest.fixture
def three_areas() -> bundle_pb2.RiskAreaBundle:
    return _bundle(
        [
            feature("TJ-1", "120100", "high", square(*TJ, 2000), active_from=NOW - DAY),
            _multipolygon_feature("LF-1", "medium"),
            feature(EVIL_ID, "130600", "low", square(*BD, 3000), active_from=NOW - DAY),
        ]
    )


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed XML


def _area_shapes(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("data-area-id") is not None]


def _rgb(colour: str) -> tuple[int, int, int]:
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", colour), colour
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _inherited(root: ET.Element, element: ET.Element, name: str) -> str | None:
    """An SVG presentation attribute of ``element`` or of its nearest ancestor that has it."""
    parents = {child: parent for parent in root.iter() for child in parent}
    node: ET.Element | None = element
    while node is not None:
        if node.get(name) is not None:
            return node.get(name)
        node = parents.get(node)
    return None


def _subpath_points(d: str) -> list[list[tuple[float, float]]]:
    """Absolute M/L/Z path data into its subpaths' points."""
    subpaths: list[list[tuple[float, float]]] = []
    for cmd, x, y in re.findall(r"([ML])\s*(-?[\d.]+)[ ,](-?[\d.]+)", d):
        if cmd == "M":
            subpaths.append([])
        subpaths[-1].append((float(x), float(y)))
    return subpaths


def test_one_shape_per_area_with_its_id_and_level(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    shapes = _area_shapes(root)
    assert sorted(e.get("data-area-id") for e in shapes) == sorted(["TJ-1", "LF-1", EVIL_ID])
    levels = {e.get("data-area-id"): e.get("data-level") for e in shapes}
    assert levels == {"TJ-1": "high", "LF-1": "medium", EVIL_ID: "low"}
    assert all(e.tag in (f"{SVG}path", f"{SVG}polygon") for e in shapes)


def test_multipolygon_is_one_shape_with_one_subpath_per_part(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    (lf,) = [e for e in _area_shapes(root) if e.get("data-area-id") == "LF-1"]
    parts = _subpath_points(lf.get("d", ""))
    assert len(parts) == 2
    # The second square lies 0.2 degrees east of the first: drawn to its right.
    left, right = (min(x for x, _ in p) for p in parts)
    assert right > left


def test_polygon_with_a_hole_draws_both_rings_filled_even_odd():
    outer = square(*TJ, 3000)[0]
    hole = list(reversed(square(*TJ, 1000)[0]))
    f = feature("RING", "120100", "high", [outer, hole], active_from=NOW - DAY)
    root = _parse(render_svg(_bundle([f]), []))
    (shape,) = _area_shapes(root)
    assert len(_subpath_points(shape.get("d", ""))) == 2
    assert _inherited(root, shape, "fill-rule") == "evenodd"


def test_fill_colours_follow_the_level_and_are_semi_transparent(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    fills = {}
    for shape in _area_shapes(root):
        fill = _inherited(root, shape, "fill")
        assert fill is not None
        fills[shape.get("data-level")] = _rgb(fill)
        opacity = _inherited(root, shape, "fill-opacity") or _inherited(root, shape, "opacity")
        assert opacity is not None and 0 < float(opacity) < 1
    r, g, b = fills["low"]
    assert g > r and g > b  # green
    r, g, b = fills["high"]
    assert r > g and r > b  # red
    r, g, b = fills["medium"]
    assert r > g > b  # orange: red, some green, little blue
    assert len(set(fills.values())) == 3


def test_north_is_up_and_east_is_right(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    centre = {}
    for shape in _area_shapes(root):
        points = [pt for sub in _subpath_points(shape.get("d", "")) for pt in sub]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        centre[shape.get("data-area-id")] = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)
    # Tianjin (117.19 E, 39.13 N) is east of Baoding (115.46 E, 38.87 N) and north of it.
    assert centre["TJ-1"][0] > centre[EVIL_ID][0]
    assert centre["TJ-1"][1] < centre[EVIL_ID][1]


def test_everything_is_drawn_inside_the_view_box(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    _, _, width, height = (float(v) for v in root.get("viewBox", "").split())
    for shape in _area_shapes(root):
        for x, y in (pt for sub in _subpath_points(shape.get("d", "")) for pt in sub):
            assert 0 <= x <= width and 0 <= y <= height
    for circle in root.iter(f"{SVG}circle"):
        assert 0 <= float(circle.get("cx", "-1")) <= width
        assert 0 <= float(circle.get("cy", "-1")) <= height


def test_every_city_has_a_marker_and_a_label_with_name_and_code(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    markers = [g for g in root.iter(f"{SVG}g") if g.get("data-city-code") is not None]
    assert sorted(g.get("data-city-code") for g in markers) == ["120100", "130600", "131000"]
    by_code = {c.code: c for c in CITIES}
    for g in markers:
        city = by_code[g.get("data-city-code", "")]
        assert g.find(f"{SVG}circle") is not None
        label = "".join(g.find(f"{SVG}text").itertext())  # type: ignore[union-attr]
        assert city.name in label and city.code in label


def test_title_names_the_version_and_legend_names_the_levels(three_areas):
    root = _parse(render_svg(three_areas, CITIES))
    title = root.find(f"{SVG}title")
    assert title is not None and "version 7" in (title.text or "")
    texts = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert "version 7" in texts
    for level in ("low", "medium", "high"):
        assert level in texts


def test_hostile_area_id_is_escaped_not_markup(three_areas):
    svg = render_svg(three_areas, CITIES)
    assert "<script" not in svg
    root = _parse(svg)
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1].lower() == "script"]
    ids = [e.get("data-area-id") for e in _area_shapes(root)]
    assert EVIL_ID in ids  # the attribute round-trips to the original text


def test_characters_xml_cannot_carry_do_not_break_the_document():
    f = feature("bad\x00\x1b[31m\ufffeid", "120100", "high", square(*TJ, 1000), active_from=NOW)
    root = _parse(render_svg(_bundle([f]), [CityMarker("120100", 'Tian"jin\x07', *TJ)]))
    (shape,) = _area_shapes(root)
    area_id = shape.get("data-area-id", "")
    assert "\x00" not in area_id and "\x1b" not in area_id and "\ufffe" not in area_id
    assert area_id.startswith("bad") and area_id.endswith("id")


def test_no_areas_and_no_cities_still_renders_a_map():
    root = _parse(render_svg(_bundle([]), []))
    assert _area_shapes(root) == []
    assert root.find(f"{SVG}title") is not None


def test_a_geometry_that_is_not_wkb_is_refused(three_areas):
    three_areas.areas[1].geometry_wkb = b"\x01\x02not wkb"
    with pytest.raises(MalformedError, match=r"areas\[1\]\.geometry_wkb"):
        render_svg(three_areas, CITIES)

"""staycheck.geo.diff: every kind of change found exactly, unchanged areas not listed.

Each case changes one thing on purpose; the expected diff is written from that change. A
diff is about areas and policy only: versions are the repository's (TUF's) business, so
bundles that differ only in their version have an empty diff and no version is printed."""

from __future__ import annotations

import pytest
from staycheck.cli.samples import feature, square
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Level, Policy
from staycheck.geo.diff import BundleDiff, LevelChange, PolicyChange, diff_bundles, format_diff
from staycheck.geo.errors import MalformedError
from staycheck.v1 import bundle_pb2

NOW = 1_795_000_000
DAY = 86400
TJ = (39.1256, 117.1902)
LF = (39.538, 116.6838)
BD = (38.8738, 115.4646)


def _bundle(
    features: list[dict[str, object]], *, version: int, policy: Policy | None = None
) -> bundle_pb2.RiskAreaBundle:
    return build_bundle(
        {"type": "FeatureCollection", "features": features},
        version=version,
        issued_at=NOW,
        expires_at=NOW + DAY,
        policy=policy or Policy(),
    )


def _sq(area_id: str, level: str = "high", *, where=TJ, side=1000, city="120100", **times):
    times.setdefault("active_from", NOW - 5 * DAY)
    return feature(area_id, city, level, square(*where, side), **times)


def _rotated(f: dict[str, object]) -> dict[str, object]:
    """The same polygon with its ring starting at another vertex."""
    ring = f["geometry"]["coordinates"][0]  # type: ignore[index]
    rotated = [ring[1], ring[2], ring[3], ring[0], ring[1]]
    g = dict(f)
    g["geometry"] = {"type": "Polygon", "coordinates": [rotated]}
    return g


OLD = [
    _sq("A-same"),
    _sq("B-level", "medium"),
    _sq("C-removed", "low"),
    _sq("D-window"),
    _sq("E-moved", where=LF, city="131000"),
    _sq("F-rotated", where=BD, city="130600"),
    _sq("H-city"),
    _sq("K-level-and-window", "low"),
]
NEW = [
    _sq("Z-added"),  # listed before A-added on purpose: results are sorted by id
    _sq("A-same"),
    _sq("B-level", "high"),
    _sq("D-window", active_until=NOW + DAY),
    _sq("E-moved", where=(LF[0] + 0.01, LF[1]), city="131000"),
    _rotated(_sq("F-rotated", where=BD, city="130600")),
    _sq("H-city", city="131000"),  # same square, now filed under Langfang
    _sq("K-level-and-window", "medium", active_from=NOW - 4 * DAY),
    _sq("A-added", "medium"),
]


def test_each_kind_of_change_is_found_exactly():
    d = diff_bundles(_bundle(OLD, version=3), _bundle(NEW, version=4))
    assert d == BundleDiff(
        added=("A-added", "Z-added"),
        removed=("C-removed",),
        level_changed=(
            LevelChange("B-level", "medium", "high"),
            LevelChange("K-level-and-window", "low", "medium"),
        ),
        window_changed=("D-window", "K-level-and-window"),
        geometry_changed=("E-moved",),
        city_changed=("H-city",),
        policy_changed=(),
        unchanged=2,  # A-same, F-rotated
    )
    assert not d.empty


def test_the_same_region_from_another_start_vertex_is_not_a_geometry_change():
    f = _sq("F", where=BD, city="130600")
    old, new = _bundle([f], version=1), _bundle([_rotated(f)], version=2)
    assert old.areas[0].geometry_wkb != new.areas[0].geometry_wkb  # the bytes do differ
    d = diff_bundles(old, new)
    assert d.geometry_changed == () and d.unchanged == 1 and d.empty


def test_identical_bundles_have_an_empty_diff():
    d = diff_bundles(_bundle(OLD, version=3), _bundle(OLD, version=3))
    assert d.empty
    assert (d.added, d.removed, d.level_changed, d.window_changed, d.geometry_changed) == (
        (),
        (),
        (),
        (),
        (),
    )
    assert d.unchanged == len(OLD)


def test_opening_and_closing_a_window_are_window_changes():
    still_active = _sq("W")
    ended = _sq("W", active_until=NOW)
    d = diff_bundles(_bundle([still_active], version=1), _bundle([ended], version=2))
    assert d.window_changed == ("W",)
    d = diff_bundles(_bundle([ended], version=2), _bundle([still_active], version=3))
    assert d.window_changed == ("W",)


def test_policy_changes_are_listed_by_field():
    old = _bundle([_sq("A")], version=1)
    new = _bundle(
        [_sq("A")],
        version=2,
        policy=Policy(window_days=10, flagged_levels=frozenset({Level.HIGH})),
    )
    d = diff_bundles(old, new)
    assert d.policy_changed == (
        PolicyChange("flagged_levels", "high,medium", "high"),
        PolicyChange("window_days", "14", "10"),
    )
    assert d.unchanged == 1 and not d.empty


def test_duplicate_area_ids_are_refused():
    old = _bundle([_sq("A")], version=1)
    new = _bundle([_sq("A")], version=2)
    new.areas.append(new.areas[0])
    with pytest.raises(MalformedError, match=r"new\.areas\[1\]\.id"):
        diff_bundles(old, new)


def test_format_lists_each_change_and_a_summary():
    text = format_diff(diff_bundles(_bundle(OLD, version=3), _bundle(NEW, version=4)))
    lines = text.splitlines()
    assert not any("version" in line for line in lines)  # the repository's, not the diff's
    assert "+ added     A-added" in lines
    assert "- removed   C-removed" in lines
    assert "~ level     B-level: medium -> high" in lines
    assert "~ window    D-window" in lines
    assert "~ geometry  E-moved" in lines
    assert "~ city      H-city" in lines
    assert not any("A-same" in line or "F-rotated" in line for line in lines)
    assert lines[-1] == (
        "2 added, 1 removed, 2 level, 2 window, 1 geometry, 1 city, 0 policy changed; 2 unchanged"
    )


def test_format_escapes_terminal_control_characters_in_ids():
    hostile = "X\x1b[2J\x07"
    text = format_diff(diff_bundles(_bundle([], version=1), _bundle([_sq(hostile)], version=2)))
    assert "\x1b" not in text and "\x07" not in text
    assert "+ added     X\\x1b[2J\\x07" in text.splitlines()


def test_format_says_when_nothing_changed():
    """Another version of the same areas (a re-signing) is no change."""
    d = diff_bundles(_bundle(OLD, version=3), _bundle(OLD, version=4))
    assert d.empty
    text = format_diff(d)
    assert text.splitlines() == [
        "no changes to areas or policy",
        "0 added, 0 removed, 0 level, 0 window, 0 geometry, 0 city, 0 policy changed; "
        f"{len(OLD)} unchanged",
    ]

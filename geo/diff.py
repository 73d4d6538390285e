"""What changed between two risk-area bundles, for a person about to publish the new one.

What it does: :func:`diff_bundles` compares two decoded ``staycheck.v1.RiskAreaBundle``
messages area by area (areas are matched by id) and returns a :class:`BundleDiff`: the ids
added and removed; the areas whose level, active window, geometry or city code changed;
and the policy fields that changed. Every list is sorted by area id (policy changes by
field name). A geometry counts as changed when the region it covers changed: the same
polygon written with another starting vertex or ring direction is not a change.
:func:`format_diff` turns a diff into lines for a terminal, with any character that is not
printable in an id shown as an escape (ids come from the authority's file).

What it does not do: verify signatures or versions (TUF does, for what is published), say
whether a publication may replace another, judge which changes matter for matching, read a
clock or open a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import shapely
from staycheck.geo.errors import MalformedError
from staycheck.v1 import bundle_pb2

_LEVELS: dict[int, str] = {
    bundle_pb2.RISK_LEVEL_LOW: "low",
    bundle_pb2.RISK_LEVEL_MEDIUM: "medium",
    bundle_pb2.RISK_LEVEL_HIGH: "high",
}


def level_label(level: int) -> str:
    """``low``, ``medium``, ``high``, or ``unspecified`` for any other number."""
    return _LEVELS.get(int(level), "unspecified")


class LevelChange(NamedTuple):
    """An area whose level changed, e.g. ``("TJ-0001", "medium", "high")``."""

    area_id: str
    old: str
    new: str


class PolicyChange(NamedTuple):
    """A policy field whose value changed, both values as text."""

    field: str
    old: str
    new: str


@dataclass(frozen=True)
class BundleDiff:
    """Changes from an old bundle to a new one; each tuple sorted by area id."""

    added: tuple[str, ...] = ()
    """Ids in the new bundle only."""
    removed: tuple[str, ...] = ()
    """Ids in the old bundle only."""
    level_changed: tuple[LevelChange, ...] = ()
    window_changed: tuple[str, ...] = ()
    """Ids whose ``active_from`` or ``active_until`` (or its absence) changed."""
    geometry_changed: tuple[str, ...] = ()
    """Ids whose polygon covers another region."""
    city_changed: tuple[str, ...] = ()
    """Ids whose ``city_code`` changed (it decides the city-level rule)."""
    policy_changed: tuple[PolicyChange, ...] = ()
    """Policy fields that changed, sorted by field name."""
    unchanged: int = 0
    """Number of areas present in both bundles with none of the changes above."""

    @property
    def empty(self) -> bool:
        """True if no area and no policy field changed."""
        return not (
            self.added
            or self.removed
            or self.level_changed
            or self.window_changed
            or self.geometry_changed
            or self.city_changed
            or self.policy_changed
        )


def _by_id(msg: bundle_pb2.RiskAreaBundle, which: str) -> dict[str, bundle_pb2.RiskArea]:
    areas: dict[str, bundle_pb2.RiskArea] = {}
    for i, area in enumerate(msg.areas):
        if area.id in areas:
            raise MalformedError(f"{which}.areas[{i}].id: must be unique")
        areas[area.id] = area
    return areas


def _window(area: bundle_pb2.RiskArea) -> tuple[int | None, int | None]:
    start = area.active_from.seconds if area.HasField("active_from") else None
    end = area.active_until.seconds if area.HasField("active_until") else None
    return start, end


def _policy(msg: bundle_pb2.RiskAreaBundle) -> dict[str, str]:
    p = msg.policy
    return {
        "flagged_levels": ",".join(sorted(level_label(v) for v in set(p.flagged_levels))),
        "min_stay_seconds": str(p.min_stay_seconds),
        "tolerance_m": repr(p.tolerance_m),
        "window_days": str(p.window_days),
    }


def _geometry_changed(pairs: list[tuple[str, bytes, bytes]]) -> set[str]:
    """Ids of the pairs whose WKB differ in the region they describe."""
    if not pairs:
        return set()
    try:
        old = shapely.from_wkb(np.array([p[1] for p in pairs], dtype=object), on_invalid="raise")
        new = shapely.from_wkb(np.array([p[2] for p in pairs], dtype=object), on_invalid="raise")
    except Exception as e:  # shapely raises several types on bad WKB
        raise MalformedError("areas: geometry_wkb is not valid WKB") from e
    same = shapely.equals(old, new)
    return {pair[0] for pair, equal in zip(pairs, same, strict=True) if not equal}


def diff_bundles(old: bundle_pb2.RiskAreaBundle, new: bundle_pb2.RiskAreaBundle) -> BundleDiff:
    """The changes from ``old`` to ``new``. Raises :class:`MalformedError` on duplicate
    area ids or geometry that is not WKB."""
    before, after = _by_id(old, "old"), _by_id(new, "new")
    common = sorted(before.keys() & after.keys())
    level_changed: list[LevelChange] = []
    window_changed: list[str] = []
    city_changed: list[str] = []
    differing_wkb: list[tuple[str, bytes, bytes]] = []
    for area_id in common:
        a, b = before[area_id], after[area_id]
        if a.level != b.level:
            level_changed.append(LevelChange(area_id, level_label(a.level), level_label(b.level)))
        if _window(a) != _window(b):
            window_changed.append(area_id)
        if a.city_code != b.city_code:
            city_changed.append(area_id)
        if a.geometry_wkb != b.geometry_wkb:
            differing_wkb.append((area_id, a.geometry_wkb, b.geometry_wkb))
    geometry_changed = sorted(_geometry_changed(differing_wkb))
    changed = (
        {c.area_id for c in level_changed}
        | set(window_changed)
        | set(city_changed)
        | set(geometry_changed)
    )
    old_policy, new_policy = _policy(old), _policy(new)
    return BundleDiff(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        level_changed=tuple(level_changed),
        window_changed=tuple(window_changed),
        geometry_changed=tuple(geometry_changed),
        city_changed=tuple(city_changed),
        policy_changed=tuple(
            PolicyChange(name, old_policy[name], new_policy[name])
            for name in sorted(old_policy)
            if old_policy[name] != new_policy[name]
        ),
        unchanged=len(common) - len(changed),
    )


def _shown(text: str) -> str:
    """``text`` as is if printable, else with its unprintable characters escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _lines(mark: str, label: str, ids: Iterable[str]) -> list[str]:
    return [f"{mark} {label:<9} {_shown(i)}" for i in ids]


def format_diff(d: BundleDiff) -> str:
    """The diff for a person: one line per change, then a summary line."""
    lines = [f"~ policy    {c.field}: {c.old} -> {c.new}" for c in d.policy_changed]
    lines += _lines("+", "added", d.added)
    lines += _lines("-", "removed", d.removed)
    lines += [f"~ level     {_shown(c.area_id)}: {c.old} -> {c.new}" for c in d.level_changed]
    lines += _lines("~", "window", d.window_changed)
    lines += _lines("~", "geometry", d.geometry_changed)
    lines += _lines("~", "city", d.city_changed)
    if d.empty:
        lines.append("no changes to areas or policy")
    lines.append(
        f"{len(d.added)} added, {len(d.removed)} removed, {len(d.level_changed)} level, "
        f"{len(d.window_changed)} window, {len(d.geometry_changed)} geometry, "
        f"{len(d.city_changed)} city, {len(d.policy_changed)} policy changed; "
        f"{d.unchanged} unchanged"
    )
    return "\n".join(lines) + "\n"

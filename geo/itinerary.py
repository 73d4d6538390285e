"""Itineraries: the stays a traveller submits, and the rules every stay must follow.

What it does: defines :class:`Stay` and :class:`ItineraryLimits`, and :func:`validate`,
which checks an itinerary against the limits and raises :class:`InvalidInputError` naming
the field (``stays[3].departure``) and the rule, never the value.

What it does not do: decode protobuf or JSON (the shells do), or match (``staycheck.geo.matching``).
Times are Unix seconds (sub-second parts are dropped by the shells); locations are WGS-84
degrees.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from staycheck.geo.errors import InvalidInputError


class Status(enum.IntEnum):
    """A verdict's status. The values are the ones in tokens and in the proto enum."""

    NO_ABNORMALITY = 1
    REVIEW_REQUIRED = 2

    @property
    def label_zh(self) -> str:
        return "未见异常" if self is Status.NO_ABNORMALITY else "弹窗"


# GB/T 2260: two digits of province (11-82), two of prefecture (01-99), two of county (00 for
# the prefecture itself). Province-administered county-level units (the "90" prefecture block,
# such as 429004 Xiantao) stand in for prefectures and are accepted too.
PROVINCES = (
    *range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47), *range(50, 55),
    *range(61, 66), 71, 81, 82,
)  # fmt: skip


def _all_city_codes() -> frozenset[str]:
    """Every accepted code (about 7 000), so that a check is one set lookup. A fixed set
    built from the rule, never from what callers send (no cache of their codes)."""
    codes: set[str] = set()
    for province in PROVINCES:
        codes.update(f"{province:02d}{prefecture:02d}00" for prefecture in range(1, 100))
        codes.update(f"{province:02d}90{county:02d}" for county in range(100))
    return frozenset(codes)


_CITY_CODES = _all_city_codes()


def is_city_code(code: str) -> bool:
    """True for a six-digit GB/T 2260 code of a prefecture-level city (e.g. ``120100``)."""
    return code in _CITY_CODES


class Stay(NamedTuple):
    """One stay. ``location`` is ``(latitude, longitude)`` or None (city-level rule).
    A named tuple: immutable, and cheap to build on the request path."""

    city_code: str
    arrival: int
    departure: int
    location: tuple[float, float] | None = None


@dataclass(frozen=True)
class ItineraryLimits:
    """Limits on what a caller may submit (docs/limits.md)."""

    max_stays: int = 1000
    """Stays per itinerary; 14 days of hourly stays is 336."""
    max_future_s: int = 24 * 3600
    """How far after ``now`` a departure may lie, in seconds (planned departures)."""
    earliest: int = 0
    """Earliest acceptable time, Unix seconds (1970-01-01T00:00:00Z)."""


DEFAULT_LIMITS = ItineraryLimits()


def validate_location(field: str, lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise InvalidInputError(field, "coordinates must be finite numbers")
    if not -90.0 <= lat <= 90.0:
        raise InvalidInputError(f"{field}.latitude", "must be within [-90, 90] degrees")
    if not -180.0 <= lon <= 180.0:
        raise InvalidInputError(f"{field}.longitude", "must be within [-180, 180] degrees")


def validate(stays: Sequence[Stay], *, now: int, limits: ItineraryLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`InvalidInputError` for the first stay that breaks a rule.

    Accepted on purpose: an empty itinerary, duplicate and overlapping stays (their time is
    counted once per city), stays that lie wholly outside the window (ignored).
    """
    if len(stays) > limits.max_stays:
        raise InvalidInputError("stays", f"at most {limits.max_stays} stays per itinerary")
    latest = now + limits.max_future_s
    for i, stay in enumerate(stays):
        field = f"stays[{i}]"
        if not is_city_code(stay.city_code):
            raise InvalidInputError(
                f"{field}.city_code", "must be a six-digit GB/T 2260 prefecture-level city code"
            )
        if stay.arrival < limits.earliest:
            raise InvalidInputError(f"{field}.arrival", "must not be before 1970-01-01")
        if stay.departure > latest:
            raise InvalidInputError(
                f"{field}.departure", f"must not be more than {limits.max_future_s} s in the future"
            )
        if stay.departure <= stay.arrival:
            raise InvalidInputError(f"{field}.departure", "must be after arrival")
        if stay.location is not None:
            validate_location(f"{field}.location", *stay.location)

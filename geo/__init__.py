"""Geometry and the itinerary rule: the matching rule of docs/rules.md.

- :mod:`staycheck.geo.itinerary`: stays, their validation, the verdict :class:`Status`.
- :mod:`staycheck.geo.matching`: :func:`evaluate`, the matching rule itself, and
  :func:`evaluate_batch`, the same for many itineraries with one index query.
- :mod:`staycheck.geo.bundle`: the risk-area model, its policy and spatial index.
- :mod:`staycheck.geo.geodesy`: geodesic distances for the tolerance.
- :mod:`staycheck.geo.authoring`, :mod:`~staycheck.geo.render`, :mod:`~staycheck.geo.diff`:
  the authority's tools (GeoJSON in, bundle messages, SVG maps, differences out).
- :mod:`staycheck.geo.errors`: the project's exceptions, one root, branches by fault.

Pure: no clock, no file, no network, no gRPC. ``itinerary`` and ``errors`` need only the
base install; the geometry (``matching``, ``bundle`` and the names loaded from them here on
first use) needs shapely and numpy, the ``server`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from staycheck.geo.errors import (
    ConfigurationError,
    Error,
    InvalidInputError,
    SignedDataError,
    UnavailableError,
)
from staycheck.geo.itinerary import ItineraryLimits, Status, Stay, validate

if TYPE_CHECKING:
    from staycheck.geo.bundle import Level, Policy, RiskAreaBundle
    from staycheck.geo.matching import evaluate, evaluate_batch

# Names whose modules need the geometry libraries, imported when first used.
_GEOMETRY = {
    "Level": "staycheck.geo.bundle",
    "Policy": "staycheck.geo.bundle",
    "RiskAreaBundle": "staycheck.geo.bundle",
    "evaluate": "staycheck.geo.matching",
    "evaluate_batch": "staycheck.geo.matching",
}

__all__ = [
    "ConfigurationError",
    "Error",
    "InvalidInputError",
    "ItineraryLimits",
    "Level",
    "Policy",
    "RiskAreaBundle",
    "SignedDataError",
    "Status",
    "Stay",
    "UnavailableError",
    "evaluate",
    "evaluate_batch",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _GEOMETRY.get(name)
    if module is None:
        raise AttributeError(f"module 'staycheck.geo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""The caller's side of a StayCheck server: the gRPC clients and the caller's files.

- :class:`StayCheckClient`: the public service (submit an itinerary, fetch verdict keys),
  with a retry policy that survives a server restart.
- :class:`PartnerClient`: the partner listener over mutual TLS (online verification, bulk
  submission as one stream).
- :func:`tls_credentials`: channel credentials from PEM bytes.
- :func:`load_trust_store`, :func:`atomic_write`: files (:mod:`staycheck.client.files`).

The gRPC clients need the ``client`` extra and are imported on first use, so that
``staycheck.client.files`` works with the base install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from staycheck.client.files import atomic_write, load_trust_store

if TYPE_CHECKING:
    from staycheck.client.client import PartnerClient, StayCheckClient, tls_credentials

_GRPC = {
    "PartnerClient": "staycheck.client.client",
    "StayCheckClient": "staycheck.client.client",
    "tls_credentials": "staycheck.client.client",
}

__all__ = [
    "PartnerClient",
    "StayCheckClient",
    "atomic_write",
    "load_trust_store",
    "tls_credentials",
]


def __getattr__(name: str) -> Any:
    module = _GRPC.get(name)
    if module is None:
        raise AttributeError(f"module 'staycheck.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""Server configuration: one dataclass with documented defaults and units.

Built by the entry point (``staycheck serve``) from flags and passed in; library code reads
no environment variables.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field

from client.verdict import MAX_TTL_S
from geo.errors import ConfigurationError
from geo.itinerary import ItineraryLimits
from geo.trust import DEFAULT_MAX_BUNDLE_SIZE

_ISSUER = re.compile(r"[1-8]\d0000")


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    """HOST:PORT of the public listener; port 0 picks a free port."""
    bundle_path: pathlib.Path
    """The signed risk-area bundle file (watched for changes)."""
    authority_key_path: pathlib.Path
    """PEM public key of the health authority that signs bundles."""
    state_dir: pathlib.Path
    """Verdict keys and the bundle version floor live here (mode 0700)."""
    issuer: str
    """Province code of this issuer, e.g. ``110000`` (Beijing)."""
    verdict_ttl_s: int = MAX_TTL_S
    """Verdict lifetime, seconds (at most 24 h; never past the bundle's expiry)."""
    max_message_bytes: int = 256 * 1024
    """Largest request accepted, bytes; larger ones get RESOURCE_EXHAUSTED."""
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_SIZE
    """Largest bundle file accepted, bytes; checked before it is read."""
    max_workers: int = 16
    """Threads handling calls."""
    max_concurrent_rpcs: int = 1000
    """Calls in progress beyond this are refused with RESOURCE_EXHAUSTED."""
    reload_interval_s: float = 1.0
    """How often the bundle file is checked for changes, seconds."""
    grace_s: float = 10.0
    """On SIGTERM, how long in-flight calls may take to finish, seconds."""
    limits: ItineraryLimits = field(default_factory=ItineraryLimits)

    def check(self) -> None:
        if not _ISSUER.fullmatch(self.issuer):
            raise ConfigurationError("issuer: must be a six-digit province code such as 110000")
        if not 0 < self.verdict_ttl_s <= MAX_TTL_S:
            raise ConfigurationError("verdict_ttl_s: must be within 1 s and 24 h")
        if ":" not in self.listen:
            raise ConfigurationError("listen: must be HOST:PORT")

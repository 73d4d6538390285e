"""Server configuration: one dataclass with documented defaults and units.

Built by the entry point (``staycheck serve``) from flags and passed in; library code reads
no environment variables.
"""

from __future__ import annotations

import ipaddress
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
    tls_cert_path: pathlib.Path | None = None
    """PEM certificate chain of the server; with ``tls_key_path`` the public listener uses TLS."""
    tls_key_path: pathlib.Path | None = None
    """PEM private key of the server certificate."""
    insecure: bool = False
    """Allow plaintext on a non-loopback address (never needed on 127.0.0.1 / ::1)."""
    partner_listen: str | None = None
    """HOST:PORT of the mutual-TLS partner listener; off when None."""
    partner_ca_path: pathlib.Path | None = None
    """PEM CA certificate(s) that sign partner client certificates."""
    partners_path: pathlib.Path | None = None
    """TOML file of partners (``server.partners``)."""
    trust_store_path: pathlib.Path | None = None
    """TOML trust store of other issuers whose verdicts VerifyVerdict accepts."""

    @property
    def tls(self) -> bool:
        return self.tls_cert_path is not None and self.tls_key_path is not None

    def check(self) -> None:
        if not _ISSUER.fullmatch(self.issuer):
            raise ConfigurationError("issuer: must be a six-digit province code such as 110000")
        if not 0 < self.verdict_ttl_s <= MAX_TTL_S:
            raise ConfigurationError("verdict_ttl_s: must be within 1 s and 24 h")
        if ":" not in self.listen:
            raise ConfigurationError("listen: must be HOST:PORT")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ConfigurationError("tls: give both the certificate and the key")
        if not self.tls and not self.insecure and not is_loopback(self.listen):
            raise ConfigurationError(
                "listen: refusing plaintext on a non-loopback address; give a TLS "
                "certificate and key, or --insecure"
            )
        if self.partner_listen is not None:
            if ":" not in self.partner_listen:
                raise ConfigurationError("partner_listen: must be HOST:PORT")
            if not self.tls or self.partner_ca_path is None or self.partners_path is None:
                raise ConfigurationError(
                    "partner_listen: needs the server certificate and key, the partner CA "
                    "and the partners file"
                )


def is_loopback(listen: str) -> bool:
    """True for HOST:PORT on a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

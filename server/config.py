"""Server configuration: one dataclass with documented defaults and units.

Built by the entry point (``staycheck serve``) from, in increasing precedence, a TOML file
(``--config``), environment variables ``STAYCHECK_<KEY>`` and command-line flags, with
:func:`build_config`; library code reads no environment variables. Keys are the
:data:`KEYS` below (``listen``, ``repository``, ``state_dir``, ...), the same names as the flags.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from staycheck.geo.errors import ConfigurationError
from staycheck.geo.itinerary import ItineraryLimits
from staycheck.server.keystore import (
    DEFAULT_PUBLISH_AHEAD_S,
    DEFAULT_REFRESH_INTERVAL_S,
    ROTATION_GRACE_S,
)
from staycheck.server.pkcs11 import Pkcs11Uri
from staycheck.trust.verdict import MAX_TTL_S

_ISSUER = re.compile(r"[1-8]\d0000")


@dataclass(frozen=True)
class ServerConfig:
    listen: str
    """HOST:PORT of the public listener; port 0 picks a free port."""
    state_dir: pathlib.Path
    """Verdict keys and TUF's trusted metadata live here (0700)."""
    issuer: str
    """Province code of this issuer, e.g. ``110000`` (Beijing)."""
    repository: str
    """The TUF repository of risk areas (ADR 11): an http(s) URL or a local folder."""
    trusted_root_path: pathlib.Path
    """The repository's ``root.json`` to start from (in the image, or a Secret); read on the
    first start only: afterwards TUF's metadata in the state dir is what is trusted."""
    repository_refresh_s: float = 60.0
    """How often the repository is refreshed, seconds."""
    repository_timeout_s: float = 30.0
    """How long one refresh may take before it is given up, seconds (a hung repository
    must not stop key rotations or health); the last good set keeps serving meanwhile."""
    verdict_key: str | None = field(default=None, repr=False)
    """An RFC 7512 PKCS#11 URI of the verdict key on a token (``pkcs11:token=...;object=...
    ?module-path=...&pin-source=file:...``); None: key files in ``state_dir``. On first start
    the state dir records this key and holds no private key; later it must be a recorded
    key. Its PIN serves every recorded key on that token. Never shown with ``pin-value``."""
    verdict_ttl_s: int = MAX_TTL_S
    """Verdict lifetime, seconds (at most 24 h; never past the risk areas' expiry)."""
    key_refresh_interval_s: int = DEFAULT_REFRESH_INTERVAL_S
    """How often verifiers should fetch the key set again, seconds: published in it as
    ``refresh_interval_s``. Must be shorter than ``key_publish_ahead_s``."""
    key_publish_ahead_s: int = DEFAULT_PUBLISH_AHEAD_S
    """How long a new verdict key is published before it signs, seconds: the pending key
    made on first start is scheduled no earlier than this (``keys rotate --publish-ahead``
    sets it for each rotation; give both the same value)."""
    max_message_bytes: int = 256 * 1024
    """Largest request accepted, bytes; larger ones get RESOURCE_EXHAUSTED."""
    partner_max_message_bytes: int = 4 * 1024 * 1024
    """Largest stream message on the partner listener (one carries many items), bytes."""
    partner_max_items_per_message: int = 1000
    """Most items one partner stream message may carry; a larger one is refused before any
    work. Its answer (a verdict is about 400 bytes) then always fits in a reply."""
    max_workers: int = 16
    """Threads handling calls."""
    max_concurrent_rpcs: int = 1000
    """Calls in progress beyond this are refused with RESOURCE_EXHAUSTED."""
    reload_interval_s: float = 1.0
    """How often the watcher wakes to see whether a refresh is due, picks up key rotations
    and updates health, seconds."""
    grace_s: float = 10.0
    """On SIGTERM, how long in-flight calls may take to finish, seconds."""
    drain_s: float = 1.0
    """On SIGTERM, how long to keep serving after health turns NOT_SERVING, seconds, so that
    load balancers and readiness probes stop sending first (Kubernetes: a probe period).
    Never 0 in production: gRPC's shutdown cancels the calls that were received but not yet
    handed to a thread, so without a drain, calls sent just before the signal come back
    CANCELLED (tests/integration/test_sigterm_under_load.py)."""
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
    """TOML file of partners (``staycheck.server.partner_access``)."""
    trust_store_path: pathlib.Path | None = None
    """TOML trust store of other issuers whose verdicts VerifyVerdict accepts."""
    ohttp_listen: str | None = None
    """HOST:PORT of the Oblivious HTTP gateway (RFC 9458, docs/deploy.md); off when None.
    Its keys live in ``ohttp/`` of the state dir (``staycheck keys rotate-gateway``)."""
    metrics_listen: str | None = None
    """HOST:PORT of the Prometheus endpoint; off when None."""
    access_log: bool = False
    """One log line per call (method, code, duration, random request id; never a body)."""
    scrub_freed_memory: bool = False
    """Overwrite memory as it is freed (glibc's ``malloc.perturb`` with its per-thread cache
    off, and Python's allocator on malloc), so freed request buffers keep no itinerary
    bytes. Set at process start: ``staycheck serve`` re-executes itself with the
    environment it needs (``staycheck.server.process.scrub_environment``). Costs CPU per
    call (``make bench``)."""
    log_level: str = "info"
    """debug, info, warning or error."""
    log_format: str = "auto"
    """json, text, or auto (text on a terminal, JSON otherwise)."""
    workers: int = 1
    """Processes sharing the port (SO_REUSEPORT), each with its own index; 0: one per core.
    The default is one: on Kubernetes, scale pods, not processes (docs/deploy.md); on a VM,
    give 0."""

    @property
    def tls(self) -> bool:
        return self.tls_cert_path is not None and self.tls_key_path is not None

    def check(self) -> None:
        if not self.repository:
            raise ConfigurationError("repository: give the TUF repository's URL or folder")
        if not 1 <= self.repository_refresh_s <= 3600:
            raise ConfigurationError("repository_refresh_s: must be within 1 s and 1 h")
        if not _ISSUER.fullmatch(self.issuer):
            raise ConfigurationError("issuer: must be a six-digit province code such as 110000")
        if self.verdict_key is not None:
            try:
                Pkcs11Uri.parse(self.verdict_key)
            except ConfigurationError as e:
                raise ConfigurationError(f"verdict_key: {e}") from None
        if not 0 < self.verdict_ttl_s <= MAX_TTL_S:
            raise ConfigurationError("verdict_ttl_s: must be within 1 s and 24 h")
        if self.key_refresh_interval_s <= 0 or self.key_publish_ahead_s <= 0:
            raise ConfigurationError("key_refresh_interval_s, key_publish_ahead_s: must be above 0")
        if self.key_refresh_interval_s >= self.key_publish_ahead_s:
            raise ConfigurationError(
                "key_refresh_interval_s: must be shorter than key_publish_ahead_s (a verifier "
                "refreshing its key set only that often could meet a new key it does not hold)"
            )
        if ":" not in self.listen:
            raise ConfigurationError("listen: must be HOST:PORT")
        if self.ohttp_listen is not None:
            if ":" not in self.ohttp_listen:
                raise ConfigurationError("ohttp_listen: must be HOST:PORT")
            if self.workers != 1 and self.ohttp_listen.endswith(":0"):
                raise ConfigurationError(
                    "ohttp_listen: give a fixed port with --workers (the workers share it)"
                )
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ConfigurationError("tls: give both the certificate and the key")
        if not self.tls and not self.insecure and not is_loopback(self.listen):
            raise ConfigurationError(
                "listen: refusing plaintext on a non-loopback address; give a TLS "
                "certificate and key, or --insecure"
            )
        if not 0 < self.reload_interval_s < ROTATION_GRACE_S:
            raise ConfigurationError(
                f"reload_interval_s: must be above 0 and below {ROTATION_GRACE_S} s (the time "
                "an old verdict key may still sign after a rotation)"
            )
        if not 1 <= self.partner_max_items_per_message <= 8000:
            # 8000 answers of at most ~500 bytes stay under the 4 MiB send limit.
            raise ConfigurationError("partner_max_items_per_message: must be within 1-8000")
        if not 0 < self.repository_timeout_s <= 300:
            raise ConfigurationError("repository_timeout_s: must be above 0 and at most 300 s")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigurationError("log_level: debug, info, warning or error")
        if self.log_format not in ("json", "text", "auto"):
            raise ConfigurationError("log_format: json, text or auto")
        if not 0 <= self.workers <= 64:
            raise ConfigurationError("workers: must be within 0-64 (0: one per core)")
        if self.max_workers < 1 or self.max_concurrent_rpcs < 1 or self.max_message_bytes < 1024:
            raise ConfigurationError("max_workers, max_concurrent_rpcs, max_message_bytes: too low")
        if self.partner_listen is not None:
            if ":" not in self.partner_listen:
                raise ConfigurationError("partner_listen: must be HOST:PORT")
            if not self.tls or self.partner_ca_path is None or self.partners_path is None:
                raise ConfigurationError(
                    "partner_listen: needs the server certificate and key, the partner CA "
                    "and the partners file"
                )


def read_file(path: pathlib.Path, what: str) -> bytes:
    """The bytes of a file the configuration names (a key, a certificate); a
    :class:`ConfigurationError` naming ``what`` if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"{what}: cannot read {path} ({e.strerror})") from e


def is_loopback(listen: str) -> bool:
    """True for HOST:PORT on a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# key -> (ServerConfig field, type); the same names as the command-line flags.
KEYS: dict[str, tuple[str, type]] = {
    "listen": ("listen", str),
    "repository": ("repository", str),
    "trusted_root": ("trusted_root_path", pathlib.Path),
    "repository_refresh_s": ("repository_refresh_s", float),
    "repository_timeout_s": ("repository_timeout_s", float),
    "state_dir": ("state_dir", pathlib.Path),
    "issuer": ("issuer", str),
    "verdict_key": ("verdict_key", str),
    "tls_cert": ("tls_cert_path", pathlib.Path),
    "tls_key": ("tls_key_path", pathlib.Path),
    "insecure": ("insecure", bool),
    "partner_listen": ("partner_listen", str),
    "partner_ca": ("partner_ca_path", pathlib.Path),
    "partners": ("partners_path", pathlib.Path),
    "trust_store": ("trust_store_path", pathlib.Path),
    "metrics_listen": ("metrics_listen", str),
    "ohttp_listen": ("ohttp_listen", str),
    "access_log": ("access_log", bool),
    "scrub_freed_memory": ("scrub_freed_memory", bool),
    "log_level": ("log_level", str),
    "log_format": ("log_format", str),
    "workers": ("workers", int),
    "verdict_ttl_s": ("verdict_ttl_s", int),
    "key_refresh_interval_s": ("key_refresh_interval_s", int),
    "key_publish_ahead_s": ("key_publish_ahead_s", int),
    "max_message_bytes": ("max_message_bytes", int),
    "partner_max_message_bytes": ("partner_max_message_bytes", int),
    "partner_max_items_per_message": ("partner_max_items_per_message", int),
    "max_workers": ("max_workers", int),
    "max_concurrent_rpcs": ("max_concurrent_rpcs", int),
    "reload_interval_s": ("reload_interval_s", float),
    "grace_s": ("grace_s", float),
    "drain_s": ("drain_s", float),
    "max_stays": ("limits.max_stays", int),
    "max_future_s": ("limits.max_future_s", int),
}
REQUIRED = ("listen", "repository", "trusted_root", "state_dir", "issuer")
ENV_PREFIX = "STAYCHECK_"


def _coerce(key: str, kind: type, value: Any, *, source: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
            return False
    elif kind in (int, float):
        if isinstance(value, bool):
            pass
        elif isinstance(value, int | float) and (kind is float or isinstance(value, int)):
            return kind(value)
        elif isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
    elif isinstance(value, str) and value:
        return kind(value)
    raise ConfigurationError(f"{source} {key}: must be {kind.__name__}")


def build_config(
    *,
    file: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """The effective configuration: defaults < file < environment < flags. ``flags`` values
    of None mean "not given"."""
    values: dict[str, Any] = {}
    for key, value in (file or {}).items():
        if key not in KEYS:
            raise ConfigurationError(f"config file: unknown key {key!r}")
        values[key] = _coerce(key, KEYS[key][1], value, source="config file")
    for name, value in (env or {}).items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in KEYS:
            raise ConfigurationError(f"environment: unknown variable {name}")
        values[key] = _coerce(key, KEYS[key][1], value, source="environment")
    for key, value in (flags or {}).items():
        if value is not None and value is not False:
            values[key] = _coerce(key, KEYS[key][1], value, source="flag")
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ConfigurationError("missing required setting(s): " + ", ".join(missing))
    top: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for key, value in values.items():
        field_name = KEYS[key][0]
        if field_name.startswith("limits."):
            limits[field_name.removeprefix("limits.")] = value
        else:
            top[field_name] = value
    config = ServerConfig(**top, limits=ItineraryLimits(**limits))
    config.check()
    return config


def effective(config: ServerConfig) -> dict[str, Any]:
    """The configuration as key -> value, for ``staycheck config check``."""
    out: dict[str, Any] = {}
    for key, (field_name, _) in KEYS.items():
        obj: Any = config
        for part in field_name.split("."):
            obj = getattr(obj, part)
        out[key] = str(obj) if isinstance(obj, pathlib.Path) else obj
    if config.verdict_key is not None:  # never with its pin-value
        out["verdict_key"] = str(Pkcs11Uri.parse(config.verdict_key))
    return out

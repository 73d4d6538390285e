"""Loading and reloading the risk-area bundle file under the trust rules.

:class:`BundleManager` reads the bundle file (refusing one over the size limit before
reading it), hands the bytes to ``staycheck.trust.bundles.TrustedBundleSet`` and, when a bundle is
accepted, records its version and digest in the state dir (``bundle-floor.json``) so that a
restart cannot be rolled back. A refused bundle is logged with its reason and changes
nothing: the last good bundle keeps serving.

Publishing a bundle: write it to a temporary file in the same folder and rename it over the
old one (``staycheck authority sign`` does this). A half-written file fails its signature
check and is refused; the manager tries again at the next change.

Reading never blocks the caller for long: the file is opened without blocking and must be
a regular file (a FIFO or a device put at the path is refused at once), and the open, stat
and read run on a reader thread of their own that the caller waits for at most
``read_timeout_s``. A read that hangs (a stuck network mount) is given up, and while it is
still stuck no other read starts; the watcher, health and expiry go on meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pathlib
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from staycheck.client.files import atomic_write
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.errors import ConfigurationError, Error, UnavailableError
from staycheck.trust.bundles import TrustedBundleSet, VersionFloor
from staycheck.trust.keys import AuthorityKeySet

log = logging.getLogger("staycheck.bundle")
FLOOR_FILE = "bundle-floor.json"
T = TypeVar("T")


class ReadNotFinishedError(UnavailableError):
    """A read of the bundle file was given up, or an earlier one is still stuck."""


@dataclass(frozen=True)
class ReloadResult:
    accepted: bool
    reason: str
    version: int | None = None


class BundleSource(Protocol):
    """Where the risk areas in use come from: a bundle file (:class:`BundleManager`) or the
    TUF repository (``staycheck.server.repo_bundles.RepositoryBundles``)."""

    @property
    def current(self) -> RiskAreaBundle | None: ...

    def bundle_for(self, now: int) -> RiskAreaBundle: ...

    def serving(self, now: int) -> bool: ...

    def changed(self) -> bool: ...

    def reload(self) -> ReloadResult: ...


class BundleManager:
    """Holds the bundle in use and replaces it when a valid newer file appears."""

    def __init__(
        self,
        path: pathlib.Path,
        keys: AuthorityKeySet,
        *,
        state_dir: pathlib.Path,
        clock: Callable[[], int],
        max_size: int,
        read_timeout_s: float = 5.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._path = path
        self._read_timeout_s = read_timeout_s
        # One reader thread; at most one file operation in flight (see _bounded).
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bundle-reader")
        self._pending: concurrent.futures.Future[object] | None = None
        self._state_dir = state_dir
        self._clock = clock
        self._max_size = max_size
        self._on_change = on_change
        self._lock = threading.Lock()
        self._trusted = TrustedBundleSet(keys, floor=self._read_floor(), max_size=max_size)
        self._last_stat: tuple[int, int, int] | None = None

    @property
    def floor_path(self) -> pathlib.Path:
        return self._state_dir / FLOOR_FILE

    def _read_floor(self) -> VersionFloor:
        try:
            obj = json.loads(self.floor_path.read_bytes())
        except FileNotFoundError:
            return VersionFloor()
        except (OSError, ValueError) as e:
            raise ConfigurationError(f"{self.floor_path}: unreadable") from e
        version, digest = obj.get("version"), obj.get("digest")
        signed_by = obj.get("signed_by", "")
        if type(version) is not int or not isinstance(digest, str):
            raise ConfigurationError(f"{self.floor_path}: version and digest required")
        if not isinstance(signed_by, str):
            raise ConfigurationError(f"{self.floor_path}: signed_by must be text")
        return VersionFloor(version, digest, signed_by)

    @property
    def current(self) -> RiskAreaBundle | None:
        return self._trusted.current

    def bundle_for(self, now: int) -> RiskAreaBundle:
        """The bundle to match against at ``now``, or :class:`UnavailableError` (fail closed)."""
        bundle = self._trusted.current
        if bundle is None:
            raise UnavailableError("no valid risk-area bundle is loaded")
        if bundle.expires_at <= now:
            raise UnavailableError("the risk-area bundle has expired; waiting for a fresh one")
        return bundle

    def serving(self, now: int) -> bool:
        bundle = self._trusted.current
        return bundle is not None and bundle.expires_at > now

    def _bounded(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` (file I/O) on the reader thread; wait ``read_timeout_s`` at most.
        While an earlier operation is still stuck, refuse at once instead of queueing."""
        if self._pending is not None and not self._pending.done():
            raise ReadNotFinishedError("an earlier read of the bundle file has not finished")
        future = self._reader.submit(operation)
        self._pending = future  # type: ignore[assignment]
        try:
            return future.result(timeout=self._read_timeout_s)
        except concurrent.futures.TimeoutError:
            raise ReadNotFinishedError(
                f"reading the bundle file did not finish within {self._read_timeout_s:g} s"
            ) from None

    def _stat_now(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            return self._bounded(self._stat_now)
        except UnavailableError:
            return None

    def reload(self) -> ReloadResult:
        """Read the file and try to accept it; never raises for a bad file."""
        with self._lock:
            self._last_stat = self._stat()
            try:
                data = self._read()
                bundle = self._trusted.check(data, now=self._clock())
                # The floor is on disk before the bundle is used: if it cannot be written,
                # the bundle is refused (a restart must never roll back past it).
                self._write_floor(bundle)
            except (Error, OSError) as e:
                if isinstance(e, ReadNotFinishedError):
                    self._last_stat = None  # a read given up: try again at the next tick
                current = self._trusted.current
                reason = str(e) if isinstance(e, Error) else "cannot write the version floor"
                log.warning(
                    "bundle refused: %s; still serving version %s",
                    reason,
                    current.version if current else "none",
                )
                return ReloadResult(False, reason)
            self._trusted.accept(bundle)
            log.info("bundle accepted: version %d, %d areas", bundle.version, bundle.area_count)
        self._on_change()
        return ReloadResult(True, "accepted", bundle.version)

    def _write_floor(self, bundle: RiskAreaBundle) -> None:
        floor = {"version": bundle.version, "digest": bundle.digest, "signed_by": bundle.signed_by}
        atomic_write(self.floor_path, json.dumps(floor).encode(), mode=0o600)

    def _read(self) -> bytes:
        return self._bounded(self._read_now)

    def _read_now(self) -> bytes:
        try:
            # O_NONBLOCK: opening a FIFO (or a device) put at the path returns at once.
            fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise UnavailableError(f"cannot read bundle file ({e.strerror})") from e
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnavailableError("bundle path is not a regular file")
            if st.st_size > self._max_size:
                raise UnavailableError(f"bundle file is larger than {self._max_size} bytes")
            try:
                return f.read(self._max_size + 1)
            except OSError as e:
                raise UnavailableError(f"cannot read bundle file ({e.strerror})") from e

    def changed(self) -> bool:
        """True if the file looks different from when it was last read."""
        return self._stat() != self._last_stat

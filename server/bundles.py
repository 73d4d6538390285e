"""The risk areas in use, followed from the TUF repository (``serve --repository``).

:class:`RepositoryBundles` is what the server asks for its areas (``current``,
``bundle_for``, ``serving``, ``changed``, ``reload``): every
``refresh_interval_s`` the watcher asks :meth:`changed`, and :meth:`reload` runs one
``staycheck.server.follower.RepositoryFollower.refresh`` and the index build on a thread of
its own, at a lower priority than the threads that answer calls, waited for at most
``refresh_timeout_s`` (a hung repository never holds the watcher, health or
expiry). A refresh that fails any check, of TUF's or ours, is logged with its reason and
changes nothing: the last good set keeps serving until its metadata expires, then the
server fails closed (``bundle_for`` raises ``UnavailableError``: FAILED_PRECONDITION, health
NOT_SERVING).

Rollback across restarts is TUF's: the trusted metadata lives in the state dir.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.errors import UnavailableError
from staycheck.server.follower import Refreshed, RepositoryFollower

log = logging.getLogger("staycheck.bundle")
T = TypeVar("T")


BACKGROUND_NICE = 10
"""How much nicer than the server's other threads the refresh thread runs (Linux keeps a
nice value per thread): on a busy core, the scheduler gives the calls' threads the CPU
first while the refresh and the index build run in C with the GIL released."""


REFRESH_SWITCH_INTERVAL_S = 0.0005
"""The interpreter's switch interval while a refresh runs (5 ms otherwise): a thread
waiting for the GIL gets it after at most this long, so the refresh's pure-Python stretches
(TUF's JSON, reading the areas) hold a call up for half a millisecond at a time, not five.
Measured (docs/performance.md, figure 5): with both, the p99 of calls during a 100 000-area
refresh on a saturated core stays within 0.85-1.33x of the quiet p99, and the refresh takes
5-10 s instead of 0.5 s (the timeout bounds the download, not the index build)."""


def lower_thread_priority() -> None:
    """Make the calling thread :data:`BACKGROUND_NICE` nicer, where the system allows."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the same priority then
        pass


class ReadNotFinishedError(UnavailableError):
    """A refresh was given up after ``refresh_timeout_s``, or an earlier one is still stuck."""


@dataclass(frozen=True)
class ReloadResult:
    """What one refresh did: ``accepted`` (a new set, or the same one still valid), and why."""

    accepted: bool
    reason: str
    version: int | None = None


@dataclass
class RefreshStats:
    """What metrics show: refresh outcomes by reason, the versions of the set in use, and
    when this server last refreshed successfully and first trusted the timestamp in use."""

    outcomes: dict[str, int] = field(default_factory=dict)
    last: Refreshed | None = None
    last_success: int | None = None
    """When a refresh last succeeded (accepted or unchanged), seconds since the epoch."""
    timestamp_since: int | None = None
    """When this server first trusted the timestamp version in use: a repository that is
    frozen or withheld shows as a growing age long before the timestamp expires."""

    def count(self, reason: str) -> None:
        self.outcomes[reason] = self.outcomes.get(reason, 0) + 1

    def succeeded(self, refreshed: Refreshed, *, now: int) -> None:
        previous = self.last
        if previous is None or previous.timestamp_version != refreshed.timestamp_version:
            self.timestamp_since = now
        self.last = refreshed
        self.last_success = now


class RepositoryBundles:
    def __init__(
        self,
        follower: RepositoryFollower,
        *,
        clock: Callable[[], int],
        refresh_interval_s: float = 60.0,
        refresh_timeout_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._follower = follower
        self._clock = clock
        self._interval = refresh_interval_s
        self._timeout = refresh_timeout_s
        self._monotonic = monotonic
        self._on_change = on_change
        self._worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="tuf-refresh", initializer=lower_thread_priority
        )
        self._pending: concurrent.futures.Future[Refreshed] | None = None
        self._lock = threading.Lock()
        self._current: RiskAreaBundle | None = None
        self._last_attempt: float | None = None
        self.stats = RefreshStats()

    @property
    def current(self) -> RiskAreaBundle | None:
        return self._current

    def bundle_for(self, now: int) -> RiskAreaBundle:
        bundle = self._current
        if bundle is None:
            raise UnavailableError("no valid risk-area set from the repository yet")
        if bundle.expires_at <= now:
            raise UnavailableError("the repository's metadata has expired; waiting for fresh")
        return bundle

    def serving(self, now: int) -> bool:
        bundle = self._current
        return bundle is not None and bundle.expires_at > now

    def changed(self) -> bool:
        """True when a refresh is due (the interval passed since the last attempt)."""
        last = self._last_attempt
        return last is None or self._monotonic() - last >= self._interval

    def reload(self) -> ReloadResult:
        """One refresh; never raises for anything the repository or the network does."""
        with self._lock:
            self._last_attempt = self._monotonic()
            try:
                refreshed, bundle = self._bounded()
            except Exception as e:
                reason = type(e).__name__
                self.stats.count(reason)
                current = self._current
                log.warning(
                    "repository refresh refused: %s: %s; still serving version %s",
                    reason,
                    e,
                    current.version if current else "none",
                )
                return ReloadResult(False, f"{reason}: {e}")
            current = self._current
            if (
                current is not None
                and bundle.version == current.version
                and bundle.expires_at == current.expires_at
            ):
                self.stats.count("unchanged")
                self.stats.succeeded(refreshed, now=self._clock())
                return ReloadResult(True, "unchanged", bundle.version)
            if bundle.version < (self._current.version if self._current else 0):
                # TUF refuses a rollback; this is a second lock on the same door.
                self.stats.count("rollback")
                return ReloadResult(False, "rollback", bundle.version)
            self._current = bundle
            self.stats.succeeded(refreshed, now=self._clock())
            self.stats.count("accepted")
            log.info(
                "risk areas accepted: snapshot version %d, %d areas from %s",
                bundle.version,
                bundle.area_count,
                ", ".join(refreshed.departments) or "no department",
            )
        self._on_change()
        return ReloadResult(True, "accepted", bundle.version)

    def _bundle(self, refreshed: Refreshed) -> RiskAreaBundle:
        """The bundle for ``refreshed``; when only the metadata moved on (same content), the
        index in use is kept and only version and expiry change."""
        current, msg = self._current, refreshed.bundle
        if current is not None and current.digest == refreshed.content:
            return dataclasses.replace(
                current,
                version=msg.version,
                issued_at=msg.issued_at.seconds,
                expires_at=msg.expires_at.seconds,
            )
        return RiskAreaBundle.from_proto(msg, digest=refreshed.content)

    def _bounded(self) -> tuple[Refreshed, RiskAreaBundle]:
        """The refresh, waited for at most ``refresh_timeout_s`` (the network can hang), then
        the index build, waited for to the end (CPU work on checked content): both on the
        worker thread, at a lower priority than the threads that answer calls."""
        if self._pending is not None and not self._pending.done():
            raise ReadNotFinishedError("an earlier repository refresh has not finished")
        future = self._worker.submit(_quietly, self._follower.refresh, now=self._clock())
        self._pending = future
        try:
            refreshed = future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            raise ReadNotFinishedError(
                f"the repository refresh did not finish within {self._timeout:g} s"
            ) from None
        self._pending = None
        return refreshed, self._worker.submit(_quietly, self._bundle, refreshed).result()


_switch_lock = threading.Lock()
_switch_holders = 0
_switch_saved = 0.005


def _quietly(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``work(*args, **kwargs)`` with the switch interval at
    :data:`REFRESH_SWITCH_INTERVAL_S` (process-wide: the first of overlapping callers, say
    two servers in one process, saves the interval in use and the last puts it back)."""
    global _switch_holders, _switch_saved
    with _switch_lock:
        if _switch_holders == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(REFRESH_SWITCH_INTERVAL_S)
        _switch_holders += 1
    try:
        return work(*args, **kwargs)
    finally:
        with _switch_lock:
            _switch_holders -= 1
            if _switch_holders == 0:
                sys.setswitchinterval(_switch_saved)

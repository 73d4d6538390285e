"""Partner provinces on the mutual-TLS listener: who they are, what they may call, how much.

The partners file (TOML)::

    [[partner]]
    id = "tianjin"
    province = "120000"
    identity = "tianjin.partner.staycheck.test"   # a DNS name in the client cert's SAN
                                                   # (DNS names only, not URI or IP)
    methods = ["VerifyVerdict", "VerifyVerdicts", "SubmitItineraries"]
    requests_per_second = 200                      # sustained budget
    burst = 400                                    # bucket size (default: one second's worth)
    max_streams = 2                                # open streams at once (default 2)
    ca = "tianjin-ca.pem"                          # the CA that issues its certificates;
                                                   # relative to this file; required when
                                                   # --partner-ca holds several CAs

The TLS layer has already refused callers without a certificate from the partner CA (the
handshake fails, no handler runs). :class:`PartnerAuthInterceptor` then maps the
certificate's subject alternative names to a partner: a certificate that names no partner,
one not issued by that partner's own CA (another partner's CA cannot issue certificates in
its name), or a method the partner lacks, gets PERMISSION_DENIED; a partner with
``max_streams`` streams open gets RESOURCE_EXHAUSTED for one more (one partner cannot hold
every stream slot of the listener); a unary call over budget gets
RESOURCE_EXHAUSTED; stream messages are paced to the budget by their number of items (the
stream slows down; it fails with RESOURCE_EXHAUSTED only if a message waits longer than
``max_wait_s``).

Before any work on it, a stream message is refused (RESOURCE_EXHAUSTED, the stream ends,
the limit named) when it holds more items than ``max_items`` (so that its answer always
fits in a reply) or than the partner's burst: a budget is never borrowed, so one large
message cannot lock a partner out for longer than its own burst takes to refill.

Each partner has one budget per ``staycheck serve``: with ``--workers N`` the supervisor
makes :class:`SharedBuckets` before it forks, and every worker's buckets keep their state
there, so the workers together give a partner exactly its ``requests_per_second`` and
``burst``. Across several hosts or pods a budget is still per host: a fleet meters partners
at its edge (``deploy/envoy/envoy-partners.yaml``, Envoy's global rate limit).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import mmap
import os
import pathlib
import struct
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from staycheck.geo.errors import ConfigurationError
from staycheck.server.interceptors import HandlerRewriter

PARTNER_SERVICE = "staycheck.v1.PartnerVerification"
PARTNER_METHODS = frozenset({"VerifyVerdict", "VerifyVerdicts", "SubmitItineraries"})


def _items(request: Any) -> int:
    """What a stream message costs in the budget: its number of items (at least 1)."""
    for name in ("items", "verdicts"):
        items = getattr(request, name, None)
        if items is not None:
            return max(1, len(items))
    return 1


@dataclass(frozen=True)
class Partner:
    id: str
    province: str
    identity: str
    methods: frozenset[str]
    requests_per_second: float
    burst: float
    max_streams: int = 2
    ca: x509.Certificate | None = None
    """The CA whose certificates may speak for this partner (None: the only partner CA)."""


def refilled(tokens: float, last: float, now: float, *, rate: float, burst: float) -> float:
    """The tokens of a bucket at ``now`` that held ``tokens`` when last refilled at ``last``:
    ``rate`` a second added, never more than ``burst`` kept. The one refill rule, wherever
    a bucket keeps its state."""
    return min(burst, tokens + (now - last) * rate)


@dataclass
class BucketState:
    tokens: float
    last: float
    """When ``tokens`` was last refilled, in seconds of the bucket's clock."""


class _Slot(Protocol):
    """Where one bucket keeps its :class:`BucketState`: :meth:`hold` locks it, and what the
    holder changes is kept when the ``with`` block ends without an error."""

    def hold(self) -> contextlib.AbstractContextManager[BucketState]: ...


class _LocalSlot:
    """A bucket's state in this process (threads share it)."""

    def __init__(self, state: BucketState) -> None:
        self._state = state
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[BucketState]:
        with self._lock:
            yield self._state


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; thread-safe. The state lives in
    this process unless ``slot`` (from :meth:`SharedBuckets.bucket`) keeps it elsewhere."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float],
        slot: _Slot | None = None,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._slot = slot if slot is not None else _LocalSlot(BucketState(burst, clock()))

    def _refill(self, state: BucketState) -> float:
        # The clock is read under the lock, so refills of one bucket never go back in time.
        now = self._clock()
        tokens = refilled(state.tokens, state.last, now, rate=self._rate, burst=self._burst)
        state.last = now
        return tokens

    @property
    def burst(self) -> float:
        return self._burst

    def take(self, n: float = 1) -> bool:
        """Take ``n`` tokens if they are there. Nothing is borrowed: more than the burst is
        never there, so ``n`` above the burst is always refused."""
        with self._slot.hold() as state:
            tokens = self._refill(state)
            taken = tokens >= n
            state.tokens = tokens - n if taken else tokens
            return taken

    def wait_time(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens will be there (0 if they are; infinite above the
        burst)."""
        if n > self._burst:
            return float("inf")
        with self._slot.hold() as state:
            state.tokens = self._refill(state)
            return max(0.0, (n - state.tokens) / self._rate)


_SHARED_STATE = struct.Struct("=dd")  # tokens, last refill (time.monotonic() seconds)


class SharedBuckets:
    """One token bucket per partner, whose state every process forked after this is made
    shares: ``staycheck serve --workers N`` makes it in the supervisor, before forking, so
    N workers together spend each partner's budget once.

    The states live in an anonymous memory file (``memfd``) mapped shared; each is guarded
    by a record lock (``fcntl``) on its bytes, which the kernel drops if its holder dies
    (a killed worker cannot leave a bucket locked), taken behind one thread lock per
    process (record locks belong to processes, not threads). Every process paces the
    buckets with ``time.monotonic()``: on Linux one clock for the whole host. The
    supervisor never takes the buckets; Linux only (``memfd_create``).
    """

    def __init__(self, partners: Mapping[str, Partner]) -> None:
        self.partners = dict(partners)
        """The partners these buckets are for (the workers serve these, not a later file)."""
        self._offsets = {
            identity: i * _SHARED_STATE.size for i, identity in enumerate(self.partners)
        }
        size = max(1, len(self.partners)) * _SHARED_STATE.size
        self._fd = os.memfd_create("staycheck-partner-budgets", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._memory = mmap.mmap(self._fd, size)  # MAP_SHARED: forked processes see writes
        now = time.monotonic()
        for identity, offset in self._offsets.items():
            _SHARED_STATE.pack_into(self._memory, offset, self.partners[identity].burst, now)
        self._thread_lock = threading.Lock()

    def bucket(self, identity: str) -> TokenBucket:
        """This process's handle on ``identity``'s bucket."""
        partner = self.partners[identity]
        slot = _SharedSlot(self._memory, self._fd, self._offsets[identity], self._thread_lock)
        return TokenBucket(
            partner.requests_per_second, partner.burst, clock=time.monotonic, slot=slot
        )


class _SharedSlot:
    def __init__(
        self, memory: mmap.mmap, fd: int, offset: int, thread_lock: threading.Lock
    ) -> None:
        self._memory = memory
        self._fd = fd
        self._offset = offset
        # One per process for all buckets: a process waiting for a record lock then holds
        # no other, so the kernel never sees (and refuses) a deadlock between processes.
        self._thread_lock = thread_lock

    @contextlib.contextmanager
    def hold(self) -> Iterator[BucketState]:
        size, offset = _SHARED_STATE.size, self._offset
        with self._thread_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, size, offset)
            try:
                state = BucketState(*_SHARED_STATE.unpack_from(self._memory, offset))
                yield state
                _SHARED_STATE.pack_into(self._memory, offset, state.tokens, state.last)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, size, offset)


@functools.lru_cache(maxsize=256)
def _dns_names(pem: bytes) -> tuple[str, ...]:
    """The DNS names among the certificate's subject alternative names. Only DNS names
    identify a partner: gRPC's own SAN list mixes in URI, e-mail and IP names, which a CA
    may issue under looser rules. Cached by certificate (certificates, not requests)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def load_partners(path: pathlib.Path, *, partner_cas: bytes | None = None) -> dict[str, Partner]:
    """Partners by identity. ``partner_cas`` (PEM, the listener's trusted CAs): an entry's
    ``ca`` must be one of them; with several, every entry must name its own."""
    trusted = x509.load_pem_x509_certificates(partner_cas) if partner_cas else []
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigurationError(f"partners file {path}: unreadable or not TOML") from e
    entries = doc.get("partner", [])
    if not isinstance(entries, list):
        raise ConfigurationError("partners file: [[partner]] must be an array of tables")
    partners: dict[str, Partner] = {}
    for i, entry in enumerate(entries):
        partner = _partner(i, entry, base=path.parent, trusted=trusted)
        if partner.identity in partners:
            raise ConfigurationError(f"partners file: partner[{i}].identity: listed twice")
        partners[partner.identity] = partner
    return partners


def _partner(i: int, entry: Any, *, base: pathlib.Path, trusted: list[x509.Certificate]) -> Partner:
    where = f"partners file: partner[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where}: must be a table")
    for name in ("id", "province", "identity"):
        if not isinstance(entry.get(name), str) or not entry[name]:
            raise ConfigurationError(f"{where}.{name}: required text")
    methods = entry.get("methods", [])
    if not isinstance(methods, list) or not set(methods) <= PARTNER_METHODS:
        raise ConfigurationError(f"{where}.methods: a list of {sorted(PARTNER_METHODS)}")
    rate = entry.get("requests_per_second")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
        raise ConfigurationError(f"{where}.requests_per_second: a positive number")
    burst = entry.get("burst", max(1.0, float(rate)))
    if not isinstance(burst, int | float) or isinstance(burst, bool) or not burst >= 1:
        raise ConfigurationError(f"{where}.burst: a number of at least 1")
    max_streams = entry.get("max_streams", 2)
    if type(max_streams) is not int or not 1 <= max_streams <= 64:
        raise ConfigurationError(f"{where}.max_streams: a whole number within 1-64")
    ca = _partner_ca(where, entry.get("ca"), base=base, trusted=trusted)
    return Partner(
        entry["id"],
        entry["province"],
        entry["identity"],
        frozenset(methods),
        rate,
        burst,
        max_streams,
        ca,
    )


def _partner_ca(
    where: str, name: Any, *, base: pathlib.Path, trusted: list[x509.Certificate]
) -> x509.Certificate | None:
    if name is None:
        if len(trusted) > 1:
            raise ConfigurationError(
                f"{where}.ca: required, the partner CA file holds {len(trusted)} CAs"
            )
        return None
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}.ca: a PEM file of the CA that issues its certificates")
    try:
        ca = x509.load_pem_x509_certificate((base / name).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"{where}.ca: cannot read a PEM certificate from {name}") from e
    if trusted and ca not in trusted:
        raise ConfigurationError(f"{where}.ca: not one of the listener's partner CAs")
    return ca


@functools.lru_cache(maxsize=256)
def _issued_by(pem: bytes, ca: x509.Certificate) -> bool:
    """True if the certificate ``pem`` was issued and signed by ``ca`` (TLS has already
    checked that it chains to a trusted CA; this checks which one)."""
    try:
        x509.load_pem_x509_certificate(pem).verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class PartnerAuthInterceptor(HandlerRewriter):
    """Authorizes partner calls by certificate identity and meters them."""

    def __init__(
        self,
        partners: Mapping[str, Partner],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 5.0,
        max_items: int = 1000,
        shared: SharedBuckets | None = None,
    ) -> None:
        """``shared``: the buckets of all workers (then ``partners`` must be its partners and
        the buckets keep ``time.monotonic``); otherwise each partner gets a bucket in this
        process, paced by ``clock``."""
        super().__init__()
        self._max_items = max_items
        self._partners = dict(partners)
        if shared is not None and shared.partners != self._partners:
            raise ValueError("shared buckets are for other partners")
        self._buckets = {
            identity: shared.bucket(identity)
            if shared is not None
            else TokenBucket(p.requests_per_second, p.burst, clock=clock)
            for identity, p in self._partners.items()
        }
        self._streams = {
            identity: threading.BoundedSemaphore(p.max_streams)
            for identity, p in self._partners.items()
        }
        self._sleep = sleep
        self._max_wait_s = max_wait_s

    def _authorize(self, context: grpc.ServicerContext, method: str) -> str:
        auth: Any = context.auth_context()
        pems: list[bytes] = list(auth.get("x509_pem_cert", []))
        for identity in _dns_names(bytes(pems[0])) if pems else ():
            partner = self._partners.get(identity)
            if partner is None:
                continue
            if partner.ca is not None and not _issued_by(bytes(pems[0]), partner.ca):
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "certificate is not issued by this partner's CA",
                )
            if method not in partner.methods:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"partner may not call {method}")
            return identity
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "certificate names no known partner")
        raise AssertionError("unreachable")  # abort raises

    def _paced(
        self, requests: Iterator[Any], identity: str, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        bucket = self._buckets[identity]
        for request in requests:
            cost = _items(request)
            if cost > self._max_items:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"items: at most {self._max_items} per message; split the batch",
                )
            if cost > bucket.burst:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"items: at most {bucket.burst:g} per message for this partner (its "
                    "burst); split the batch",
                )
            waited = 0.0
            while not bucket.take(cost):
                delay = bucket.wait_time(cost)
                if waited + delay > self._max_wait_s:
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "partner request budget exceeded"
                    )
                self._sleep(delay)
                waited += delay
            yield request

    def rewrite(self, full_method: str, handler: Any) -> Any:
        service, _, method = full_method.lstrip("/").partition("/")
        if service != PARTNER_SERVICE:
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._guard_unary(handler.unary_unary, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._guard_stream(handler.stream_stream, method))
        return handler

    def _guard_unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            identity = self._authorize(context, method)
            if not self._buckets[identity].take():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "partner request budget exceeded")
            return behavior(request, context)

        return unary

    def _guard_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            identity = self._authorize(context, method)
            slots = self._streams[identity]
            if not slots.acquire(blocking=False):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this partner has {self._partners[identity].max_streams} streams open; "
                    "close one first",
                )
            try:
                yield from behavior(self._paced(requests, identity, context), context)
            finally:
                slots.release()

        return stream

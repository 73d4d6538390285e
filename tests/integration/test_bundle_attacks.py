"""Bundle attacks against a running server that the unit table (tests/unit/test_trust.py)
cannot show: what the server does with them, and that it keeps serving the last good
bundle with health SERVING.

- fast-forward: a huge version signed by a stolen authority key locks out the real
  sequence; the recovery is to rotate the authority key (a new key starts its own
  sequence), after which the stolen key's bundles are refused;
- a half-written file (published without write-then-rename) is never loaded;
- an oversized file is refused before it is read;
- a bundle issued in the future is refused;
- a bundle path turned into a FIFO is refused at once and freezes nothing."""

from __future__ import annotations

import contextlib
import os
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from staycheck.server.keystore import VerdictKeyStore
from staycheck.trust.keys import Ed25519Signer

from tests.helpers import DAY, HOUR, NOW, running_server, signed_bundle, spec_bundle

HUGE = 2**64 - 1  # the largest uint64: nothing can ever follow it


def _health(s) -> int:
    with grpc.insecure_channel(s.target) as ch:
        return (
            health_pb2_grpc.HealthStub(ch)
            .Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            .status
        )


def _write_in_place(path, data: bytes) -> None:
    with open(path, "r+b") as f:  # no rename: readers may see it half done
        f.write(data)
        f.truncate()


def test_fast_forward_then_recovery_by_rotating_the_authority_key(tmp_path, clock):
    stolen = Ed25519Signer.generate()
    with running_server(tmp_path, spec_bundle(stolen, version=3), authority=stolen) as s:
        # The thief signs a huge version: validly signed, so it is accepted...
        assert s.publish(signed_bundle(stolen, [], version=HUGE)).accepted
        # ...and locks out the authority's real sequence.
        result = s.publish(spec_bundle(stolen, version=4))
        assert not result.accepted and "lower than" in result.reason
    # Recovery: the authority rotates its key and restarts the servers with the new one;
    # the state dir (with its floor at HUGE) is kept.
    fresh = Ed25519Signer.generate()
    with running_server(tmp_path, spec_bundle(fresh, version=4), authority=fresh) as s:
        assert s.server.bundles.current is not None
        assert s.server.bundles.current.version == 4
        assert _health(s) == health_pb2.HealthCheckResponse.SERVING
        # The stolen key's bundles are now refused outright, even the huge one.
        again = s.publish(signed_bundle(stolen, [], version=HUGE))
        assert not again.accepted and "unknown key" in again.reason
        assert s.server.bundles.current.version == 4


def test_half_written_file_is_never_loaded(tmp_path, authority, clock):
    with running_server(tmp_path, spec_bundle(authority, version=1), authority=authority) as s:
        new = signed_bundle(authority, [], version=2)
        _write_in_place(s.bundle_path, new[: len(new) // 2])
        assert not s.server.reload_now().accepted
        assert s.server.bundles.current.version == 1
        assert _health(s) == health_pb2.HealthCheckResponse.SERVING
        _write_in_place(s.bundle_path, new)  # the writer finishes
        assert s.server.reload_now().accepted
        assert s.server.bundles.current.version == 2


def test_oversized_file_is_refused_before_it_is_read(tmp_path, authority, clock):
    small = spec_bundle(authority, version=1)
    with running_server(
        tmp_path, small, authority=authority, max_bundle_bytes=len(small) + 100
    ) as s:
        big = signed_bundle(
            authority, [], version=2, issued_at=NOW - HOUR, expires_at=NOW + DAY
        ) + b"\x00" * (len(small) + 200)
        result = s.publish(big)
        assert not result.accepted and "larger than" in result.reason
        assert s.server.bundles.current.version == 1


def test_bundle_issued_in_the_future_is_refused(tmp_path, authority, clock):
    with running_server(tmp_path, spec_bundle(authority, version=1), authority=authority) as s:
        future = signed_bundle(
            authority, [], version=2, issued_at=NOW + HOUR, expires_at=NOW + 2 * DAY
        )
        result = s.publish(future)
        assert not result.accepted and "future" in result.reason
        assert s.server.bundles.current.version == 1


def _until(predicate, *, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_bundle_path_turned_into_a_fifo_cannot_freeze_the_watcher(tmp_path, authority, clock):
    """Issue 13, finding 1: the bundle file replaced by a symlink to a FIFO blocked the
    watcher in open() for good: no reload, no key rotation, and health stayed SERVING past
    the bundle's expiry. Now the FIFO is refused at once and everything else goes on."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    root = tmp_path / "srv"
    with running_server(
        root,
        spec_bundle(authority, version=1),
        authority=authority,
        clock=clock,
        reload_interval_s=0.1,
        bundle_read_timeout_s=0.5,
    ) as s:
        try:
            link = root / ".link.tmp"
            link.symlink_to(fifo)
            link.replace(s.bundle_path)
            s.server.request_reload()  # what SIGHUP does
            # A key rotation still reaches the server...
            rotated = VerdictKeyStore(s.state_dir, issuer="110000").rotate(now=clock())
            assert _until(lambda: s.server.keys.pending_kid == rotated.pending_kid), (
                "rotation ignored"
            )
            assert s.server.bundles.current is not None
            assert s.server.bundles.current.version == 1  # the last good bundle serves
            # ...the bundle's expiry still turns health NOT_SERVING...
            clock.advance(3 * DAY)
            assert _until(lambda: _health(s) == health_pb2.HealthCheckResponse.NOT_SERVING)
            # ...and a fresh bundle, published the documented way, is taken.
            fresh = root / ".fresh.tmp"
            fresh.write_bytes(
                spec_bundle(
                    authority, now=clock(), version=2, issued_at=clock() - HOUR,
                    expires_at=clock() + DAY,
                )
            )  # fmt: skip
            fresh.replace(s.bundle_path)
            assert _until(lambda: _health(s) == health_pb2.HealthCheckResponse.SERVING)
            assert s.server.bundles.current.version == 2
        finally:
            # Release a reader that an old build would have left blocked in open().
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

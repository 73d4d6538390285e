"""Attacks on the served repository folder that the follower's table
(test_tuf_repository.py) cannot show: what a running server does with them. It keeps
serving the last good set, and neither its watcher nor its memory is held hostage.

- Issue 13, finding 1: a path in the folder turned into a FIFO (or a hung mount) must not
  freeze the watcher: key rotations, expiry and health go on, and a fresh publication is
  taken.
- Issue 13, finding 4: a huge file in place of a department's areas file, or a department
  signing a huge one, must cost at most 64 MiB above the serving baseline before it is
  refused (TUF downloads at most the signed length, to a temporary file, and we refuse a
  signed length above 64 MiB before downloading anything)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from staycheck.client.repository import MAX_TARGET_BYTES
from staycheck.server.keystore import VerdictKeyStore
from staycheck.trust.riskset import department_path
from tuf.api.metadata import TargetFile

from tests.harness import serve_process
from tests.helpers import risk_areas, running_server, spec_areas

MIB = 1024 * 1024
HUGE = 255 * MIB  # what the outside attack run wrote (the old limit allowed 256 MiB)


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        return (
            health_pb2_grpc.HealthStub(ch)
            .Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            .status
        )


def _until(predicate, *, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_repository_file_turned_into_a_fifo_cannot_freeze_the_watcher(tmp_path, clock):
    """Issue 13, finding 1, under TUF: the served timestamp replaced by a symlink to a FIFO.
    The refresh is refused at once (the fetcher opens without blocking and reads regular
    files only); rotations, expiry and a fresh publication all still reach the server."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with running_server(
        tmp_path / "srv", spec_areas(), clock=clock, reload_interval_s=0.1, repository_timeout_s=2
    ) as s:
        good = s.server.bundles.current.version
        timestamp = s.files.served / "metadata" / "timestamp.json"
        try:
            link = timestamp.with_name(".link.tmp")
            link.symlink_to(fifo)
            link.replace(timestamp)
            started = time.monotonic()
            result = s.server.reload_now()
            assert not result.accepted
            assert time.monotonic() - started < 2  # refused, not waited out
            # A key rotation still reaches the server...
            rotated = VerdictKeyStore(s.state_dir, issuer="110000").rotate(now=clock())
            assert _until(lambda: s.server.keys.pending_kid == rotated.pending_kid)
            assert s.server.bundles.current.version == good  # the last good set serves
            # ...the set's expiry still turns health NOT_SERVING...
            clock.now = s.server.bundles.current.expires_at
            assert _until(lambda: _health(s.target) == health_pb2.HealthCheckResponse.NOT_SERVING)
            # ...and a fresh publication, served the careful way, is taken.
            s.files.publish(risk_areas([]), now=clock())
            s.server.request_reload()  # what SIGHUP does
            assert _until(lambda: _health(s.target) == health_pb2.HealthCheckResponse.SERVING)
            assert s.server.bundles.current.version == s.snapshot_version() > good
        finally:
            # Release a reader that a blocking open() would have left behind.
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def _refused_after_sighup(served, count: int) -> bool:
    served.proc.send_signal(signal.SIGHUP)
    return _until(
        lambda: served.stderr_text().count("repository refresh refused") >= count, timeout=60
    )


def test_a_huge_file_costs_at_most_64_mib_before_it_is_refused(tmp_path):
    """Issue 13, finding 4: the attack run pushed a server from 84 to 1 095 MiB with an
    unsigned 255 MiB bundle file. Now, in a real ``staycheck serve``:

    1. an unsigned 255 MiB file in place of the department's areas file (the metadata
       still signs the real, small one) is read only up to its signed length;
    2. a department that signs a 255 MiB areas file (its key, say, was stolen) is refused
       on the signed length, before a byte is downloaded.

    Each costs at most 64 MiB of peak memory above the serving baseline, and the last good
    set keeps serving."""
    with serve_process(
        tmp_path / "srv", areas=spec_areas(now=int(time.time())),
        extra_args=["--repository-refresh-s", "3600"],
    ) as served:  # fmt: skip
        files = served.files
        assert files is not None
        assert _health(served.target) == health_pb2.HealthCheckResponse.SERVING
        # The baseline: serving, after a first refresh of a new publication.
        files.publish(risk_areas([]))
        served.proc.send_signal(signal.SIGHUP)
        # The start-up refresh logged one acceptance; this publication is the second.
        assert _until(lambda: served.stderr_text().count("risk areas accepted") >= 2, timeout=30)
        baseline = _peak_rss(served.pid)

        # 1. The metadata signs a small file; the folder holds 255 MiB under its name.
        files.publish(spec_areas(now=int(time.time())))
        for target in (files.served / "targets" / "areas").glob("*.health.pb"):
            with target.open("r+b") as f:
                f.truncate(HUGE)
        assert _refused_after_sighup(served, 1)
        assert _peak_rss(served.pid) - baseline <= 64 * MIB

        # 2. The department signs a 255 MiB file: refused on the signed length.
        repo = files.repository
        path = department_path("health")
        big = tmp_path / "big.pb"
        with big.open("wb") as f:
            f.truncate(HUGE)
        info = TargetFile.from_file(path, str(big), ["sha256"])
        assert info.length > MAX_TARGET_BYTES
        repo._md["health"].signed.targets = {path: info}
        repo._md["health"].signed.version += 1
        repo._sign_and_write("health")
        repo.refresh(now=int(time.time()))
        folder = files.served / "targets" / "areas"
        os.link(big, folder / f"{info.hashes['sha256']}.health.pb")
        files.serve()
        served.proc.send_signal(signal.SIGHUP)
        assert _until(lambda: "signed length above" in served.stderr_text(), timeout=60)
        assert _peak_rss(served.pid) - baseline <= 64 * MIB

        # The last good set (no areas) still serves.
        assert _health(served.target) == health_pb2.HealthCheckResponse.SERVING

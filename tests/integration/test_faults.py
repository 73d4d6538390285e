"""Faults: a server killed with SIGKILL in the middle of load and restarted.

With the retry policy the Python client ships by default (wait for ready, retries on
UNAVAILABLE; safe because submitting is idempotent in effect), every call eventually
succeeds; the restarted server kept its verdict key and TUF's trusted metadata (both in the
state dir), so it still refuses older metadata put back on the folder it follows."""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import grpc
from staycheck.client.client import StayCheckClient
from staycheck.trust.verdict import decode_token

from tests.harness import STAYCHECK, free_port, spawn, write_server_files
from tests.helpers import DAY, HOUR, TJ_LAT, TJ_LON, itinerary, spec_areas, stay


def test_kill_9_mid_load_then_restart(tmp_path):
    now = int(time.time())
    files = write_server_files(tmp_path, areas=spec_areas(now=now))
    metadata = files.served / "metadata"
    older = {p.name: p.read_bytes() for p in metadata.iterdir()}
    files.refresh()  # the online key re-signs: a newer snapshot and timestamp are served
    newest = files.snapshot_version()
    port = free_port()  # the same address after the restart, as a Service would give
    command = [*STAYCHECK, *files.serve_args(listen=f"127.0.0.1:{port}")]
    risky = itinerary(stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))
    results: list[str] = []
    errors: list[grpc.StatusCode] = []
    stop = threading.Event()

    def load() -> None:
        with StayCheckClient(f"127.0.0.1:{port}", timeout_s=30) as c:
            while not stop.is_set():
                try:
                    results.append(c.submit(risky).token)
                except grpc.RpcError as e:
                    errors.append(e.code())

    threads = [threading.Thread(target=load) for _ in range(4)]
    with contextlib.ExitStack() as stack:
        stack.callback(stop.set)
        first = stack.enter_context(spawn(command, tmp_path))
        for t in threads:
            t.start()
        time.sleep(0.5)
        before = len(results)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        time.sleep(0.5)  # clients are now waiting for a ready server
        second = stack.enter_context(spawn(command, tmp_path))
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(40)
        assert before > 0 and len(results) > before
        assert errors == [], errors
        # The same verdict key before and after the restart (kept in the state dir).
        kids = {decode_token(t)[0].kid for t in results}
        assert len(kids) == 1
        # Both servers matched against the newest set (the second after its restart).
        assert {decode_token(t)[1].riskset_version for t in results} == {newest}
        # The restarted server still refuses the older metadata put back (a rollback).
        for name, data in older.items():
            (metadata / name).write_bytes(data)
        seen = len(second.stderr_text())  # server.err holds the first server's lines too
        second.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "refresh refused" not in (new := second.stderr_text()[seen:]):
            assert time.monotonic() < deadline, "the older metadata was not refused"
            time.sleep(0.05)
        assert "BadVersionNumberError" in new  # TUF's rollback error
        with StayCheckClient(f"127.0.0.1:{port}") as c:
            assert c.submit(risky).riskset_version == newest

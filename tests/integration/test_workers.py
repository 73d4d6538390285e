"""``staycheck serve --workers 2``: pre-forked workers sharing one port (SO_REUSEPORT).

Connections are spread over the workers by the kernel; each worker has its own index,
follows the same served repository folder and watches the key index itself. Checked over
real connections to a real subprocess: both workers answer, a new publication picked up on
SIGHUP and a key rotation reach every worker, a killed worker is restarted, SIGTERM stops
them all."""

from __future__ import annotations

import os
import pathlib
import signal
import time
import urllib.request

import pytest
from staycheck.client.client import StayCheckClient
from staycheck.geo.itinerary import Status
from staycheck.server.keystore import VerdictKeyStore
from staycheck.trust.verdict import decode_token

from tests.harness import serve_process
from tests.helpers import DAY, HOUR, TJ_LAT, TJ_LON, itinerary, risk_areas, spec_areas, stay


def _children(pid: int) -> list[int]:
    text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def _requests_served(metrics_url: str) -> float:
    body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("staycheck_requests_total{")
    )


@pytest.fixture
def workers(tmp_path):
    now = int(time.time())
    extra = ("--workers", "2", "--metrics-listen", "127.0.0.1:0", "--log-format", "json")
    with serve_process(tmp_path, areas=spec_areas(now=now), extra_args=extra) as served:
        # Each worker prints its metrics address before the supervisor's "serving on".
        metrics = [
            line.split("metrics on ", 1)[1].strip()
            for line in served.stdout_lines
            if "metrics on" in line
        ]
        yield {
            "proc": served.proc, "port": served.port, "metrics": metrics, "root": tmp_path,
            "files": served.files, "now": now,
        }  # fmt: skip


def _risky(now: int):
    return itinerary(stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))


def _each_connection(port: int, n: int, call):
    """``call(client)`` on ``n`` fresh connections (each client is its own channel)."""
    results = []
    for _ in range(n):
        # A distinct channel argument keeps gRPC from sharing one subchannel between clients.
        with StayCheckClient(
            f"127.0.0.1:{port}", options=[("grpc.channel_id", os.urandom(4).hex())]
        ) as c:
            results.append(call(c))
    return results


def test_both_workers_answer(workers):
    assert len(workers["metrics"]) == 2
    assert len(_children(workers["proc"].pid)) == 2
    _each_connection(workers["port"], 24, lambda c: c.verdict_keys_json())
    served = [_requests_served(url) for url in workers["metrics"]]
    # The kernel spreads connections; with 24 connections both workers answered some.
    assert all(s > 0 for s in served), served
    assert sum(served) >= 24
    # Each worker keeps TUF's trusted metadata of its own: no two write one file.
    state = workers["root"] / "state"
    for index in (0, 1):
        assert (state / f"tuf-worker-{index}" / "metadata" / "timestamp.json").is_file()
    assert not (state / "tuf").exists()


def test_sighup_reload_and_key_rotation_reach_every_worker(workers):
    root, now, files = workers["root"], workers["now"], workers["files"]
    before = files.snapshot_version()
    files.publish(risk_areas([]))  # the department withdraws area B; the folder is served
    version = files.snapshot_version()
    assert version > before
    workers["proc"].send_signal(signal.SIGHUP)
    # An emergency rotation: the only kind that switches at once (no clock to move here).
    rotation = VerdictKeyStore(root / "state", issuer="110000").rotate(now=now, emergency=True)
    new_kid = bytes.fromhex(rotation.kid)

    def settled(c):
        r = c.submit(_risky(int(time.time())))
        return r.riskset_version, Status(r.status), decode_token(r.token)[0].kid

    # The risky stay no longer meets an area, under the new version and the new key.
    expected = (version, Status.NO_ABNORMALITY, new_kid)
    deadline = time.monotonic() + 15
    while True:
        results = _each_connection(workers["port"], 12, settled)
        if all(r == expected for r in results) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(r == expected for r in results), results


def test_a_killed_worker_is_restarted(workers):
    proc = workers["proc"]
    victim = _children(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        kids = _children(proc.pid)
        if len(kids) == 2 and victim not in kids:
            break
        time.sleep(0.1)
    assert len(_children(proc.pid)) == 2 and victim not in _children(proc.pid)
    # Every call succeeds (the client waits for a ready worker).
    assert all(_each_connection(workers["port"], 8, lambda c: c.verdict_keys_json()))


def test_sigterm_stops_every_worker(workers):
    proc = workers["proc"]
    kids = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for kid in kids:
        assert (
            not pathlib.Path(f"/proc/{kid}").exists()
            or "Z" in pathlib.Path(f"/proc/{kid}/stat").read_text().split()[2]
        )


def test_workers_0_means_one_per_core(tmp_path):
    areas = spec_areas(now=int(time.time()))
    with serve_process(tmp_path, areas=areas, extra_args=("--workers", "0")) as served:
        cores = os.cpu_count() or 1
        if cores > 1:
            assert f"(plaintext, {cores} workers)" in served.banner
            assert len(_children(served.pid)) == cores
        assert served.stop(20) == 0

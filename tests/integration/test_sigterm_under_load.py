"""SIGTERM under load (issue 13, finding 2): calls sent up to ~0.2 s before the signal came
back CANCELLED, in four runs of sixteen clients against ``staycheck serve``. The promise is
that no call sent before the signal fails. gRPC's shutdown cancels calls received but not
yet handed to a handler thread; the default drain (``drain_s``, 1 s of answering after
health turns NOT_SERVING) lets every call sent before the signal be answered first. A real
``staycheck serve`` with its default configuration, sixteen clients with no retries,
SIGTERM, ten times."""

from __future__ import annotations

import signal
import threading
import time

import grpc
from staycheck.client import StayCheckClient

from tests.harness import serve_process
from tests.helpers import BJ_LAT, BJ_LON, DAY, itinerary, spec_areas, stay

CLIENTS = 16
RUNS = 10


def _one_run(root) -> list[tuple[float, grpc.StatusCode | None]]:
    now = int(time.time())
    clean = itinerary(stay("110100", now - 14 * DAY, now, (BJ_LAT, BJ_LON)))
    results: list[tuple[float, grpc.StatusCode | None]] = []  # (sent at, failure)
    with serve_process(root, areas=spec_areas(now=now), log_level="warning") as srv:

        def load() -> None:
            options = [("grpc.enable_retries", 0)]
            with StayCheckClient(srv.target, timeout_s=1, options=options) as c:
                while True:
                    sent = time.monotonic()
                    try:
                        c.submit(clean)
                        results.append((sent, None))
                    except grpc.RpcError as e:
                        results.append((sent, e.code()))
                        return

        threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # under load
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        for t in threads:
            t.join(30)
    return [(sent - signalled, code) for sent, code in results]


def test_sigterm_under_load_fails_no_call_sent_before_it(tmp_path):
    failed_before: list[tuple[int, float, grpc.StatusCode]] = []
    answered_before = 0
    for run in range(RUNS):
        for offset, code in _one_run(tmp_path / f"run{run}"):
            if offset < 0:
                if code is None:
                    answered_before += 1
                else:
                    failed_before.append((run, round(offset, 3), code))
    assert answered_before > RUNS * CLIENTS, "the clients were not under load"
    assert failed_before == []

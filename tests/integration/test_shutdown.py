"""Graceful stop under load: health turns NOT_SERVING first, calls keep being answered
while draining, in-flight calls finish, and no call that had started fails."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from staycheck.client.client import StayCheckClient

from tests.helpers import BJ_LAT, BJ_LON, DAY, NOW, itinerary, running_server, spec_areas, stay

CLEAN = itinerary(stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)))
DRAIN_S = 1.0


def test_stop_under_load(tmp_path, clock):
    with running_server(tmp_path, spec_areas(), clock=clock) as s:
        results: list[tuple[float, grpc.StatusCode | None]] = []  # (start time, failure)
        done = threading.Event()

        def load() -> None:
            # No retries: a refused call must show. The client waits for a ready server, so
            # a call begun after the listener closed ends in its deadline.
            with StayCheckClient(s.target, timeout_s=2, options=[("grpc.enable_retries", 0)]) as c:
                while not done.is_set():
                    start = time.monotonic()
                    try:
                        c.submit(CLEAN)
                        results.append((start, None))
                    except grpc.RpcError as e:
                        results.append((start, e.code()))
                        return

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # under load
        with grpc.insecure_channel(s.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            stop_at = time.monotonic()
            stopper = threading.Thread(target=lambda: s.server.stop(grace=5, drain=DRAIN_S))
            stopper.start()
            time.sleep(0.3)  # inside the drain window
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
            stopper.join(15)
        done.set()
        for t in threads:
            t.join(15)
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    drain_end = stop_at + DRAIN_S
    during_drain = [code for start, code in results if stop_at <= start < drain_end - 0.05]
    # Calls kept being answered while draining, and none of them failed.
    assert during_drain and all(code is None for code in during_drain), during_drain
    # Every call begun before the listener closed succeeded (in-flight calls finished).
    assert all(code is None for start, code in results if start < drain_end - 0.05)
    # Calls begun after it never started: refused, cancelled at the door, or out of time
    # waiting for a ready server.
    never_started = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    assert all(code is None or code in never_started for _, code in results)

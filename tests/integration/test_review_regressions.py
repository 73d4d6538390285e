"""Regressions for faults a review found: each test failed (or crashed) before its fix."""

from __future__ import annotations

import math
import threading
import time

import pytest
import shapely
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.errors import ConfigurationError, MalformedError
from staycheck.geo.itinerary import Status, Stay
from staycheck.geo.matching import evaluate
from staycheck.server.config import build_config
from staycheck.trust.keys import Ed25519Signer, KeySet, PublicKey, VerdictKeySet
from staycheck.trust.verdict import TokenSigner, Verdict
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token

from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, risk_areas, running_server, spec_areas


def _circle(lat: float, lon: float, radius_deg: float, n: int) -> list[list[list[float]]]:
    ring = [
        [
            lon + radius_deg * math.cos(2 * math.pi * k / n),
            lat + radius_deg * math.sin(2 * math.pi * k / n),
        ]
        for k in range(n)
    ]
    return [[*ring, ring[0]]]


def test_concurrent_matching_with_tolerance_does_not_crash():
    """Prepared GEOS geometries shared by request threads crashed the process (SIGSEGV)
    with tolerance > 0 and large polygons; the index no longer prepares them."""
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": _circle(TJ_LAT, TJ_LON, 0.05, 5000)},
        "properties": {
            "id": "big", "city_code": "120100", "level": "high",
            "active_from": "2020-01-01T00:00:00Z", "active_until": None,
        },
    }  # fmt: skip
    msg = build_bundle(
        {"type": "FeatureCollection", "features": [feature]},
        version=1,
        issued_at=NOW - HOUR,
        expires_at=NOW + DAY,
        policy=Policy(tolerance_m=200),
    )
    bundle = RiskAreaBundle.from_proto(msg, digest="x")
    # Just outside the circle (0.05 deg ~ 5.5 km north-south), within tolerance checks.
    near = Stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT + 0.0505, TJ_LON))
    inside = Stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON))
    results: list[Status] = []
    start = threading.Barrier(16)

    def work() -> None:
        start.wait()
        for _ in range(15):
            results.append(evaluate([near], bundle, now=NOW))
            results.append(evaluate([inside], bundle, now=NOW))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(Status.REVIEW_REQUIRED) >= 16 * 15  # every "inside" at least
    assert not shapely.is_prepared(bundle.index._geometries).any()


def _refused(s) -> int:
    """How many of the server's repository refreshes were refused so far."""
    good = ("accepted", "unchanged")
    return sum(n for k, n in s.server.bundles.stats.outcomes.items() if k not in good)


def _wait_for(condition, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_watcher_survives_a_failed_write_of_the_trusted_metadata(tmp_path, clock):
    """TUF's trusted metadata in the state dir is what refuses a rollback after a restart.
    A refresh whose new timestamp cannot be written there is refused, the set in use stays
    (no new set without its record), and the watcher thread lives on to take the next one
    (a failed write of the old version record once killed it)."""
    with running_server(
        tmp_path, spec_areas(), clock=clock, reload_interval_s=0.05, repository_refresh_s=1
    ) as s:
        version = s.server.bundles.current.version
        trusted = s.state_dir / "tuf" / "metadata" / "timestamp.json"
        assert trusted.is_file()
        trusted.unlink()
        trusted.mkdir()  # it cannot be written (as a full or read-only disk would)
        s.files.publish(risk_areas([]))  # the watcher's next refresh finds it
        _wait_for(lambda: _refused(s) > 0, "a refused refresh")
        assert s.server.bundles.current.version == version
        assert s.server.bundles.current.area_count == 1  # still area B
        assert s.server._watcher.is_alive()
        trusted.rmdir()
        _wait_for(lambda: s.server.bundles.current.version == s.snapshot_version(), "the new set")
        assert s.server.bundles.current.area_count == 0
        assert trusted.is_file()
        assert s.server._watcher.is_alive()


def test_verifier_refuses_a_lifetime_over_24_hours():
    signer = Ed25519Signer.generate()
    pk = signer.public_key
    keys = VerdictKeySet(
        KeySet([PublicKey(pk.kid, pk.alg, pk.key, pk.raw, 0, None)], issuer="110000")
    )
    forever = Verdict(b"\x01" * 16, Status.NO_ABNORMALITY, "110000", NOW, NOW + 365 * DAY, 1)
    with pytest.raises(MalformedError):
        verify_token(
            TokenSigner(signer).sign(forever), keys, now=NOW + HOUR, identity=NO_BINDING_CHECK
        )
    backwards = Verdict(b"\x02" * 16, Status.NO_ABNORMALITY, "110000", NOW, NOW - 1, 1)
    with pytest.raises(MalformedError):
        verify_token(TokenSigner(signer).sign(backwards), keys, now=NOW, identity=NO_BINDING_CHECK)


@pytest.mark.parametrize("interval", [0, -1, 60, 300])
def test_reload_interval_must_be_below_the_rotation_grace(interval):
    base = {
        "listen": "127.0.0.1:0", "repository": "r", "trusted_root": "root.json",
        "state_dir": "s", "issuer": "110000", "reload_interval_s": interval,
    }  # fmt: skip
    with pytest.raises(ConfigurationError, match="reload_interval_s"):
        build_config(file=base)


def test_idle_streams_cannot_take_every_thread(spec_server):
    """Idle reflection streams once held all 16 handler threads and starved SubmitItinerary;
    open streams are now capped (max_workers // 4 on the public listener)."""
    import queue

    import grpc
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    from tests.helpers import BJ_LAT, BJ_LON, itinerary, stay

    channel = grpc.insecure_channel(spec_server.target)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    held: list[queue.Queue] = []
    calls = []
    try:
        for _ in range(16):  # as many as there are handler threads
            q: queue.Queue = queue.Queue()  # never fed: the stream stays open and idle
            held.append(q)
            calls.append(stub.ServerReflectionInfo(iter(q.get, None), timeout=30))
        refused = 0
        for call in calls[4:]:
            with pytest.raises(grpc.RpcError) as e:
                next(call)
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            refused += 1
        assert refused == 12
        clean = itinerary(stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)))
        assert spec_server.client.submit(clean).status == int(Status.NO_ABNORMALITY)
    finally:
        for q in held:
            q.put(None)
        for call in calls:
            call.cancel()
        channel.close()

"""Regressions for faults a review found: each test failed (or crashed) before its fix."""

from __future__ import annotations

import math
import threading

import pytest
import shapely

from client.verdict import TokenSigner, Verdict
from client.verifier import verify_token
from geo.authoring import build_bundle
from geo.bundle import Policy, RiskAreaBundle
from geo.errors import ConfigurationError, MalformedError
from geo.itinerary import Stay
from geo.keys import Ed25519Signer, KeySet, PublicKey, VerdictKeySet
from geo.matching import Status, evaluate
from server.config import build_config
from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, running_server, spec_bundle


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


def test_watcher_survives_a_failed_floor_write_and_refuses_that_bundle(tmp_path, authority, clock):
    with running_server(
        tmp_path, spec_bundle(authority, version=1), authority=authority, clock=clock
    ) as s:
        floor = s.root / "state" / "bundle-floor.json"
        floor.unlink()
        floor.mkdir()  # the floor cannot be written (as a full or read-only disk would)
        result = s.publish(spec_bundle(authority, version=2))
        assert not result.accepted and "version floor" in result.reason
        assert s.server.bundles.current.version == 1  # not in use without its floor
        floor.rmdir()
        assert s.publish(spec_bundle(authority, version=3)).accepted
        assert s.server._watcher.is_alive()


def test_verifier_refuses_a_lifetime_over_24_hours():
    signer = Ed25519Signer.generate()
    pk = signer.public_key
    keys = VerdictKeySet(
        KeySet([PublicKey(pk.kid, pk.alg, pk.key, pk.raw, 0, None)], issuer="110000")
    )
    forever = Verdict(b"\x01" * 16, Status.NO_ABNORMALITY, "110000", NOW, NOW + 365 * DAY, 1)
    with pytest.raises(MalformedError):
        verify_token(TokenSigner(signer).sign(forever), keys, now=NOW + HOUR)
    backwards = Verdict(b"\x02" * 16, Status.NO_ABNORMALITY, "110000", NOW, NOW - 1, 1)
    with pytest.raises(MalformedError):
        verify_token(TokenSigner(signer).sign(backwards), keys, now=NOW)


@pytest.mark.parametrize("interval", [0, -1, 60, 300])
def test_reload_interval_must_be_below_the_rotation_grace(interval):
    base = {
        "listen": "127.0.0.1:0", "bundle": "b", "authority_key": "a", "state_dir": "s",
        "issuer": "110000", "reload_interval_s": interval,
    }  # fmt: skip
    with pytest.raises(ConfigurationError, match="reload_interval_s"):
        build_config(file=base)

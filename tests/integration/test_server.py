"""The server as a whole, over a real channel on 127.0.0.1:0, following a real TUF
repository: health, reflection, error mapping, new publications, fail-closed expiry,
restarts. (What TUF refuses, attack by attack: test_tuf_repository.py.)"""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from staycheck.geo import errors
from staycheck.geo.itinerary import Status
from staycheck.server.errors import status_for
from staycheck.trust.verdict import IAT_BUCKET_S, decode_token
from staycheck.v1 import verification_pb2 as pb

from tests.helpers import (
    BJ_LAT,
    BJ_LON,
    DAY,
    HOUR,
    NOW,
    TJ_LAT,
    TJ_LON,
    itinerary,
    risk_areas,
    running_server,
    spec_areas,
    stay,
)

RISKY = itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))
CLEAN = itinerary(stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)))
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(s) -> int:
    with grpc.insecure_channel(s.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        overall = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        svc = stub.Check(
            health_pb2.HealthCheckRequest(service="staycheck.v1.ItineraryVerification"), timeout=5
        ).status
    assert overall == svc
    return overall


def submit_code(s, it=RISKY, **kw) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        s.client.submit(it, **kw)
    return e.value.code()


NO_AREAS = risk_areas([])


# --- services ---------------------------------------------------------------------------


def test_health_serving_with_a_valid_bundle(spec_server):
    assert health(spec_server) == SERVING


def test_reflection_lists_the_services(spec_server):
    with grpc.insecure_channel(spec_server.target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"staycheck.v1.ItineraryVerification", "grpc.health.v1.Health"} <= names


def test_risk_area_status_reports_the_bundle(spec_server):
    st = spec_server.client.risk_area_status()
    assert st.serving and st.version == spec_server.snapshot_version() and st.area_count == 1
    assert st.window_days == 14 and st.min_stay_seconds == 4 * HOUR and st.tolerance_m == 0
    assert list(st.flagged_levels) == ["high", "medium"]
    assert len(st.digest) == 64


def test_verdict_times_follow_the_rules(tmp_path, clock):
    clock.now = NOW + 123  # not on a bucket boundary
    with running_server(tmp_path, spec_areas(now=NOW), clock=clock) as s:
        response = s.client.submit(CLEAN)
        expires = s.server.bundles.current.expires_at
        _, verdict = decode_token(response.token)
        assert verdict.issued_at % IAT_BUCKET_S == 0
        assert clock.now - IAT_BUCKET_S < verdict.issued_at <= clock.now
        assert verdict.expires_at == verdict.issued_at + DAY  # 24 h by default
        # Never past the risk areas' expiry: 2 h before it, a verdict ends with them.
        clock.now = expires - 2 * HOUR
        response = s.client.submit(CLEAN)
    _, verdict = decode_token(response.token)
    assert verdict.expires_at == expires
    assert response.expires_at.seconds == verdict.expires_at


def test_binding_is_carried_opaquely(spec_server):
    binding = bytes(range(32))
    response = spec_server.client.submit(CLEAN, subject_binding=binding)
    assert decode_token(response.token)[1].binding == binding


# --- errors -----------------------------------------------------------------------------


def test_invalid_itinerary_names_field_and_rule_not_value(spec_server):
    bad = itinerary(
        stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)),
        stay("120100", NOW - 2 * DAY + 777, NOW - 2 * DAY - 777, (TJ_LAT, TJ_LON)),
    )
    with pytest.raises(grpc.RpcError) as e:
        spec_server.client.submit(bad)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "stays[1].departure: must be after arrival"
    # The server still answers.
    assert spec_server.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)


def test_missing_time_is_invalid(spec_server):
    it = pb.Itinerary(stays=[pb.Stay(city_code="120100")])
    with pytest.raises(grpc.RpcError) as e:
        spec_server.client.submit(it)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "stays[0].arrival: required"


def test_binding_of_wrong_length_is_invalid(spec_server):
    assert submit_code(spec_server, CLEAN, subject_binding=b"x" * 31) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_oversized_request_is_resource_exhausted(spec_server):
    huge = pb.Itinerary(stays=[pb.Stay(city_code="1" * 300_000)])
    assert submit_code(spec_server, huge) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert spec_server.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)


@pytest.mark.parametrize(
    ("error", "code", "details"),
    [
        (errors.InvalidInputError("stays[0].city_code", "rule"), "INVALID_ARGUMENT", None),
        (errors.MalformedError("token: bad"), "INVALID_ARGUMENT", None),
        (errors.BadSignatureError("sig"), "INVALID_ARGUMENT", None),
        (errors.UnavailableError("no bundle"), "FAILED_PRECONDITION", None),
        (errors.ConfigurationError("/secret/path"), "INTERNAL", "internal error"),
        (ValueError("value 39.12345"), "INTERNAL", "internal error"),
        (KeyError("120100"), "INTERNAL", "internal error"),
    ],
)
def test_every_error_maps_to_one_code(error, code, details):
    got_code, got_details = status_for(error)
    assert got_code.name == code
    assert got_details == (details if details is not None else str(error))


# --- bundles: reloads, expiry, restarts -------------------------------------------------


def test_a_refused_publication_keeps_the_last_good_set(tmp_path, clock):
    """One server-level case (every attack is in test_tuf_repository.py): the department's
    areas file replaced on the web server by other bytes fails its signed hash."""
    with running_server(tmp_path, spec_areas(), clock=clock) as s:
        version = s.server.bundles.current.version
        s.files.publish(NO_AREAS)
        for target in (s.files.served / "targets" / "areas").glob("*.health.pb"):
            target.write_bytes(b"\x0a\x06health" * 2)  # a valid RiskAreaSet, not the signed one
        result = s.server.reload_now()
        assert not result.accepted
        assert s.server.bundles.current.version == version
        assert health(s) == SERVING
        # Still matching against the good set: the risky itinerary still pops up.
        assert s.client.submit(RISKY).status == int(Status.REVIEW_REQUIRED)


def test_a_new_publication_replaces_the_old(spec_server):
    before = spec_server.server.bundles.current.version
    result = spec_server.publish(NO_AREAS)
    assert result.accepted
    response = spec_server.client.submit(RISKY)
    assert response.status == int(Status.NO_ABNORMALITY)
    assert response.riskset_version == spec_server.snapshot_version() > before


def test_a_publication_is_picked_up_by_the_watcher(tmp_path, clock):
    with running_server(
        tmp_path, spec_areas(), clock=clock, reload_interval_s=0.05, repository_refresh_s=1
    ) as s:
        s.files.publish(NO_AREAS)  # no reload asked for: the watcher's refresh finds it
        for _ in range(100):
            if s.server.bundles.current.area_count == 0:
                break
            s.server._stop.wait(0.05)
        assert s.server.bundles.current.area_count == 0
        assert s.server.bundles.current.version == s.snapshot_version()


def test_no_risk_areas_means_not_serving_then_recovers(tmp_path, clock):
    with running_server(tmp_path, None, clock=clock) as s:
        assert health(s) == NOT_SERVING
        with grpc.insecure_channel(s.target) as ch:  # the process itself is alive
            live = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="staycheck.liveness"), timeout=5
            )
        assert live.status == SERVING
        assert submit_code(s, CLEAN) is grpc.StatusCode.FAILED_PRECONDITION
        assert s.publish(spec_areas()).accepted
        assert health(s) == SERVING
        assert s.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)


def test_expired_risk_areas_fail_closed_then_recover(tmp_path, clock):
    with running_server(tmp_path, spec_areas(), clock=clock, reload_interval_s=0.05) as s:
        assert s.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)
        # The timestamp's expiry (the earliest of the metadata) ends the set in use.
        timestamp = next(r for r in s.repository.roles() if r.name == "timestamp")
        assert s.server.bundles.current.expires_at == timestamp.expires
        clock.now = timestamp.expires
        with pytest.raises(grpc.RpcError) as e:
            s.client.submit(CLEAN)
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "expired" in e.value.details()
        for _ in range(200):  # the watcher turns health NOT_SERVING within a tick
            if health(s) == NOT_SERVING:
                break
            s.server._stop.wait(0.05)
        assert health(s) == NOT_SERVING
        assert s.refresh().accepted  # the online key re-signs: fresh again
        assert health(s) == SERVING
        assert s.client.submit(CLEAN).riskset_version == s.snapshot_version()


def test_restart_cannot_roll_back_and_keeps_the_verdict_key(tmp_path, clock):
    with running_server(tmp_path, spec_areas(), clock=clock) as s:
        kids_before = [k.kid for k in s.client.verdict_keys()]
        old = {p.name: p.read_bytes() for p in (s.files.served / "metadata").iterdir()}
        assert s.publish(NO_AREAS).accepted
        newest = s.server.bundles.current.version
    # The same repository after a restart: the same set, the same verdict key.
    with running_server(tmp_path, None, clock=clock) as s:
        assert s.server.reload_now().accepted
        assert s.server.bundles.current.version == newest
        assert [k.kid for k in s.client.verdict_keys()] == kids_before
        # The older metadata put back on the web server: refused (TUF's trusted versions
        # live in the state dir), the newest set keeps serving.
        for name, data in old.items():
            (s.files.served / "metadata" / name).write_bytes(data)
        assert not s.server.reload_now().accepted
        assert s.server.bundles.current.version == newest
    # And a fresh start of the process over the rolled-back folder serves nothing older.
    with running_server(tmp_path, None, clock=clock) as s:
        assert s.server.bundles.current is None
        assert health(s) == NOT_SERVING
        assert submit_code(s, CLEAN) is grpc.StatusCode.FAILED_PRECONDITION


def test_state_dir_key_files_are_private(spec_server):
    state = spec_server.root / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    pems = list((state / "verdict-keys").glob("*.pem"))
    assert len(pems) == 2  # the signing key and the pending next key
    assert all(pem.stat().st_mode & 0o777 == 0o600 for pem in pems)


# --- privacy, in process (the subprocess canary test is in tests/privacy) ---------------


def test_no_itinerary_value_in_logs_at_debug(spec_server, caplog):
    caplog.set_level(logging.DEBUG)
    canary_lat, canary_lon = 39.1256731, 117.1902917
    good = itinerary(stay("120100", NOW - 3 * DAY + 4321, NOW - 2 * DAY, (canary_lat, canary_lon)))
    bad = itinerary(stay("131000", NOW - 2 * DAY + 4321, NOW - 3 * DAY, (canary_lat, canary_lon)))
    spec_server.client.submit(good)
    with pytest.raises(grpc.RpcError) as e:
        spec_server.client.submit(bad)
    text = caplog.text + (e.value.details() or "")
    for canary in ("120100", "131000", "39.12567", "117.19029", str(NOW - 3 * DAY + 4321)):
        assert canary not in text

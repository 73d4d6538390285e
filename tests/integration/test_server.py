"""The server as a whole, over a real channel on 127.0.0.1:0: health, reflection, error
mapping, bundle reloads under the trust rules, fail-closed expiry, restart floor."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from staycheck.geo import errors
from staycheck.geo.itinerary import Status
from staycheck.server.errors import status_for
from staycheck.trust.keys import Ed25519Signer
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
    running_server,
    signed_bundle,
    spec_bundle,
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


def empty_bundle(authority, version, **kw) -> bytes:
    return signed_bundle(authority, [], version=version, **kw)


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
    assert st.serving and st.version == 1 and st.area_count == 1
    assert st.window_days == 14 and st.min_stay_seconds == 4 * HOUR and st.tolerance_m == 0
    assert list(st.flagged_levels) == ["high", "medium"]
    assert len(st.digest) == 64


def test_verdict_times_follow_the_rules(tmp_path, authority, clock):
    clock.now = NOW + 123  # not on a bucket boundary
    bundle = spec_bundle(authority, now=NOW, expires_at=NOW + 2 * HOUR)
    with running_server(tmp_path, bundle, authority=authority, clock=clock) as s:
        response = s.client.submit(CLEAN)
    _, verdict = decode_token(response.token)
    assert verdict.issued_at % IAT_BUCKET_S == 0
    assert clock.now - IAT_BUCKET_S < verdict.issued_at <= clock.now
    # 24 h at most, never past the bundle's expiry (2 h here).
    assert verdict.expires_at == NOW + 2 * HOUR
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


@pytest.mark.parametrize(
    "attack",
    ["unknown key", "flipped byte", "lower version", "equal version", "expired", "truncated"],
)
def test_refused_bundle_keeps_the_last_good_one(tmp_path, authority, clock, attack):
    good = spec_bundle(authority, version=5)
    with running_server(tmp_path, good, authority=authority, clock=clock) as s:
        bad = {
            "unknown key": lambda: empty_bundle(Ed25519Signer.generate(), 6),
            "flipped byte": lambda: _flip(empty_bundle(authority, 6), -10),
            "lower version": lambda: empty_bundle(authority, 4),
            "equal version": lambda: empty_bundle(authority, 5),
            "expired": lambda: empty_bundle(authority, 6, expires_at=NOW - 1),
            "truncated": lambda: empty_bundle(authority, 6)[:-20],
        }[attack]()
        result = s.publish(bad)
        assert not result.accepted
        assert s.server.bundles.current.version == 5
        assert health(s) == SERVING
        # Still matching against the good bundle: the risky itinerary still pops up.
        assert s.client.submit(RISKY).status == int(Status.REVIEW_REQUIRED)


def _flip(data: bytes, i: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


def test_newer_bundle_replaces_the_old(spec_server):
    result = spec_server.publish(empty_bundle(spec_server.authority, 2))
    assert result.accepted
    response = spec_server.client.submit(RISKY)
    assert response.status == int(Status.NO_ABNORMALITY)
    assert response.riskset_version == 2


def test_file_change_is_picked_up_by_the_watcher(tmp_path, authority, clock):
    with running_server(
        tmp_path, spec_bundle(authority), authority=authority, clock=clock, reload_interval_s=0.05
    ) as s:
        tmp = s.root / ".b.tmp"
        tmp.write_bytes(empty_bundle(authority, 2))
        tmp.replace(s.bundle_path)
        for _ in range(200):
            if s.server.bundles.current.version == 2:
                break
            s.server._stop.wait(0.05)
        assert s.server.bundles.current.version == 2


def test_no_bundle_means_not_serving_then_recovers(tmp_path, authority, clock):
    with running_server(tmp_path, None, authority=authority, clock=clock) as s:
        assert health(s) == NOT_SERVING
        with grpc.insecure_channel(s.target) as ch:  # the process itself is alive
            live = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="staycheck.liveness"), timeout=5
            )
        assert live.status == SERVING
        assert submit_code(s, CLEAN) is grpc.StatusCode.FAILED_PRECONDITION
        assert s.publish(spec_bundle(authority)).accepted
        assert health(s) == SERVING
        assert s.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)


def test_expired_bundle_fails_closed_then_recovers(tmp_path, authority, clock):
    bundle = spec_bundle(authority, expires_at=NOW + HOUR)
    with running_server(
        tmp_path, bundle, authority=authority, clock=clock, reload_interval_s=0.05
    ) as s:
        assert s.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)
        clock.advance(HOUR)
        with pytest.raises(grpc.RpcError) as e:
            s.client.submit(CLEAN)
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "expired" in e.value.details()
        for _ in range(200):  # the watcher turns health NOT_SERVING within a tick
            if health(s) == NOT_SERVING:
                break
            s.server._stop.wait(0.05)
        assert health(s) == NOT_SERVING
        fresh = spec_bundle(authority, version=2, now=clock.now, issued_at=clock.now)
        assert s.publish(fresh).accepted
        assert health(s) == SERVING
        assert s.client.submit(CLEAN).riskset_version == 2


def test_restart_cannot_roll_back_and_keeps_the_verdict_key(tmp_path, authority, clock):
    v1, v2 = spec_bundle(authority, version=1), spec_bundle(authority, version=2)
    with running_server(tmp_path, v2, authority=authority, clock=clock) as s:
        kid = s.client.verdict_keys()
        kids_before = [k.kid for k in kid]
    # Same bundle again after a restart: accepted (it is the one the floor records).
    with running_server(tmp_path, v2, authority=authority, clock=clock) as s:
        assert s.server.bundles.current.version == 2
        assert [k.kid for k in s.client.verdict_keys()] == kids_before
    # The older bundle put back: refused, nothing served.
    with running_server(tmp_path, v1, authority=authority, clock=clock) as s:
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

"""Nothing kept, nothing extra in the verdict, nothing in gRPC's own logs (SPEC.md,
"Privacy promises"), through a real in-process server on 127.0.0.1:0.

- After a batch of submissions and ``gc.collect()``, no live protobuf ``Stay``,
  ``LatLng``, ``Itinerary`` or ``SubmitItineraryRequest`` and no ``staycheck.geo.itinerary.Stay``
  carrying the batch's values remains (a scan of ``gc.get_objects()``; the scan is shown to
  find objects that *are* kept).
- A server that has answered 2 000 itineraries gives the same verdict claims (apart from
  ``cti``, ``iat``, ``exp`` and the signature) as a fresh server, for the same requests.
- The claims map is exactly the allowlist of ``trust/verdict.py``: {iss 1, exp 4, iat 6,
  cti 7, StayCheck -65537}, StayCheck's map within {status 1, bundle version 2, binding 3};
  the protected header exactly {alg 1, kid 4}; ``iat`` rounded down to 5 minutes.
- gRPC's "Exception calling application" logging never runs for a refused request: no
  record at all from the ``grpc`` loggers, at DEBUG.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Iterable

import cbor2
import grpc
import pytest
from staycheck.geo import itinerary as geo_itinerary
from staycheck.geo.itinerary import Status
from staycheck.server.service import stays_from_proto
from staycheck.trust import cose
from staycheck.trust.verdict import decode_token
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

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
    spec_areas,
    stay,
)

BINDING = bytes.fromhex("5c" * 16 + "a7" * 16)  # a marker: no other test uses it
BINDING_PARAMETERS = pb.BindingParameters(memory_kib=65536, iterations=2, lanes=4)


def marker_lat(i: int) -> float:
    """39.1223453, 39.1223463, ...: inside SPEC.md's square, unique to this module."""
    return float(f"39.{1223453 + 10 * i:07d}")


def requests(n: int, *, offset: int = 0) -> list[pb.SubmitItineraryRequest]:
    """``n`` requests: risky, clean, bound, city-level, and every fourth one invalid."""
    out = []
    for k in range(n):
        i = k + offset
        lat = marker_lat(i % 50_000)
        a = NOW - 3 * DAY + 17 * (i % 1000)
        stays = [
            pb.Stay(
                city_code="120100",
                location=pb.LatLng(latitude=lat, longitude=TJ_LON),
                arrival={"seconds": a},
                departure={"seconds": a + (6 if i % 3 else 2) * HOUR},
            ),
            pb.Stay(
                city_code="110100" if i % 2 else "120100",
                arrival={"seconds": a - DAY},
                departure={"seconds": a - DAY + 5 * HOUR},
            ),
        ]
        if i % 4 == 3:  # departure before arrival, latitude over 90, NaN, bad code
            broken = stays[1]
            kind = (i // 4) % 4
            if kind == 0:
                broken.departure.seconds = broken.arrival.seconds - 1
            elif kind == 1:
                broken.location.latitude, broken.location.longitude = 90.5, TJ_LON
            elif kind == 2:
                broken.location.latitude, broken.location.longitude = math.nan, TJ_LON
            else:
                broken.city_code = "12O100"
        request = pb.SubmitItineraryRequest(itinerary=pb.Itinerary(stays=stays))
        if i % 2:
            request.subject_binding = BINDING
            request.binding_parameters.CopyFrom(BINDING_PARAMETERS)
        out.append(request)
    return out


def submit_all(target: str, reqs: Iterable[pb.SubmitItineraryRequest], batch: int = 64) -> dict:
    """Submit and count answers by status or code; keeps nothing of the requests."""
    counts: dict[str, int] = {}
    reqs = list(reqs)
    with grpc.insecure_channel(target) as channel:
        call = pb_grpc.ItineraryVerificationStub(channel).SubmitItinerary
        for start in range(0, len(reqs), batch):
            futures = [call.future(r, timeout=30) for r in reqs[start : start + batch]]
            for f in futures:
                try:
                    key = Status(f.result().status).name
                except grpc.RpcError as e:
                    key = e.code().name
                counts[key] = counts.get(key, 0) + 1
            del futures
    return counts


def live_marked_objects(lats: set[float]) -> list[str]:
    """Type names of live objects that carry one of ``lats`` or the marker binding."""
    gc.collect()
    found = []

    def marked_stay(s: pb.Stay) -> bool:
        return s.HasField("location") and s.location.latitude in lats

    for o in gc.get_objects():
        t = type(o)
        if t is pb.LatLng:
            hit = o.latitude in lats
        elif t is pb.Stay:
            hit = marked_stay(o)
        elif t is pb.Itinerary:
            hit = any(marked_stay(s) for s in o.stays)
        elif t is pb.SubmitItineraryRequest:
            hit = o.subject_binding == BINDING or any(marked_stay(s) for s in o.itinerary.stays)
        elif t is geo_itinerary.Stay:
            hit = o.location is not None and o.location[0] in lats
        else:
            continue
        if hit:
            found.append(t.__qualname__)
    return found


# --- no retention -----------------------------------------------------------------------


def test_no_request_object_survives_a_batch(tmp_path, clock):
    lats = {marker_lat(i) for i in range(200)}
    with running_server(tmp_path, spec_areas(), clock=clock) as s:
        counts = submit_all(s.target, requests(200))
        assert counts["INVALID_ARGUMENT"] == 50
        assert counts["REVIEW_REQUIRED"] > 0 and counts["NO_ABNORMALITY"] > 0
        assert live_marked_objects(lats) == []


def test_the_scan_finds_kept_objects():
    """The scan above can fail: objects that are kept are found, each type."""
    lats = {marker_lat(i) for i in range(3)}
    kept_requests = requests(3)
    kept_stays = stays_from_proto(kept_requests[0].itinerary, limits=geo_itinerary.DEFAULT_LIMITS)
    kept_sub = [kept_requests[1].itinerary.stays[0], kept_requests[2].itinerary.stays[0].location]
    found = live_marked_objects(lats)
    assert {"SubmitItineraryRequest", "Stay", "LatLng"} <= set(found)
    assert found.count("Stay") >= 2  # a protobuf Stay and a staycheck.geo.itinerary.Stay
    del kept_requests, kept_stays, kept_sub
    assert live_marked_objects(lats) == []


def _claims_without_id_and_times(token: str) -> tuple[bytes, dict]:
    sign1, _ = decode_token(token)
    claims = cbor2.loads(sign1.payload)
    for key in (7, 6, 4):  # cti, iat, exp
        del claims[key]
    return cbor2.dumps(claims, canonical=True), {k: v for k, v in sign1.protected.items()}


PROBES = [
    # (request, status by SPEC.md's examples)
    (
        itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON))),
        Status.REVIEW_REQUIRED,
    ),
    (itinerary(stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON))), Status.NO_ABNORMALITY),
    (itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR)), Status.REVIEW_REQUIRED),
    (
        itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 2 * HOUR, (TJ_LAT, TJ_LON))),
        Status.NO_ABNORMALITY,
    ),
]


def _probe(s) -> list[tuple[int, bytes, dict]]:
    out = []
    for it, _ in PROBES:
        for binding in (b"", BINDING):
            r = s.client.submit(it, subject_binding=binding)
            out.append((r.status, *_claims_without_id_and_times(r.token)))
    return out


def test_a_busy_server_answers_like_a_fresh_one(tmp_path, clock):
    with running_server(tmp_path / "busy", spec_areas(), clock=clock) as busy:
        # Issue 4: a server that has answered 10 000 itineraries (a quarter invalid).
        counts = submit_all(busy.target, requests(10_000, offset=200))
        assert sum(counts.values()) == 10_000 and counts["INVALID_ARGUMENT"] == 2_500
        after_work = _probe(busy)
        busy_version = busy.snapshot_version()
    # Another repository made the same way publishes the same areas at the same version.
    with running_server(tmp_path / "fresh", spec_areas(), clock=clock) as fresh:
        assert fresh.snapshot_version() == busy_version
        first = _probe(fresh)
    assert [p[0] for p in first] == [int(st) for _, st in PROBES for _ in (0, 1)]
    assert [(st, claims) for st, claims, _ in after_work] == [
        (st, claims) for st, claims, _ in first
    ]
    # Same header shape; the kid differs (each server made its own verdict key).
    assert [set(h) for *_, h in after_work] == [set(h) for *_, h in first]


# --- the claims allowlist -----------------------------------------------------------------


@pytest.mark.parametrize("binding", [b"", BINDING], ids=["unbound", "bound"])
def test_claims_are_exactly_the_allowlist(spec_server, binding):
    risky, _ = PROBES[0]
    bucket = 1_795_000_200  # 2026-11-18T09:50:00Z, a multiple of 300 s
    spec_server.clock.now = bucket + 299  # the last second of that 5-minute bucket
    response = spec_server.client.submit(risky, subject_binding=binding)
    sign1, _ = decode_token(response.token)
    claims = cbor2.loads(sign1.payload)
    assert set(claims) == {1, 4, 6, 7, -65537}
    private = claims[-65537]
    # docs/formats.md: status, bundle version, and for a bound verdict the binding with the
    # Argon2id parameters it was derived with (the client's defaults: 64 MiB, 2, 4).
    assert set(private) == ({1, 2, 3, 4} if binding else {1, 2})
    assert private[1] == int(Status.REVIEW_REQUIRED)
    assert private[2] == spec_server.snapshot_version()  # the version of the set in use
    if binding:
        assert private[3] == binding
        assert private[4] == [65536, 2, 4]
    assert claims[1] == "110000"
    assert isinstance(claims[7], bytes) and len(claims[7]) == 16
    # iat rounded down to a 5-minute bucket, so it cannot be joined with access logs.
    assert claims[6] == bucket
    spec_server.clock.now = bucket + 300
    later = decode_token(spec_server.client.submit(risky).token)[1]
    assert later.issued_at == bucket + 300
    assert set(sign1.protected) == {cose.HEADER_ALG, cose.HEADER_KID}
    assert sign1.protected[cose.HEADER_ALG] == cose.ALG_EDDSA


def test_verdict_ids_are_random(spec_server):
    clean, _ = PROBES[1]
    ids = {decode_token(spec_server.client.submit(clean).token)[1].verdict_id for _ in range(20)}
    assert len(ids) == 20


# --- gRPC's own logging -------------------------------------------------------------------

REFUSED = {
    "departure before arrival": stay("120100", NOW - DAY + 4321, NOW - 2 * DAY + 4321),
    "latitude over 90": stay("120100", NOW - DAY, NOW, (95.1234567, TJ_LON)),
    "far future": stay("120100", NOW - DAY + 4321, NOW + 40 * DAY + 4321),
    "bad city code": stay("12010X", NOW - DAY + 4321, NOW),
}


def test_grpc_logs_nothing_for_refused_requests(spec_server, caplog):
    caplog.set_level(logging.DEBUG)
    for logger in ("grpc", "grpc._server", "grpc._common"):
        caplog.set_level(logging.DEBUG, logger=logger)
    codes = []
    for s in REFUSED.values():
        with pytest.raises(grpc.RpcError) as e:
            spec_server.client.submit(itinerary(s))
        codes.append(e.value.code())
    with pytest.raises(grpc.RpcError) as e:
        spec_server.client.submit(PROBES[1][0], subject_binding=b"\x01" * 31)
    codes.append(e.value.code())
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 5
    grpc_records = [r for r in caplog.records if r.name == "grpc" or r.name.startswith("grpc.")]
    assert grpc_records == []
    assert "Exception calling application" not in caplog.text
    for canary in ("95.1234567", "95.12346", "12010X", str(NOW - DAY + 4321)):
        assert canary not in caplog.text


def test_grpc_log_of_an_undecodable_request_carries_no_content(spec_server, caplog):
    """Bytes that are not a SubmitItineraryRequest: the server's DecodeGuard refuses them as
    INVALID_ARGUMENT without quoting them, and nothing logged quotes them either (nor does
    gRPC log its own "Exception deserializing request!" error any more)."""
    caplog.set_level(logging.DEBUG)
    secret = b"CANARY-39.1234567-120100"
    garbage = b"\x0a\xff\xff\xff\xff\x0f" + secret  # a length that runs past the end
    with grpc.insecure_channel(spec_server.target) as ch:
        call = ch.unary_unary("/staycheck.v1.ItineraryVerification/SubmitItinerary")
        with pytest.raises(grpc.RpcError) as e:
            call(garbage, timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert secret.decode() not in (e.value.details() or "")
    assert not [r for r in caplog.records if r.name.startswith("grpc")]
    text = caplog.text + "".join(
        logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
    )
    for needle in ("CANARY", "39.1234567", "120100", "ffffffff", r"\xff"):
        assert needle not in text

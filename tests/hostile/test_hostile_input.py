"""Hostile itineraries through a real server (SPEC.md, "Threats we design against";
docs/limits.md): each gets a clear INVALID_ARGUMENT whose details name the field and the
rule and never the value, or a documented acceptance (duplicate and overlapping stays,
1 000 stays, stays outside the window, boundary coordinates, Timestamp nanos out of range:
sub-second parts are dropped); oversized messages, gzip bombs and oversized metadata get
RESOURCE_EXHAUSTED, and a server subprocess's memory stays bounded under them; bytes that
are not a request at all never crash the server. After each the server keeps answering.

Bytes that do not parse as a ``SubmitItineraryRequest``: left to grpcio (1.85) they never
reach our servicer and get INTERNAL "Exception deserializing request!" plus an ERROR log
line; the server's DecodeGuard (server/errors.py) turns them into the caller's fault,
INVALID_ARGUMENT ``request: not a valid protobuf message for this method``.
"""

from __future__ import annotations

import math
import random
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from staycheck.geo.itinerary import Status
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

from tests.helpers import BJ_LAT, BJ_LON, DAY, HOUR, NOW, TJ_LAT, TJ_LON, spec_areas
from tests.privacy.serving import serve_subprocess, status_kb

UNDECODABLE_DETAILS = "request: not a valid protobuf message for this method"
LIMIT = 256 * 1024  # docs/limits.md: request size
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
METHOD = "/staycheck.v1.ItineraryVerification/SubmitItinerary"
ARRIVAL, DEPARTURE = NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR  # SPEC.md's risky stay


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def s(
    code: str = "120100",
    arrival: int | None = ARRIVAL,
    departure: int | None = DEPARTURE,
    location: tuple[float, float] | None = (TJ_LAT, TJ_LON),
) -> pb.Stay:
    stay = pb.Stay(city_code=code)
    if arrival is not None:
        stay.arrival.CopyFrom(ts(arrival))
    if departure is not None:
        stay.departure.CopyFrom(ts(departure))
    if location is not None:
        stay.location.CopyFrom(pb.LatLng(latitude=location[0], longitude=location[1]))
    return stay


def it(*stays: pb.Stay) -> pb.Itinerary:
    return pb.Itinerary(stays=list(stays))


CLEAN = it(s("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)))
RISKY = it(s())


def refusal(server, itinerary: pb.Itinerary, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        server.client.submit(itinerary, **kw)
    return e.value.code(), e.value.details() or ""


def still_answers(server) -> None:
    assert server.client.submit(CLEAN).status == int(Status.NO_ABNORMALITY)
    assert server.client.submit(RISKY).status == int(Status.REVIEW_REQUIRED)


# --- refused: one row per rule, named after the attack ----------------------------------

NAN, INF = math.nan, math.inf
# (attack, itinerary, field named, a word of the rule, values that must not be echoed)
REFUSED = [
    ("nan latitude", it(s(location=(NAN, TJ_LON))), "stays[0].location", "finite", []),
    ("nan longitude", it(s(location=(TJ_LAT, NAN))), "stays[0].location", "finite", []),
    ("infinite latitude", it(s(location=(INF, TJ_LON))), "stays[0].location", "finite", []),
    ("-infinite longitude", it(s(location=(TJ_LAT, -INF))), "stays[0].location", "finite", []),
    (
        "latitude over 90",
        it(s(location=(95.1234567, TJ_LON))),
        "stays[0].location.latitude",
        "90",
        ["95.1234567", "95.12346", "95.1235"],
    ),
    (
        "latitude just over 90",
        it(s(location=(90.0000001, TJ_LON))),
        "stays[0].location.latitude",
        "90",
        ["90.0000001", "90.000000"],
    ),
    (
        "latitude under -90",
        it(s(location=(-91.5, TJ_LON))),
        "stays[0].location.latitude",
        "90",
        ["91.5"],
    ),
    (
        "longitude over 180",
        it(s(location=(TJ_LAT, 180.25))),
        "stays[0].location.longitude",
        "180",
        ["180.25"],
    ),
    (
        "departure before arrival",
        it(s(arrival=NOW - DAY + 4321, departure=NOW - 2 * DAY + 4321)),
        "stays[0].departure",
        "after arrival",
        [str(NOW - DAY + 4321), str(NOW - 2 * DAY + 4321)],
    ),
    (
        "zero-length stay",
        it(s(arrival=NOW - DAY + 4321, departure=NOW - DAY + 4321)),
        "stays[0].departure",
        "after arrival",
        [str(NOW - DAY + 4321)],
    ),
    (
        "departure a year in the future",
        it(s(arrival=NOW - DAY, departure=NOW + 365 * DAY + 17)),
        "stays[0].departure",
        "future",
        [str(NOW + 365 * DAY + 17)],
    ),
    (
        "departure at the end of int64",
        it(s(arrival=NOW - DAY, departure=INT64_MAX)),
        "stays[0].departure",
        "future",
        [str(INT64_MAX)],
    ),
    (
        "arrival before 1970",
        it(s(arrival=-1, departure=NOW - DAY)),
        "stays[0].arrival",
        "1970",
        [],
    ),
    (
        "arrival in year 1 (negative Timestamp seconds)",
        it(s(arrival=-62_135_596_800, departure=NOW - DAY)),
        "stays[0].arrival",
        "1970",
        ["62135596800", "0001-01-01"],
    ),
    (
        "arrival at the start of int64",
        it(s(arrival=INT64_MIN, departure=NOW - DAY)),
        "stays[0].arrival",
        "1970",
        [str(INT64_MIN)],
    ),
    ("missing arrival", it(s(arrival=None)), "stays[0].arrival", "required", []),
    ("missing departure", it(s(departure=None)), "stays[0].departure", "required", []),
    ("empty city code", it(s(code="")), "stays[0].city_code", "six-digit", []),
    ("non-numeric city code", it(s(code="ABCDEF")), "stays[0].city_code", "six-digit", ["ABCDEF"]),
    ("letter O for zero", it(s(code="12O100")), "stays[0].city_code", "six-digit", ["12O100"]),
    (
        "arabic-indic digits",
        it(s(code="١٢٠١٠٠")),
        "stays[0].city_code",
        "six-digit",
        ["١٢٠١٠٠"],
    ),
    (
        "fullwidth digits",
        it(s(code="１２０１００")),
        "stays[0].city_code",
        "six-digit",
        ["１２０１００"],
    ),
    ("devanagari digits", it(s(code="१२०१००")), "stays[0].city_code", "six-digit", ["१२०१००"]),
    ("county-level code", it(s(code="120101")), "stays[0].city_code", "prefecture", ["120101"]),
    ("province code", it(s(code="120000")), "stays[0].city_code", "prefecture", ["120000"]),
    ("unknown province", it(s(code="990100")), "stays[0].city_code", "six-digit", ["990100"]),
    ("five digits", it(s(code="12010")), "stays[0].city_code", "six-digit", ["12010"]),
    ("seven digits", it(s(code="1201000")), "stays[0].city_code", "six-digit", ["1201000"]),
    ("leading space", it(s(code=" 120100")), "stays[0].city_code", "six-digit", [" 120100"]),
    ("trailing newline", it(s(code="120100\n")), "stays[0].city_code", "six-digit", []),
    (
        "very long city code",
        it(s(code="1" * 200_000)),
        "stays[0].city_code",
        "six-digit",
        ["1" * 7],
    ),
    (
        "bad stay after good ones",
        it(s(), s("110100"), s("131000"), s(location=(TJ_LAT, 181.0))),
        "stays[3].location.longitude",
        "180",
        ["181"],
    ),
    (
        "1 001 stays",
        it(*[s()] * 1001),
        "stays",
        "at most 1000",
        ["1001"],
    ),
    (
        "10 000 stays",
        it(*[s(location=None)] * 10_000),
        "stays",
        "at most 1000",
        ["10000", "10 000"],
    ),
]


@pytest.mark.parametrize(
    ("itinerary", "field", "rule_word", "values"),
    [pytest.param(*row[1:], id=row[0]) for row in REFUSED],
)
def test_hostile_itinerary_is_refused_naming_field_and_rule(
    spec_server, itinerary, field, rule_word, values
):
    assert itinerary.ByteSize() < LIMIT, "this case must be refused for its content"
    code, details = refusal(spec_server, itinerary)
    assert code is grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{field}: "), details
    rule = details[len(field) + 2 :]
    assert rule_word in rule, details
    for value in values:
        assert value not in details
    assert "nan" not in details.lower().split() and "inf" not in details.lower().split()
    still_answers(spec_server)


@pytest.mark.parametrize("length", [1, 31, 33, 64], ids=lambda n: f"{n} bytes")
def test_binding_of_wrong_length_is_refused(spec_server, length):
    code, details = refusal(spec_server, CLEAN, subject_binding=b"\x5a" * length)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("subject_binding: ")
    assert "Z" not in details and "5a" not in details


# --- accepted on purpose (docs/limits.md) -----------------------------------------------


def status_of(server, *stays: pb.Stay) -> Status:
    return Status(server.client.submit(it(*stays)).status)


def test_duplicate_stays_are_accepted_and_counted_once(spec_server):
    three_hours = s(arrival=ARRIVAL, departure=ARRIVAL + 3 * HOUR)
    # SPEC.md rule 2: the union of a city's stays; 3 h twice is still 3 h, under 4 h.
    assert status_of(spec_server, three_hours, three_hours) is Status.NO_ABNORMALITY
    assert status_of(spec_server, *[three_hours] * 1000) is Status.NO_ABNORMALITY


def test_overlapping_stays_are_accepted_and_their_union_counts(spec_server):
    a = s(arrival=ARRIVAL, departure=ARRIVAL + 3 * HOUR)
    b = s(arrival=ARRIVAL + HOUR, departure=ARRIVAL + 4 * HOUR)  # union: exactly 4 h
    c = s(arrival=ARRIVAL + HOUR, departure=ARRIVAL + 3 * HOUR + 1800)  # union: 3.5 h
    assert status_of(spec_server, a, b) is Status.REVIEW_REQUIRED
    assert status_of(spec_server, b, a) is Status.REVIEW_REQUIRED
    assert status_of(spec_server, a, c) is Status.NO_ABNORMALITY


def test_exactly_1000_stays_are_accepted(spec_server):
    stays = [
        s("110100", NOW - 13 * DAY + i * 600, NOW - 13 * DAY + i * 600 + 300, None)
        for i in range(999)
    ] + [s()]
    assert status_of(spec_server, *stays) is Status.REVIEW_REQUIRED


def test_empty_itinerary_is_no_abnormality(spec_server):
    assert status_of(spec_server) is Status.NO_ABNORMALITY


def test_stays_outside_the_window_are_ignored(spec_server):
    old = s(arrival=NOW - 30 * DAY, departure=NOW - 29 * DAY)
    ancient = s(arrival=0, departure=1)  # 1970-01-01, the earliest accepted time
    assert status_of(spec_server, old, ancient) is Status.NO_ABNORMALITY


def test_boundary_values_are_accepted(spec_server):
    corners = [(90.0, 180.0), (-90.0, -180.0), (-0.0, -0.0), (90.0, -180.0)]
    stays = [s("110100", NOW - 2 * DAY, NOW - DAY, loc) for loc in corners]
    planned = s("110100", NOW - HOUR, NOW + DAY, None)  # departure exactly 24 h ahead
    assert status_of(spec_server, *stays, planned) is Status.NO_ABNORMALITY


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, 2**31 - 1, -(2**31)])
def test_out_of_range_nanos_are_dropped(spec_server, nanos):
    """docs/limits.md: whole seconds, sub-second parts dropped. A Timestamp's nanos outside
    [0, 1e9) is not a valid Timestamp, but the server reads only ``seconds``: the answer is
    the whole-second one, never an error."""
    risky = s()
    risky.arrival.nanos = nanos
    risky.departure.nanos = nanos
    assert status_of(spec_server, risky) is Status.REVIEW_REQUIRED
    short = s(departure=ARRIVAL + 4 * HOUR - 1)  # 1 s short of 4 h, whatever the nanos
    short.departure.nanos = nanos
    assert status_of(spec_server, short) is Status.NO_ABNORMALITY


# --- oversized ----------------------------------------------------------------------------


def oversized(total: int) -> bytes:
    """A serialized request of exactly ``total`` bytes: one stay with a huge city code."""
    code_len = total - 40
    while True:
        data = pb.SubmitItineraryRequest(
            itinerary=it(s(code="7" * code_len, location=None))
        ).SerializeToString()
        if len(data) == total:
            return data
        code_len += total - len(data)


def raw_call(channel: grpc.Channel, method: str = METHOD):
    return channel.unary_unary(method)  # bytes in, bytes out


@pytest.mark.parametrize(
    "size",
    [LIMIT + 1, LIMIT + 64 * 1024, 1 << 20, 20 << 20],
    ids=["1 byte over", "64 KiB over", "1 MiB", "20 MiB"],
)
def test_oversized_request_is_resource_exhausted(spec_server, size):
    data = oversized(size)
    with grpc.insecure_channel(spec_server.target) as ch, pytest.raises(grpc.RpcError) as e:
        raw_call(ch)(data, timeout=30)
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "7777777" not in (e.value.details() or "")
    still_answers(spec_server)


def test_request_at_the_limit_is_read_and_judged(spec_server):
    data = oversized(LIMIT)
    with grpc.insecure_channel(spec_server.target) as ch, pytest.raises(grpc.RpcError) as e:
        raw_call(ch)(data, timeout=30)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("stays[0].city_code: ")


def bomb(decompressed: int) -> bytes:
    """A serialized request of ``decompressed`` bytes that gzip shrinks about a thousandfold:
    under the size limit on the wire, far over it once decompressed. Built as bytes (one
    ``Stay`` with a city code of ``"1"``s), not through protobuf objects, to spare memory."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    code_len = decompressed - 16
    stay = b"\x0a" + varint(code_len) + b"1" * code_len
    itinerary = b"\x0a" + varint(len(stay)) + stay
    return b"\x0a" + varint(len(itinerary)) + itinerary


def test_compressed_bomb_is_resource_exhausted(spec_server):
    data = bomb(20 << 20)
    assert pb.SubmitItineraryRequest.FromString(data).itinerary.stays[0].city_code[:3] == "111"
    with grpc.insecure_channel(spec_server.target) as ch, pytest.raises(grpc.RpcError) as e:
        raw_call(ch)(data, timeout=30, compression=grpc.Compression.Gzip)
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    still_answers(spec_server)


def test_oversized_metadata_is_refused(spec_server):
    with grpc.insecure_channel(spec_server.target) as ch, pytest.raises(grpc.RpcError) as e:
        ch.unary_unary(METHOD)(b"", timeout=10, metadata=[("x-junk", "9" * 100_000)])
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    still_answers(spec_server)


def test_memory_stays_bounded_under_oversized_requests(tmp_path):
    """A ``staycheck serve`` subprocess: its peak RSS (VmHWM) after 80 oversized requests
    (1 MiB and 20 MiB, 8 at a time), then a gzip bomb (about 160 KiB on the wire, 160 MiB
    decompressed), stays below its RSS before them plus 128 MiB. It would not if the server
    read refused messages whole (several 20 MiB ones in flight) or decompressed the bomb."""
    now = int(time.time())
    small, big = oversized(1 << 20), oversized(20 << 20)
    with serve_subprocess(tmp_path / "srv", areas=spec_areas(now=now), log_level="info") as srv:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.ItineraryVerificationStub(ch)
            clean = pb.SubmitItineraryRequest(
                itinerary=it(s("110100", now - 14 * DAY, now, (BJ_LAT, BJ_LON)))
            )
            for _ in range(50):  # warm up the normal path first
                assert stub.SubmitItinerary(clean, timeout=10).status == int(Status.NO_ABNORMALITY)
            baseline = status_kb(srv.pid, "VmRSS")
            call = raw_call(ch)

            def send(data: bytes, compression: grpc.Compression | None = None) -> str:
                try:
                    call(data, timeout=60, compression=compression)
                except grpc.RpcError as e:
                    return e.code().name
                return "OK"

            with futures.ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(send, [small, big] * 40))
            assert codes == ["RESOURCE_EXHAUSTED"] * 80
            after_oversized = status_kb(srv.pid, "VmHWM")
            data = bomb(160 << 20)
            assert send(data, grpc.Compression.Gzip) == "RESOURCE_EXHAUSTED"
            del data
            peak = status_kb(srv.pid, "VmHWM")
            assert stub.SubmitItinerary(clean, timeout=10).status == int(Status.NO_ABNORMALITY)
        print(f"VmRSS before {baseline} KiB; VmHWM {after_oversized} KiB, then {peak} KiB")
        assert after_oversized < baseline + 128 * 1024, (baseline, after_oversized)
        assert peak < baseline + 128 * 1024, (baseline, peak)
        assert srv.stop() == 0


# --- not a request at all -----------------------------------------------------------------

NOT_PROTOBUF = [
    b"\xff\x00" * 64,
    b"\xff" * 16,
    b"\x0a\xff\xff\xff\xff\x0f",  # a length running past the end
    b"\x0a\x05\x0a\x03abc",  # a stay whose bytes are not a Stay
    b"\x0a\x02\x0a\x80",  # a truncated varint length inside
    b"\x0f",  # wire type 7 does not exist
    b"\x12\x05abc",  # binding length past the end
]


@pytest.mark.parametrize("data", NOT_PROTOBUF, ids=lambda d: d[:6].hex())
def test_bytes_that_are_not_a_request_are_invalid_and_the_server_answers(spec_server, data):
    with grpc.insecure_channel(spec_server.target) as ch, pytest.raises(grpc.RpcError) as e:
        raw_call(ch)(data, timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == UNDECODABLE_DETAILS
    still_answers(spec_server)


def test_truncated_request_is_invalid(spec_server):
    whole = pb.SubmitItineraryRequest(itinerary=RISKY).SerializeToString()
    with grpc.insecure_channel(spec_server.target) as ch:
        for cut in (1, len(whole) // 2, len(whole) - 1):
            with pytest.raises(grpc.RpcError) as e:
                raw_call(ch)(whole[:cut], timeout=10)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    still_answers(spec_server)


def test_random_garbage_never_crashes_the_server(spec_server):
    """300 random byte strings to each method: whatever each gets (random bytes may happen
    to parse), never UNKNOWN or UNAVAILABLE, and health stays SERVING."""
    rng = random.Random(20260418)
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
    methods = ["SubmitItinerary", "GetVerdictKeys", "GetRiskAreaStatus"]
    seen: dict[grpc.StatusCode, int] = {}
    with grpc.insecure_channel(spec_server.target) as ch:
        calls = [raw_call(ch, f"/staycheck.v1.ItineraryVerification/{m}") for m in methods]
        for i in range(300):
            data = rng.randbytes(rng.choice([1, 2, 3, 8, 64, 1024, 60_000]))
            for call in calls:
                try:
                    call(data, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                assert code in allowed, (i, code)
                seen[code] = seen.get(code, 0) + 1
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0
    still_answers(spec_server)

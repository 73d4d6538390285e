"""The canary test of issue 4: 1 000 itineraries through a real ``staycheck serve`` at DEBUG,
and afterwards not one of their values anywhere the server could have put it.

SPEC.md, "Privacy promises": no byte of an itinerary (city codes, coordinates, times) reaches
disk, a log line or an error message, at any log level; handling a request opens no file for
writing and makes no outbound connection.

The server runs as a subprocess through ``audited_serve.py`` (an audit hook installed before
the command line starts, armed by the ``serving on`` line, disarmed by SIGUSR1 once the
requests are done), with its own state dir and ``TMPDIR``, the access log and the metrics
endpoint on, once with JSON logs and once with text logs. Every itinerary carries unique
coordinates (``39.1234567``, ``39.1234577``, ... always ending in 7) and times with
distinctive seconds; a fifth break a rule so the error paths run too. Afterwards none of
their forms (raw, rounded to 4-7 decimals, repr, float32, packed double, Unix seconds,
ISO/RFC 3339 texts), nor any city code used, appears in stdout, stderr, the state dir, the
temp dir, the metrics output, or what the client got back with each refusal (details, debug
string, trailing metadata); every metric label value is one of a fixed set; the audit
shows no write-open, rename, connect (or other file system, network or process event)
while requests were handled; the state and temp dirs are unchanged; the server's TCP
sockets are the listeners and accepted connections only.
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import cbor2
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.cli.samples import cities
from staycheck.geo.itinerary import Status
from staycheck.trust import cose
from staycheck.trust.keys import Ed25519Signer
from staycheck.trust.verdict import ALLOWED_CLAIMS, decode_token
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

from tests.helpers import DAY, HOUR, spec_bundle
from tests.privacy.canaries import CanaryIndex, float_forms, time_forms
from tests.privacy.serving import LAUNCHER, REPO, serve_subprocess, tcp_sockets

N = 1000
TIANJIN = "120100"  # the city of SPEC.md's area B, a 1 km square on the Tianjin centre
OTHER_CODES = sorted(c for c in cities() if c != TIANJIN)
INVALID_KINDS = [
    # (kind, the field the refusal must name)
    ("departure before arrival", "stays[1].departure"),
    ("latitude over 90", "stays[1].location.latitude"),
    ("longitude over 180", "stays[1].location.longitude"),
    ("departure far in the future", "stays[1].departure"),
    ("arrival before 1970", "stays[1].arrival"),
    ("non-numeric city code", "stays[1].city_code"),
    ("NaN longitude", "stays[1].location"),
    ("missing departure", "stays[1].departure"),
]


def canary_lat(i: int, degrees: int = 39) -> float:
    """39.1234567, 39.1234577, ...: seven decimals ending in 7, inside the square."""
    return float(f"{degrees}.{1234567 + 10 * i:07d}")


def canary_lon(i: int, degrees: int = 117) -> float:
    """117.1890007, 117.1890017, ...: inside the square."""
    return float(f"{degrees}.{1890007 + 10 * i:07d}")


def ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


@dataclass
class Plan:
    """The requests, what each should get, and every canary they carry."""

    requests: list[pb.SubmitItineraryRequest] = field(default_factory=list)
    expected: list[Status | str] = field(default_factory=list)  # a status or a field name
    floats: set[float] = field(default_factory=set)
    times: set[int] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)

    def canaries(self, *, codes: bool = True) -> set[bytes]:
        out: set[bytes] = set()
        for x in self.floats:
            out |= float_forms(x)
        for t in self.times:
            out |= time_forms(t)
        return out | {c.encode() for c in self.codes} if codes else out


_MEASURED = re.compile(r'((?:request_id|duration_ms)(?:": "?|=))([0-9a-f.]+)')


def masked(stderr: str) -> str:
    """stderr with the access log's request ids and durations blanked. They come from the
    server (random per call, or measured: ``server/metrics.py``), never from a request, and
    would match short canary forms by chance: 16 random hex digits hold a given six-digit
    city code about once in 100 runs, and a 39.124 ms call would match ``39.124``, the
    ``%g`` form of the canary 39.1240007."""
    text, n = _MEASURED.subn(r"\1-", stderr)
    assert n >= 2 * N, "every call has an access log line with a request id and a duration"
    return text


def names_and_labels(metrics: str) -> str:
    """The metrics text without sample values: numbers the server computed (sums of
    durations, counts, process figures) may hold a short canary form by chance."""
    return "\n".join(
        line if line.startswith("#") else line.rsplit(" ", 1)[0] for line in metrics.splitlines()
    )


def plan(now: int) -> Plan:
    """Itinerary i: stay 0 in Tianjin inside the square at now-4d.., 6 h (even i: REVIEW
    by SPEC.md's second example) or 2 h (odd i: under 4 h, NO_ABNORMALITY); stay 1 in
    another city without a location (city-level rule: no area there). Every fifth one has a
    broken stay 1 instead."""
    p = Plan()
    for i in range(N):
        lat, lon = canary_lat(i), canary_lon(i)
        a0 = now - 4 * DAY + 7 + 53 * i
        d0 = a0 + (6 * HOUR if i % 2 == 0 else 2 * HOUR) + 13
        first = pb.Stay(
            city_code=TIANJIN,
            location=pb.LatLng(latitude=lat, longitude=lon),
            arrival=ts(a0),
            departure=ts(d0),
        )
        code = OTHER_CODES[i % len(OTHER_CODES)]
        a1 = now - 2 * DAY + 29 + 53 * i
        d1 = a1 + 5 * HOUR + 31
        second = pb.Stay(city_code=code, arrival=ts(a1), departure=ts(d1))
        p.floats |= {lat, lon}
        p.times |= {a0, d0, a1, d1}
        p.codes |= {TIANJIN, code}
        if i % 5 == 4:
            kind, where = INVALID_KINDS[(i // 5) % len(INVALID_KINDS)]
            second = broken(second, kind, i, now, p)
            p.expected.append(where)
        else:
            p.expected.append(Status.REVIEW_REQUIRED if i % 2 == 0 else Status.NO_ABNORMALITY)
        p.requests.append(pb.SubmitItineraryRequest(itinerary=pb.Itinerary(stays=[first, second])))
    return p


def broken(stay: pb.Stay, kind: str, i: int, now: int, p: Plan) -> pb.Stay:
    s = pb.Stay()
    s.CopyFrom(stay)
    lat, lon = canary_lat(i, 38), canary_lon(i, 116)  # valid but unique to this stay
    if kind == "departure before arrival":
        s.departure.seconds = s.arrival.seconds - HOUR - 11
    elif kind == "latitude over 90":
        lat = canary_lat(i, 95)
        s.location.CopyFrom(pb.LatLng(latitude=lat, longitude=lon))
    elif kind == "longitude over 180":
        lon = canary_lon(i, 197)
        s.location.CopyFrom(pb.LatLng(latitude=lat, longitude=lon))
    elif kind == "departure far in the future":
        s.departure.seconds = now + 30 * DAY + 53 * i
    elif kind == "arrival before 1970":
        s.arrival.seconds = -(1_000_000 + 53 * i)
    elif kind == "non-numeric city code":
        s.city_code = f"C{i:04d}X"
    elif kind == "NaN longitude":
        s.location.CopyFrom(pb.LatLng(latitude=lat, longitude=math.nan))
    elif kind == "missing departure":
        s.ClearField("departure")
    else:  # pragma: no cover
        raise AssertionError(kind)
    if s.HasField("location"):
        p.floats |= {x for x in (s.location.latitude, s.location.longitude) if math.isfinite(x)}
    p.times |= {s.arrival.seconds} | ({s.departure.seconds} if s.HasField("departure") else set())
    p.codes.add(s.city_code)
    return s


@dataclass
class Outcome:
    statuses: list[Status | str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # everything a refusal told the client
    tokens: list[str] = field(default_factory=list)


def send_all(
    target: str, server_pid: int, p: Plan, *, batch: int = 50
) -> tuple[Outcome, list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Submit every request (``batch`` in flight at a time) and collect what came back.
    Also returns the server's TCP sockets seen while our connection was still open."""
    out = Outcome()
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ItineraryVerificationStub(channel)
        for start in range(0, len(p.requests), batch):
            futures = [
                stub.SubmitItinerary.future(r, timeout=30)
                for r in p.requests[start : start + batch]
            ]
            for f in futures:
                try:
                    response = f.result()
                except grpc.RpcError as e:
                    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
                    details = e.details() or ""
                    out.statuses.append(details.split(": ", 1)[0])
                    metadata = [*(e.trailing_metadata() or ()), *(e.initial_metadata() or ())]
                    out.refusals += [details, e.debug_error_string() or ""]
                    out.refusals += [f"{m.key}={m.value!r}" for m in metadata]
                else:
                    out.statuses.append(Status(response.status))
                    out.tokens.append(response.token)
        # A method name is the caller's too: one carrying canaries must not be echoed
        # (in a log line, a metric label or the error) either.
        unknown = f"/staycheck.v1.ItineraryVerification/Submit_{canary_lat(0)!r}_{TIANJIN}"
        try:
            channel.unary_unary(unknown)(b"", timeout=10)
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.UNIMPLEMENTED
            out.refusals += [e.details() or "", e.debug_error_string() or ""]
        else:
            raise AssertionError("an unknown method answered")
        server_sockets = tcp_sockets(server_pid)
        our_sockets = tcp_sockets(os.getpid())
    return out, server_sockets, our_sockets


def snapshot(root: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


AUDIT = re.compile(r"^AUDIT (.*)$", re.MULTILINE)


def audit_during_requests(stderr: str) -> list[str]:
    """AUDIT lines between ``armed`` and ``disarmed``."""
    events = AUDIT.findall(stderr)
    assert "armed" in events, "the audit hook was never armed"
    assert "disarmed" in events, "the audit hook was never disarmed"
    start, end = events.index("armed"), events.index("disarmed")
    assert start < end
    return events[start + 1 : end]


@pytest.fixture(scope="module", params=["json", "text"])
def run(request, tmp_path_factory: pytest.TempPathFactory):
    """One server, 1 000 itineraries; everything the tests below look at."""
    root = tmp_path_factory.mktemp(f"canary-{request.param}")
    authority = Ed25519Signer.generate()
    now = int(time.time())
    p = plan(now)
    bundle = spec_bundle(authority, now=now, issued_at=now - HOUR, expires_at=now + 2 * DAY)
    info: dict = {}
    with serve_subprocess(
        root / "srv",
        authority=authority,
        bundle=bundle,
        audited=True,
        extra_args=(
            "--metrics-listen",
            "127.0.0.1:0",
            "--access-log",
            "--log-format",
            request.param,
        ),
        extra_env={"PYTHONDONTWRITEBYTECODE": "1"},  # no .pyc writes from lazy imports
    ) as srv:
        assert srv.wait_for_stderr("AUDIT armed"), srv.stderr_text()
        m = srv.wait_for_stdout(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
        assert m, srv.stdout_text()
        metrics_url = m.group(0).split(" ", 2)[2]
        before = {"state": snapshot(srv.state_dir), "tmp": snapshot(srv.tmp_dir)}
        outcome, server_sockets, our_sockets = send_all(srv.target, srv.pid, p)
        with urllib.request.urlopen(metrics_url, timeout=10) as r:
            info["metrics"] = r.read().decode()
        info["metrics_port"] = int(m.group(1))
        srv.proc.send_signal(signal.SIGUSR1)
        assert srv.wait_for_stderr("AUDIT disarmed"), srv.stderr_text()
        after = {"state": snapshot(srv.state_dir), "tmp": snapshot(srv.tmp_dir)}
        info |= {"before": before, "after": after, "port": srv.port}
        info |= {"server_sockets": server_sockets, "our_sockets": our_sockets}
        info["exit"] = srv.stop()
    return p, outcome, srv, info


# --- the run did what it should --------------------------------------------------------


def test_every_itinerary_got_its_expected_answer(run):
    p, outcome, _, info = run
    assert info["exit"] == 0
    assert outcome.statuses == p.expected
    refused = [s for s in p.expected if isinstance(s, str)]
    assert len(refused) == N // 5
    assert {Status.REVIEW_REQUIRED, Status.NO_ABNORMALITY} <= set(p.expected)


def test_the_canaries_are_many_and_distinct(run):
    p, *_ = run
    assert len({canary_lat(i) for i in range(N)}) == N
    assert len(p.floats) >= 2 * N and len(p.times) >= 4 * N
    assert CanaryIndex(p.canaries()).count > 20 * N


# --- no canary anywhere -------------------------------------------------------------------


def test_no_canary_in_stdout_or_stderr(run):
    p, _, srv, _ = run
    index = CanaryIndex(p.canaries())
    stderr, stdout = srv.stderr_text(), srv.stdout_text()
    assert "serving on" in stdout
    # The access log was on: a line per call went through the same stream.
    assert stderr.count("staycheck.access") >= N
    assert index.find(stdout) == set()
    assert index.find(masked(stderr)) == set()
    assert "Exception calling application" not in stderr
    assert "Traceback" not in stderr


def test_no_canary_in_the_state_dir_or_temp_dir(run):
    p, _, srv, _ = run
    index = CanaryIndex(p.canaries())
    assert index.find_in_tree(srv.state_dir) == {}
    assert index.find_in_tree(srv.tmp_dir) == {}
    # Nothing new beside them either: the root holds what the test put there and the
    # server's own dirs.
    names = {p.name for p in srv.root.iterdir()}
    assert names == {"authority.pub", "bundle.cose", "state", "tmp", "server.err", "server.out"}


def test_no_canary_in_the_metrics(run):
    p, *_, info = run
    text = info["metrics"]
    assert CanaryIndex(p.canaries()).find(names_and_labels(text)) == set()
    # In sample values too, the long forms (repr, 7 decimals, Unix seconds, dates).
    long_forms = {c for c in p.canaries(codes=False) if len(c) >= 10 and c.isascii()}
    assert CanaryIndex(long_forms).find(text) == set()
    # And the metrics did count this run: 400 + 400 verdicts (see plan()), 200 refusals.
    verdicts = dict(re.findall(r'^staycheck_verdicts_total\{status="(\w+)"\} (\S+)$', text, re.M))
    assert {k: float(v) for k, v in verdicts.items()} == {
        "NO_ABNORMALITY": 400.0,
        "REVIEW_REQUIRED": 400.0,
    }
    refused = re.search(
        r'^staycheck_requests_total\{code="INVALID_ARGUMENT",method="SubmitItinerary"\} (\S+)$',
        text,
        re.M,
    )
    assert refused and float(refused.group(1)) == 200.0


def test_every_metric_label_value_is_from_a_fixed_set(run):
    *_, info = run
    fixed = {
        "method": {"SubmitItinerary", "GetVerdictKeys", "GetRiskAreaStatus", "other"}
        | {"VerifyVerdict", "VerifyVerdicts", "SubmitItineraries", "Check", "Watch"}
        | {"ServerReflectionInfo"},
        "code": {c.name for c in grpc.StatusCode},
        "status": {s.name for s in Status},
    }
    seen = 0
    for line in info["metrics"].splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name = line.split("{", 1)[0]
        if not name.startswith("staycheck_"):
            continue  # the Prometheus client's own process and platform metrics
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1].rsplit("}", 1)[0]))
        labels.pop("le", None)  # histogram bucket bounds
        for key, value in labels.items():
            assert key in fixed, line
            assert value in fixed[key], line
            seen += 1
    assert seen > 0


def test_no_canary_in_what_refusals_told_the_client(run):
    p, outcome, _, _ = run
    index = CanaryIndex(p.canaries())
    assert len(outcome.refusals) >= 2 * (N // 5)
    assert index.find("\n".join(outcome.refusals)) == set()


def test_no_city_code_used_is_printed_or_stored(run):
    p, outcome, srv, _ = run
    codes = CanaryIndex(c.encode() for c in p.codes)
    assert codes.count >= 10
    for text in (srv.stdout_text(), masked(srv.stderr_text()), "\n".join(outcome.refusals)):
        assert codes.find(text) == set()
    assert codes.find_in_tree(srv.state_dir) == {}
    assert codes.find_in_tree(srv.tmp_dir) == {}


def test_tokens_carry_nothing_of_the_itinerary(run):
    p, outcome, _, _ = run
    index = CanaryIndex(p.canaries())
    assert len(outcome.tokens) == N - N // 5
    for token in outcome.tokens:
        sign1, _ = decode_token(token)
        assert set(cbor2.loads(sign1.payload)) == ALLOWED_CLAIMS
        assert set(sign1.protected) == {cose.HEADER_ALG, cose.HEADER_KID}
        assert index.find(sign1.payload) == set()


# --- no write, no connection while handling requests --------------------------------------


def test_no_write_rename_or_connect_while_requests_were_handled(run):
    *_, srv, _ = run
    assert audit_during_requests(srv.stderr_text()) == []


def test_state_and_temp_dirs_unchanged_by_requests(run):
    *_, info = run
    assert info["before"]["state"], "the server should have written its keys at start"
    assert info["after"] == info["before"]


def test_server_sockets_are_the_listener_and_accepted_connections(run):
    *_, info = run
    port = info["port"]
    # The detector works: our own process holds a connection to the server's port.
    assert any(remote == port for _, remote, _ in info["our_sockets"])
    sockets = info["server_sockets"]
    assert any(local == port and state == 0x0A for local, _, state in sockets)
    outbound = [s for s in sockets if s[0] not in {port, info["metrics_port"]}]
    assert outbound == []


def test_the_audit_hook_reports_writes(tmp_path):
    """The hook can fail the test above: run through the same launcher, armed at start,
    a command that writes files (``authority keygen``: open for writing, then replace)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env |= {"AUDIT_ARM": "start", "TMPDIR": str(tmp_path)}
    r = subprocess.run(
        [
            sys.executable,
            str(LAUNCHER),
            "authority",
            "keygen",
            "--private",
            str(tmp_path / "k.key"),
            "--public",
            str(tmp_path / "k.pub"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    events = AUDIT.findall(r.stderr)
    assert events[0] == "armed"
    assert any(e.startswith("open ") and "path=tmp" in e for e in events), events
    assert any(e.startswith(("os.rename ", "os.replace ")) for e in events), events
    assert not any(str(tmp_path) in e for e in events), "paths must not be printed"


def test_the_scanner_finds_a_planted_canary(tmp_path):
    lat = canary_lat(7)
    index = CanaryIndex(float_forms(lat) | time_forms(1_000_000_000))
    assert f"{lat:.5f}".encode() in index.find(f"x {lat:.5f} y")
    assert b"2001-09-09T01:46:40Z" in index.find("at 2001-09-09T01:46:40Z.")
    assert index.find("at 2001-09-09T01:46:41Z.") == set()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.bin").write_bytes(b"\0" + struct.pack("<d", lat))
    assert list(index.find_in_tree(tmp_path)) == ["d/f.bin"]

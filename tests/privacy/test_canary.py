"""The canary test of issue 4: 1 000 itineraries through a real ``staycheck serve`` at DEBUG,
and afterwards not one of their values anywhere the server could have put it.

SPEC.md, "Privacy promises": no byte of an itinerary (city codes, coordinates, times) reaches
disk, a log line or an error message, at any log level; handling a request opens no file for
writing and makes no outbound connection.

The server runs as a subprocess through ``audited_serve.py`` (an audit hook installed before
the command line starts, armed by the ``serving on`` line, disarmed by SIGUSR1 once the
requests are done), with its own state dir and ``TMPDIR``, the access log and the metrics
endpoint on, in four modes (:data:`MODES`): unary ``SubmitItinerary`` calls on the public
listener with JSON logs and with text logs; the partner listener's ``SubmitItineraries``
stream over mutual TLS; and ``--workers 2``, unary calls spread over both workers (the hook,
its arming and disarming reach the forked workers; see ``audited_serve.py``). Every
itinerary carries unique coordinates (``39.1234567``, ``39.1234577``, ... always ending in
7) and times with distinctive seconds; a fifth break a rule so the error paths run too.
Afterwards none of their forms (raw, rounded to 4-7 decimals, repr, float32, packed double,
Unix seconds, ISO/RFC 3339 texts), nor any city code used, appears in stdout, stderr, the
state dir, the temp dir, the metrics output, or what the client got back with each refusal
(details, debug string, trailing metadata; on the partner stream, each item's error); every
metric label value is one of a fixed set; the audit shows no write-open, rename, connect (or
other file system, network or process event) while requests were handled, in every process
of the server; the state and temp dirs and the repository folder the server follows are
unchanged; the TCP sockets of every server process are the listeners and accepted
connections only.

The server follows a TUF repository in a local folder, written by the test before the
server starts, with SPEC.md's area B (risk areas, not itineraries): TUF keeps its metadata
and the downloaded areas file in the state dir. Those files are shown to be byte for byte
files of the repository, and are not scanned (the areas carry Tianjin's city code, which
every itinerary's first stay uses too); everything else in the state dir is.

Where a check cannot mean the same in a mode, the test says so in an explicit condition:
a partner stream is one call (one access log line, one ``requests_total`` count) for many
items, and its refused items are results, not failed calls; under ``--workers`` the
metrics are per worker (summed here) and the supervisor holds the port reserved without
listening on it.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterable
from dataclasses import dataclass, field

import cbor2
import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.cli.samples import cities
from staycheck.geo.itinerary import Status
from staycheck.trust import cose
from staycheck.trust.verdict import ALLOWED_CLAIMS, decode_token
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

from tests import harness
from tests.helpers import DAY, HOUR, spec_areas
from tests.integration.partner_helpers import PartnerEntry, make_pki, write_partners
from tests.privacy.canaries import CanaryIndex, float_forms, time_forms
from tests.privacy.serving import (
    ESTABLISHED,
    LAUNCHER,
    LISTEN,
    REPO,
    accepted_from,
    children,
    listening_on,
    serve_subprocess,
    tcp_sockets,
)

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


@dataclass(frozen=True)
class Mode:
    """How the canaries reach the server."""

    log_format: str
    partner: bool = False
    """Through the partner listener's ``SubmitItineraries`` stream, over mutual TLS (else
    unary ``SubmitItinerary`` calls on the public listener)."""
    workers: int = 1
    """``staycheck serve --workers``: with more than one, a supervisor and that many
    pre-forked workers sharing the port."""


MODES = {
    "json": Mode("json"),
    "text": Mode("text"),
    "partner": Mode("json", partner=True),
    "workers": Mode("text", workers=2),
}
PARTNER = PartnerEntry(
    "canary", "120000", "canary.partner.staycheck.test", requests_per_second=1e6, burst=1e4
)
MESSAGE_SIZES = (1, 9, 40, 50)
"""Items per message of one partner stream (100 items: the 1 000 take ten streams)."""


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
_LOGGED_AT = re.compile(r'^(\{"time": ")([0-9T:.+-]+)(")', re.MULTILINE)


def masked(stderr: str, *, calls: int) -> str:
    """stderr with the access log's request ids and durations, and the JSON lines' times,
    blanked. They come from the server (random per call, measured: ``server/metrics.py``,
    or its clock: ``server/logs.py``), never from a request, and would match short canary
    forms by chance: 16 random hex digits hold a given six-digit city code about once in
    100 runs, and a 39.124 ms call, or a line logged at 22:33:39.124, would match
    ``39.124``, the ``%g`` form of the canary 39.1240007. (Text lines give the time to the
    second, ``22:33:39``, which holds no canary form.)"""
    text, n = _MEASURED.subn(r"\1-", stderr)
    assert n >= 2 * calls, "every call has an access log line with a request id and a duration"
    return _LOGGED_AT.sub(r"\1-\3", text)


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
    calls: int = 0
    """Calls that carried itineraries: unary calls, or partner streams."""
    server_sockets: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    """The TCP sockets of each server process, seen while our connections were open."""
    our_sockets: list[tuple[int, int, int]] = field(default_factory=list)


def open_channels(
    stack: contextlib.ExitStack,
    target: str,
    port: int,
    server_pids: Iterable[int],
    credentials: grpc.ChannelCredentials | None = None,
    *,
    limit: int = 64,
) -> list[grpc.Channel]:
    """Channels to ``target``, one more until every server process listening on ``port``
    has accepted at least one of their connections. The kernel spreads connections, not
    calls, over the workers sharing a port, so calls spread over these channels reach every
    worker; a single process needs one channel."""
    listeners = listening_on(server_pids, port)
    assert listeners, "no server process listens on the port"
    channels: list[grpc.Channel] = []
    while True:
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        if credentials is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, credentials, options=options)
        stack.callback(channel.close)
        grpc.channel_ready_future(channel).result(timeout=10)
        channels.append(channel)
        deadline = time.monotonic() + 10
        while True:
            accepted = accepted_from(os.getpid(), listeners, port)
            if sum(map(len, accepted.values())) >= len(channels):
                break
            assert time.monotonic() < deadline, "a connection was never accepted"
            time.sleep(0.01)
        if all(accepted.values()):
            return channels
        assert len(channels) < limit, f"{limit} connections, still a worker without one"


def send_unary(
    target: str, port: int, server_pids: list[int], p: Plan, *, batch: int = 50
) -> Outcome:
    """Submit every request by unary ``SubmitItinerary`` (``batch`` in flight at a time,
    spread over :func:`open_channels`) and collect what came back."""
    out = Outcome()
    with contextlib.ExitStack() as stack:
        channels = open_channels(stack, target, port, server_pids)
        stubs = [pb_grpc.ItineraryVerificationStub(c) for c in channels]
        for start in range(0, len(p.requests), batch):
            futures = [
                stubs[i % len(stubs)].SubmitItinerary.future(p.requests[i], timeout=30)
                for i in range(start, min(start + batch, len(p.requests)))
            ]
            for f in futures:
                out.calls += 1
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
        unknown_method(channels[0], "staycheck.v1.ItineraryVerification", out)
        seen_sockets(server_pids, out)
    return out


def send_partner(
    target: str,
    port: int,
    server_pids: list[int],
    p: Plan,
    *,
    credentials: grpc.ChannelCredentials,
) -> Outcome:
    """Submit every itinerary through the partner listener's ``SubmitItineraries`` stream
    (ten streams of messages of :data:`MESSAGE_SIZES` items) and collect what came back.
    A refused item is a result holding an ``ItemError`` (the stream goes on): its message
    and the whole error are what the refusal told the client."""
    out = Outcome()
    items = [
        ppb.ItineraryItem(
            itinerary=r.itinerary,
            subject_binding=r.subject_binding,
            binding_parameters=r.binding_parameters if r.subject_binding else None,
        )
        for r in p.requests
    ]
    per_stream = sum(MESSAGE_SIZES)
    with contextlib.ExitStack() as stack:
        channels = open_channels(stack, target, port, server_pids, credentials)
        stub = ppb_grpc.PartnerVerificationStub(channels[0])
        for start in range(0, len(items), per_stream):
            messages, at = [], start
            for size in MESSAGE_SIZES:
                messages.append(ppb.SubmitItinerariesRequest(items=items[at : at + size]))
                at += size
            call = stub.SubmitItineraries(iter(messages), timeout=60)
            results = [r for response in call for r in response.results]
            out.calls += 1
            assert call.code() is grpc.StatusCode.OK, (call.code(), call.details())
            assert [r.index for r in results] == list(range(len(items[start:at])))
            for r in results:
                if r.HasField("error"):
                    assert r.error.code == "INVALID_ARGUMENT", r.error
                    out.statuses.append(r.error.message.split(": ", 1)[0])
                    out.refusals += [r.error.message, text_format.MessageToString(r.error)]
                else:
                    out.statuses.append(Status(r.verdict.status))
                    out.tokens.append(r.verdict.token)
            metadata = [*(call.trailing_metadata() or ()), *(call.initial_metadata() or ())]
            out.refusals += [call.details() or ""]
            out.refusals += [f"{m.key}={m.value!r}" for m in metadata]
        unknown_method(channels[0], "staycheck.v1.PartnerVerification", out)
        seen_sockets(server_pids, out)
    return out


def unknown_method(channel: grpc.Channel, service: str, out: Outcome) -> None:
    """A method name is the caller's too: one carrying canaries must not be echoed (in a
    log line, a metric label or the error) either."""
    unknown = f"/{service}/Submit_{canary_lat(0)!r}_{TIANJIN}"
    try:
        channel.unary_unary(unknown)(b"", timeout=10)
    except grpc.RpcError as e:
        assert e.code() is grpc.StatusCode.UNIMPLEMENTED
        out.refusals += [e.details() or "", e.debug_error_string() or ""]
    else:
        raise AssertionError("an unknown method answered")


def seen_sockets(server_pids: list[int], out: Outcome) -> None:
    """The server's and our TCP sockets, while our connections are still open."""
    out.server_sockets = {pid: tcp_sockets(pid) for pid in server_pids}
    out.our_sockets = tcp_sockets(os.getpid())


def snapshot(root: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


AUDIT = re.compile(r"^AUDIT (\d+) (.*)$", re.MULTILINE)


def audit_by_process(stderr: str) -> dict[int, list[str]]:
    """AUDIT lines by the pid of the process that reported them."""
    events: dict[int, list[str]] = {}
    for pid, event in AUDIT.findall(stderr):
        events.setdefault(int(pid), []).append(event)
    return events


def audit_during_requests(events: list[str]) -> list[str]:
    """One process's AUDIT lines between ``armed`` and ``disarmed``."""
    assert "armed" in events, "the audit hook was never armed"
    assert "disarmed" in events, "the audit hook was never disarmed"
    start, end = events.index("armed"), events.index("disarmed")
    assert start < end
    return events[start + 1 : end]


@pytest.fixture(scope="module", params=list(MODES))
def run(request, tmp_path_factory: pytest.TempPathFactory):
    """One server, 1 000 itineraries; everything the tests below look at."""
    mode = MODES[request.param]
    root = tmp_path_factory.mktemp(f"canary-{request.param}")
    now = int(time.time())
    p = plan(now)
    info: dict = {"mode": mode, "given": {}}
    extra = ["--metrics-listen", "127.0.0.1:0", "--access-log", "--log-format", mode.log_format]
    if mode.partner:
        # The PKI and the partners file beside the server's root: what the test gave it.
        pki = make_pki(root / "partner-files")
        partners = write_partners(root / "partner-files" / "partners.toml", [PARTNER])
        info["given"]["partner-files"] = root / "partner-files"
        extra += ["--tls-cert", str(pki.cert_path), "--tls-key", str(pki.key_path)]
        extra += ["--partner-listen", "127.0.0.1:0", "--partner-ca", str(pki.ca_path)]
        extra += ["--partners", str(partners)]
    if mode.workers > 1:
        extra += ["--workers", str(mode.workers)]
    with serve_subprocess(
        root / "srv",
        areas=spec_areas(now=now),
        audited=True,
        extra_args=tuple(extra),
        extra_env={"PYTHONDONTWRITEBYTECODE": "1"},  # no .pyc writes from lazy imports
    ) as srv:
        # With workers, the supervisor prints "serving on" once they are all ready: its
        # children then are the workers, and the launcher arms them too.
        workers = children(srv.pid)
        assert len(workers) == (mode.workers if mode.workers > 1 else 0), workers
        pids = [srv.pid, *workers]
        for pid in pids:
            assert srv.wait_for_stderr(f"AUDIT {pid} armed"), srv.stderr_text()
        info["pids"], info["workers"] = pids, workers
        # One metrics endpoint per worker (printed before "serving on"), else one after it.
        endpoint = r"metrics on (http://127\.0\.0\.1:(\d+)/metrics)"
        assert srv.wait_for_stdout(rf"(?s)(?:{endpoint}.*?){{{mode.workers}}}"), srv.stdout_text()
        metrics = re.findall(endpoint, srv.stdout_text())
        assert len(metrics) == mode.workers, srv.stdout_text()
        info["metrics_ports"] = {int(port) for _, port in metrics}
        info["listening"] = {srv.port} | info["metrics_ports"]
        before = {"state": snapshot(srv.state_dir), "tmp": snapshot(srv.tmp_dir)}
        before |= {name: snapshot(d) for name, d in info["given"].items()}
        before["served"] = snapshot(srv.files.served)
        if mode.partner:
            m = srv.wait_for_stdout(r"partners on 127\.0\.0\.1:(\d+) \(mutual TLS\)")
            assert m, srv.stdout_text()
            port = int(m.group(1))
            info["listening"].add(port)
            credentials = pki.credentials(pki.partner(PARTNER.identity))
            outcome = send_partner(f"127.0.0.1:{port}", port, pids, p, credentials=credentials)
        else:
            port = srv.port
            outcome = send_unary(srv.target, port, pids, p)
        info["metrics"] = []
        for url, _ in metrics:
            with urllib.request.urlopen(url, timeout=10) as r:
                info["metrics"].append(r.read().decode())
        srv.proc.send_signal(signal.SIGUSR1)  # the launcher passes it on to the workers
        for pid in pids:
            assert srv.wait_for_stderr(f"AUDIT {pid} disarmed"), srv.stderr_text()
        after = {"state": snapshot(srv.state_dir), "tmp": snapshot(srv.tmp_dir)}
        after |= {name: snapshot(d) for name, d in info["given"].items()}
        after["served"] = snapshot(srv.files.served)
        info |= {"before": before, "after": after, "port": port}
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
    p, outcome, srv, info = run
    index = CanaryIndex(p.canaries())
    stderr, stdout = srv.stderr_text(), srv.stdout_text()
    assert "serving on" in stdout
    # The access log was on: a line per call went through the same stream (from every
    # worker: they share it). A partner stream is one call for its 100 items.
    calls = N // sum(MESSAGE_SIZES) if info["mode"].partner else N
    assert outcome.calls == calls
    assert stderr.count("staycheck.access") >= calls
    assert index.find(stdout) == set()
    assert index.find(masked(stderr, calls=calls)) == set()
    assert "Exception calling application" not in stderr
    assert "Traceback" not in stderr


def repository_copies(srv: harness.ServeProcess) -> set[pathlib.Path]:
    """The files of the state dir that are, byte for byte, a file of the repository the
    server follows (TUF's trusted metadata and the downloaded targets, under ``tuf/``, or
    ``tuf-worker-N/`` for each worker of ``--workers``; the
    test wrote the repository from the risk areas before the server started). They hold
    the risk areas, whose city code is Tianjin's, like every itinerary's first stay: they
    are shown to be copies of what was served instead of being scanned."""
    assert srv.files is not None
    served = srv.files.served
    published = {f.read_bytes() for f in served.rglob("*") if f.is_file()}
    published.add(srv.files.trusted_root.read_bytes())
    return {f for f in srv.state_dir.rglob("*") if f.is_file() and f.read_bytes() in published}


def find_in_state_dir(index: CanaryIndex, srv: harness.ServeProcess) -> dict[str, set[bytes]]:
    """Canaries in every name under the state dir, and in every file there but the
    :func:`repository_copies`."""
    copies = repository_copies(srv)
    hits = {}
    for path in sorted(srv.state_dir.rglob("*")):
        rel = str(path.relative_to(srv.state_dir))
        found = index.find(rel)
        if path.is_file() and path not in copies:
            found |= index.find(path.read_bytes())
        if found:
            hits[rel] = found
    return hits


def test_no_canary_in_the_state_dir_or_temp_dir(run):
    p, _, srv, info = run
    index = CanaryIndex(p.canaries())
    assert find_in_state_dir(index, srv) == {}
    assert index.find_in_tree(srv.tmp_dir) == {}
    # The files the test gave the server beside its root (the partner PKI) too.
    for given in info["given"].values():
        assert index.find_in_tree(given) == {}
    # Nothing new beside them either: the root holds what the test put there (the
    # authority's workspace, the folder served from it and its root.json) and the
    # server's own dirs.
    names = {p.name for p in srv.root.iterdir()}
    assert names == {
        *("authority", "served", "root.json"),
        *("state", "tmp", "server.err", "server.out"),
    }


def test_only_tuf_files_of_the_state_dir_are_repository_copies(run):
    """What :func:`find_in_state_dir` leaves out is what it says: TUF's files, every one
    of them byte for byte from the repository, the areas file among them; the server's own
    files (its verdict keys) are scanned."""
    *_, srv, _ = run
    copies = repository_copies(srv)
    tuf = [d for d in srv.state_dir.iterdir() if d.name == "tuf" or d.name.startswith("tuf-")]
    assert tuf
    assert {f for d in tuf for f in d.rglob("*") if f.is_file()} == copies
    assert any(f.name.endswith("health.pb") for f in copies), sorted(copies)  # the areas
    assert any(f.is_file() and f not in copies for f in srv.state_dir.rglob("*"))


def sample(texts: list[str], name: str, labels: str) -> float:
    """The value of the sample ``name{labels}`` summed over the endpoints' ``texts`` (one
    per worker); 0 where it is absent."""
    pattern = re.compile(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", re.M)
    return sum(float(v) for text in texts for v in pattern.findall(text))


def verdicts(texts: list[str]) -> dict[str, float]:
    """``staycheck_verdicts_total`` by status, summed over the endpoints."""
    return {s.name: sample(texts, "staycheck_verdicts_total", f'status="{s.name}"') for s in Status}


def test_no_canary_in_the_metrics(run):
    p, outcome, _, info = run
    texts = info["metrics"]  # one endpoint per worker
    text = "\n".join(texts)
    assert CanaryIndex(p.canaries()).find(names_and_labels(text)) == set()
    # In sample values too, the long forms (repr, 7 decimals, Unix seconds, dates).
    long_forms = {c for c in p.canaries(codes=False) if len(c) >= 10 and c.isascii()}
    assert CanaryIndex(long_forms).find(text) == set()
    # And the metrics did count this run: 400 + 400 verdicts (see plan()), 200 refusals.
    assert verdicts(texts) == {"NO_ABNORMALITY": 400.0, "REVIEW_REQUIRED": 400.0}
    if info["mode"].partner:
        # Refused items are results of streams that end OK (partner_service.py): no call
        # ends INVALID_ARGUMENT; each stream is one call. test_every_itinerary_got_its_
        # expected_answer counts the 200 item errors.
        streams = sample(texts, "staycheck_requests_total", 'code="OK",method="SubmitItineraries"')
        assert streams == outcome.calls
        refused = 'code="INVALID_ARGUMENT",method="SubmitItineraries"'
        assert sample(texts, "staycheck_requests_total", refused) == 0.0
    else:
        refused = 'code="INVALID_ARGUMENT",method="SubmitItinerary"'
        assert sample(texts, "staycheck_requests_total", refused) == 200.0
    if info["mode"].workers > 1:
        # Each worker answered a part of them (its own endpoint counted it).
        # (Connections, not calls, are spread: a worker may have had only refusals.)
        for one in texts:
            calls = sum(
                float(line.rsplit(" ", 1)[1])
                for line in one.splitlines()
                if line.startswith("staycheck_requests_total{")
            )
            assert calls > 0, one


def test_every_metric_label_value_is_from_a_fixed_set(run):
    *_, info = run
    fixed = {
        "method": {"SubmitItinerary", "GetVerdictKeys", "GetRiskAreaStatus", "other"}
        | {"VerifyVerdict", "VerifyVerdicts", "SubmitItineraries", "Check", "Watch"}
        | {"ServerReflectionInfo"},
        "code": {c.name for c in grpc.StatusCode},
        "status": {s.name for s in Status},
        # The repository's refreshes (server/metrics.py): this one is good, so every
        # refresh is accepted or finds nothing new (a refusal's reason, an exception
        # class name, would be a label too, and a failure of this run).
        "outcome": {"accepted", "unchanged"},
        # The roles the server trusts: the top-level ones and the one department.
        "role": {"root", "timestamp", "snapshot", "targets", harness.DEPARTMENT},
    }
    seen = 0
    for line in "\n".join(info["metrics"]).splitlines():
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
    stderr = masked(srv.stderr_text(), calls=outcome.calls)
    for text in (srv.stdout_text(), stderr, "\n".join(outcome.refusals)):
        assert codes.find(text) == set()
    assert find_in_state_dir(codes, srv) == {}
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
    _, outcome, srv, info = run
    by_process = audit_by_process(srv.stderr_text())
    # Every process of the server was audited (the supervisor and each worker under
    # --workers), and no other process reported.
    assert set(by_process) == set(info["pids"])
    # Among them every process that accepted our connections and so handled the requests:
    # under --workers, both workers, never the supervisor.
    accepted = {
        pid
        for pid, sockets in outcome.server_sockets.items()
        if any(local == info["port"] and state == ESTABLISHED for local, _, state in sockets)
    }
    assert accepted == set(info["workers"] or info["pids"])
    for pid in info["pids"]:
        assert audit_during_requests(by_process[pid]) == [], pid


def test_state_and_temp_dirs_unchanged_by_requests(run):
    *_, info = run
    assert info["before"]["state"], "the server should have written its keys at start"
    assert info["after"] == info["before"]


def test_server_sockets_are_the_listener_and_accepted_connections(run):
    _, outcome, _, info = run
    port = info["port"]  # where the itineraries went: the public or the partner listener
    # The detector works: our own process holds a connection to the server's port.
    assert any(remote == port for _, remote, _ in outcome.our_sockets)
    for pid, sockets in outcome.server_sockets.items():
        if pid in info["workers"] or not info["workers"]:
            assert any(local == port and state == LISTEN for local, _, state in sockets), pid
        else:
            # The supervisor of --workers holds the port reserved (bound, not listening:
            # server/workers.py) and accepts nothing; the workers listen.
            assert all(state != LISTEN for _, _, state in sockets), sockets
        # Every socket is on a port the server listens on (the public and partner
        # listeners, the metrics endpoints): accepted connections, no outbound ones.
        outbound = [s for s in sockets if s[0] not in info["listening"]]
        assert outbound == [], pid


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
    by_process = audit_by_process(r.stderr)
    assert len(by_process) == 1
    (events,) = by_process.values()
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


def test_the_audit_hook_reports_in_forked_workers(tmp_path):
    """The workers mode above can fail too: under ``--workers 2``, armed at start, each
    forked worker reports its own events (its metrics endpoint binds a socket from Python
    code) under its own pid, and SIGUSR1 sent to the supervisor disarms every worker."""
    with serve_subprocess(
        tmp_path,
        areas=spec_areas(now=int(time.time())),
        audited=True,
        extra_args=("--workers", "2", "--metrics-listen", "127.0.0.1:0"),
        extra_env={"AUDIT_ARM": "start", "PYTHONDONTWRITEBYTECODE": "1"},
    ) as srv:
        workers = children(srv.pid)
        assert len(workers) == 2
        srv.proc.send_signal(signal.SIGUSR1)
        for pid in [srv.pid, *workers]:
            assert srv.wait_for_stderr(f"AUDIT {pid} disarmed"), srv.stderr_text()
        assert srv.stop() == 0
    by_process = audit_by_process(srv.stderr_text())
    assert set(by_process) == {srv.pid, *workers}
    for pid in workers:
        events = by_process[pid]
        # Armed in the supervisor before the fork: no "armed" line of the worker's own.
        assert "armed" not in events and events[-1] == "disarmed", events
        assert "socket.bind family=AF_INET" in events, events
    assert "os.fork" in by_process[srv.pid]

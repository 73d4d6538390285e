"""``make bench``: StayCheck's performance figures, each beside a baseline measured in the
same run, with the ratio and the target of issue 5.

1. Server CPU per SubmitItinerary call (14 stays, 10 000 areas) vs per health ``Check``
   call, same server, same load (64 calls in flight); also calls/s and p50/p99 latency.
   Beside it, the same SubmitItinerary figure on a server started with
   ``--scrub-freed-memory`` (freed memory overwritten) vs the plain one: what scrubbing
   costs per call (issue 13; no target).
2. The same at 100, 10 000 and 100 000 areas: per-call CPU at 100 000 vs at 100.
3. Partner batch stream (``staycheck.v1.PartnerVerification/SubmitItineraries`` over
   mutual TLS) verdicts/s per server core vs raw Ed25519 signs/s; beside it the in-process
   "match + sign" rate on one thread (what the stream costs without gRPC). The verdict key
   on a SoftHSM2 token (``--verdict-key pkcs11:...``, issue 12) beside the key file, in the
   same run: the stream's rate and the in-process match + sign and raw sign rates.
4. Offline ``verify_token`` tokens/s vs raw Ed25519 verifies/s, one thread.
5. A fresh process's first refresh of a TUF repository whose 6 departments publish 100 000
   areas between them (TUF's update, downloads, merge and index; ``bench.bundleload``):
   time and peak RSS beside the decode of the same merged message without TUF; the
   server's peak RSS with those areas vs with 100; and SubmitItinerary's p99 latency on a
   server refreshing after one department republished, beside the same load without a
   refresh.
8. The Oblivious HTTP gateway (``--ohttp-listen``, RFC 9458): server CPU per oblivious
   submission (HTTP/1.1 POSTs of one sealed request straight to the gateway, 64 connections
   x 1, no relay) beside gRPC SubmitItinerary on the same server in alternating rounds, per
   KDF/AEAD pair the gateway offers; and in process, the gateway's HPKE work per request
   (open the request, seal the response) beside one Ed25519 sign.

Every server figure uses generated areas (``bench.data``) published in a real repository
(one per number of areas, made once, 6 departments); servers are real ``staycheck serve
--repository DIR --trusted-root ROOT.json`` processes on 127.0.0.1:0, each with a state dir
of its own, so each starts with a full refresh; server CPU is read from
``/proc/PID/stat`` (the server and its descendants) before and after a fixed number of
calls, so the load generator's own CPU does not enter the figure; by default the server
runs on all CPUs but the last and the load generator on the last (``--no-pin`` to share);
health and submit rounds alternate, and the median round of each is the figure (the best
is in the JSON too).
The load generator is ``h2load`` when installed (``apt-get install nghttp2-client``), else
a grpc.aio process (``bench.pyload``). Prints a table and writes JSON to
``bench/results/latest.json`` and a dated copy beside it.

This module is the orchestration: the command line, the order of the stages, starting and
stopping what is measured (servers through ``bench.procs``, the load through
``bench.drive``, the in-process rates through ``bench.inproc``), the machine and noise
notes, and the JSON. It does not define the figures: what each one is, its baseline,
ratio and target, and how the table shows it are in ``bench.figures``.

    python -m bench.run            # full run, a few minutes
    python -m bench.run --quick    # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import pathlib
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.verifier import SubjectBinding, verify_token
from staycheck.v1 import verification_pb2 as pb

from bench import data as bdata
from bench.drive import LoadResult, call_raw, drive, drive_http1, h2load_path
from bench.figures import build_figures, print_table
from bench.hsm import BenchToken, make_token
from bench.inproc import binding_guesses, gateway_encapsulation, match_and_sign, verify_rates
from bench.procs import ServerProcess, serve, serve_supports, split_cpus
from bench.stats import fmt_duration, median, percentiles
from tests import harness

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HEALTH = "/grpc.health.v1.Health/Check"
SUBMIT = "/staycheck.v1.ItineraryVerification/SubmitItinerary"
STATUS = "/staycheck.v1.ItineraryVerification/GetRiskAreaStatus"
KEYS = "/staycheck.v1.ItineraryVerification/GetVerdictKeys"
SCRUB_FLAG = "--scrub-freed-memory"
DEPARTMENTS = 6
"""Departments publishing the areas of every repository of the run (figure 5's split)."""


@dataclass
class Settings:
    quick: bool
    areas: list[int]
    concurrency: int
    connections: int
    loadgen: str
    rounds: int
    cpu_per_measure_s: float
    inproc_rounds: int
    inproc_seconds: float
    serve_args: list[str] = field(default_factory=list)
    compare_workers: bool = False
    nice: int = 0
    pin: bool = True


# --- the repositories ----------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """Generated areas (``bench.data.make_areas``, seed 1) and the repository that publishes
    them over :data:`DEPARTMENTS` departments, served from a folder."""

    areas: bdata.Areas
    files: harness.ServerFiles
    publish_s: float
    """How long the publication took in this process (GeoJSON, checks, signing)."""

    @property
    def served_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.served.rglob("*") if p.is_file())


class Repositories:
    """One repository per number of areas, made on first use in ``root``; every server with
    that many areas follows it (each with a state dir of its own)."""

    def __init__(self, root: pathlib.Path, now: int) -> None:
        self._root = root
        self._now = now
        self._made: dict[int, Published] = {}

    def get(self, n_areas: int) -> Published:
        if n_areas not in self._made:
            t0 = time.monotonic()
            areas = bdata.make_areas(n_areas, now=self._now, seed=1)
            files = bdata.server_files(
                self._root / f"repository-{n_areas}",
                areas,
                departments=DEPARTMENTS,
                now=self._now,
            )
            self._made[n_areas] = Published(areas, files, time.monotonic() - t0)
            print(
                f"  published {n_areas} areas over {DEPARTMENTS} departments"
                f" in {self._made[n_areas].publish_s:.1f} s",
                flush=True,
            )
        return self._made[n_areas]


# --- the server figures -------------------------------------------------------------------


def _measure(
    srv: ServerProcess,
    method: str,
    body: bytes,
    n: int,
    s: Settings,
    size: int,
    loadgen_cpus: set[int] | None,
) -> LoadResult:
    return _with_server_cpu(
        srv,
        lambda: drive(
            srv.target,
            method,
            body,
            count=n,
            concurrency=s.concurrency,
            connections=s.connections,
            tool=s.loadgen,
            response_bytes=size,
            cpus=loadgen_cpus,
        ),
    )


def _with_server_cpu(srv: ServerProcess, load: Callable[[], LoadResult]) -> LoadResult:
    """``load()``'s result with the server's CPU time, system time and context switches
    while it ran (from /proc)."""
    user0, sys0 = srv.cpu_times()
    ctx0 = srv.context_switches()
    result = load()
    user1, sys1 = srv.cpu_times()
    result.server_cpu_s = (user1 + sys1) - (user0 + sys0)
    result.server_sys_s = sys1 - sys0
    result.server_ctx_switches = srv.context_switches() - ctx0
    return result


def _check_server(
    srv: ServerProcess, n_areas: int, request: pb.SubmitItineraryRequest, now: int
) -> None:
    """The server serves the areas we published, and a submitted request gets a verdict that
    verifies offline with the server's published keys."""
    status = _status(srv.target)
    if not status.serving or status.area_count != n_areas:
        raise RuntimeError(f"server is not serving the {n_areas} published areas: {status}")
    jwks = pb.GetVerdictKeysResponse.FromString(
        call_raw(srv.target, KEYS, pb.GetVerdictKeysRequest().SerializeToString())
    )
    keys = VerdictKeySet(KeySet.from_jwks(jwks.jwks_json))
    response = pb.SubmitItineraryResponse.FromString(
        call_raw(srv.target, SUBMIT, request.SerializeToString())
    )
    verdict = verify_token(
        response.token, keys, now=int(time.time()), identity=SubjectBinding(request.subject_binding)
    )
    if response.status != pb.VERDICT_STATUS_NO_ABNORMALITY or int(verdict.status) != 1:
        raise RuntimeError("the benchmark itinerary should get NO_ABNORMALITY")


def _status(target: str) -> pb.GetRiskAreaStatusResponse:
    return pb.GetRiskAreaStatusResponse.FromString(
        call_raw(target, STATUS, pb.GetRiskAreaStatusRequest().SerializeToString())
    )


def server_figures(
    pub: Published,
    root: pathlib.Path,
    s: Settings,
    now: int,
    *,
    extra_args: tuple[str, ...] = (),
    pinned: bool = True,
    methods: tuple[str, ...] = (HEALTH, SUBMIT),
) -> dict[str, Any]:
    """CPU per call, calls/s and latency of ``methods`` (SubmitItinerary and health Check)
    on a server following ``pub``; with ``pinned`` (and ``s.pin``), the server runs on all
    CPUs but the last and the load generator on the last."""
    areas, n_areas = pub.areas, len(pub.areas)
    request = bdata.ItineraryMaker(areas, now=now, seed=2).request()
    submit_body = request.SerializeToString()
    health_body = health_pb2.HealthCheckRequest().SerializeToString()
    out: dict[str, Any] = {
        "areas": n_areas,
        "departments": DEPARTMENTS,
        "served_bytes": pub.served_bytes,
    }
    name = f"server-{n_areas}" + "".join(extra_args).replace("-", "") + ("-pin" if pinned else "")
    args = [*s.serve_args, *extra_args]
    split = split_cpus() if (pinned and s.pin) else None
    server_cpus, loadgen_cpus = split if split else (None, None)
    out["server_cpus"] = sorted(server_cpus) if server_cpus else "all"
    out["loadgen_cpus"] = sorted(loadgen_cpus) if loadgen_cpus else "all"
    with serve(root / name, pub.files, extra_args=args, cpus=server_cpus) as srv:
        out["startup_s"] = srv.startup_s
        _check_server(srv, n_areas, request, now)
        sizes = {
            HEALTH: len(call_raw(srv.target, HEALTH, health_body)),
            SUBMIT: len(call_raw(srv.target, SUBMIT, submit_body)),
        }
        bodies = {HEALTH: health_body, SUBMIT: submit_body}
        counts = {}
        warm = 300 if s.quick else 2000
        for method in methods:  # warm-up, and calibrate the call counts
            r = _measure(srv, method, bodies[method], warm, s, sizes[method], loadgen_cpus)
            if r.errors:
                raise RuntimeError(f"{method}: errors in warm-up: {r.errors}")
            per_call = max(r.server_cpu_per_call_s, 20e-6)
            counts[method] = int(min(200_000, max(500, s.cpu_per_measure_s / per_call)))
        runs: dict[str, list[LoadResult]] = {m: [] for m in methods}
        for _ in range(s.rounds):
            for method in methods:
                runs[method].append(
                    _measure(
                        srv, method, bodies[method], counts[method], s, sizes[method], loadgen_cpus
                    )
                )
        _check_server(srv, n_areas, request, now)  # still answering correctly after the load
        out["server_rss"] = srv.rss_bytes()
        out["server_peak_rss"] = srv.peak_rss_bytes()
    for method, name in ((HEALTH, "health"), (SUBMIT, "submit")):
        if method in runs:
            out[name] = _summary(runs[method], counts[method])
    out["response_bytes"] = {"health": sizes[HEALTH], "submit": sizes[SUBMIT]}
    return out


def _summary(rs: list[LoadResult], calls_per_round: int) -> dict[str, Any]:
    """The figures of one kind of call over its rounds: the median round (the best too)."""
    return {
        "calls_per_round": calls_per_round,
        "cpu_per_call_s": median([r.server_cpu_per_call_s for r in rs]),
        "cpu_per_call_best_s": min(r.server_cpu_per_call_s for r in rs),
        "sys_share": median([r.server_sys_s / r.server_cpu_s for r in rs if r.server_cpu_s]),
        "ctx_switches_per_call": median([r.server_ctx_switches / r.calls for r in rs]),
        "calls_per_s": median([r.calls_per_s for r in rs]),
        "latency_p50_s": median([r.latency_s["p50"] for r in rs]),
        "latency_p99_s": median([r.latency_s["p99"] for r in rs]),
        "loadgen_cpu_per_call_s": median([r.loadgen_cpu_s / r.calls for r in rs if r.calls]),
        "errors": dict(sum((Counter(r.errors) for r in rs), Counter())),
        "rounds": [asdict(r) for r in rs],
        "tool": rs[0].tool,
    }


def _report_server(label: str, srv: dict[str, Any], t0: float) -> None:
    """One progress line for a ``server_figures`` result that took since ``t0``."""
    sub, hea = srv["submit"], srv["health"]
    print(
        f"  server, {label}: submit {fmt_duration(sub['cpu_per_call_s'])} CPU/call"
        f" ({sub['sys_share'] * 100:.0f} % system, {sub['ctx_switches_per_call']:.1f}"
        f" context switches), health {fmt_duration(hea['cpu_per_call_s'])}"
        f" ({hea['sys_share'] * 100:.0f} % system, {hea['ctx_switches_per_call']:.1f}),"
        f" {time.monotonic() - t0:.0f} s",
        flush=True,
    )


def partner_stream_figure(
    root: pathlib.Path,
    pub: Published,
    s: Settings,
    now: int,
    *,
    token: BenchToken | None = None,
) -> dict[str, Any]:
    """Figure 3 over the real partner stream: a server with its partner listener (mutual
    TLS, certificates made for the run, a budget high enough not to pace), one
    ``SubmitItineraries`` stream of N itineraries read as they come, and N divided by the
    server process's CPU seconds: verdicts/s per server core. The client runs in this
    process, on the load generator's CPU when pinned. With ``token``, the server signs with
    the key on that SoftHSM2 token (``--verdict-key``)."""
    from staycheck.cli import certs
    from staycheck.client.client import PartnerClient, tls_credentials

    pki = root / "partner-pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca()
    certs.write_pair(pki, "ca", ca)
    certs.write_pair(pki, "server", certs.server_cert(ca))
    partner = certs.partner_cert(ca, "bench.partner.staycheck.test")
    (pki / "partners.toml").write_text(
        '[[partner]]\nid = "bench"\nprovince = "120000"\n'
        'identity = "bench.partner.staycheck.test"\n'
        'methods = ["SubmitItineraries"]\nrequests_per_second = 1000000\n'
    )
    maker = bdata.ItineraryMaker(pub.areas, now=now, seed=3)
    itineraries = [maker.request(hit=k % 5 == 0).itinerary for k in range(512)]
    n = 3_000 if s.quick else 20_000
    split = split_cpus() if s.pin else None
    server_cpus, client_cpus = split if split else (None, None)
    args: tuple[str, ...] = (
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--partner-listen", "127.0.0.1:0", "--partner-ca", str(pki / "ca.pem"),
        "--partners", str(pki / "partners.toml"),
    )  # fmt: skip
    env = None
    name = "partner-server"
    if token is not None:
        args = (*args, "--verdict-key", token.uri)
        env, name = token.env, "partner-server-hsm"
    with serve(root / name, pub.files, extra_args=args, cpus=server_cpus, env=env) as srv:
        # The partner listener's line follows "serving on": wait for it.
        partners = srv.wait_for_stdout(r"partners on \S+:(\d+)", timeout=30)
        if partners is None:
            raise RuntimeError("the server printed no 'partners on' line:\n" + srv.stderr_tail())
        port = int(partners.group(1))
        credentials = tls_credentials(ca=ca.cert_pem, cert=partner.cert_pem, key=partner.key_pem)
        old_affinity = os.sched_getaffinity(0)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        try:
            with PartnerClient(f"localhost:{port}", credentials=credentials) as client:
                warm = list(client.submit_itineraries(itineraries[:200]))
                assert all(r.HasField("verdict") for r in warm), "warm-up items failed"
                cpu0, wall0 = srv.cpu_seconds(), time.monotonic()
                errors = 0
                count = 0
                stream = (itineraries[k % len(itineraries)] for k in range(n))
                for r in client.submit_itineraries(stream):
                    count += 1
                    errors += r.HasField("error")
                cpu1, wall1 = srv.cpu_seconds(), time.monotonic()
        finally:
            os.sched_setaffinity(0, old_affinity)
    cpu = cpu1 - cpu0
    return {
        "items": count,
        "errors": errors,
        "server_cpu_s": cpu,
        "wall_s": wall1 - wall0,
        "verdicts_per_core_s": count / cpu if cpu > 0 else 0.0,
        "verdicts_per_s_wall": count / (wall1 - wall0),
        "areas": len(pub.areas),
    }


# --- figure 8: the Oblivious HTTP gateway -------------------------------------------------

OHTTP_FLAG = "--ohttp-listen"
GATEWAY_LINE = r"oblivious gateway on (http://[\d.]+:(\d+)/)"
AEAD_NAMES = {0x0001: "AES-128-GCM", 0x0002: "AES-256-GCM", 0x0003: "ChaCha20-Poly1305"}
KDF_NAMES = {0x0001: "HKDF-SHA256", 0x0002: "HKDF-SHA384", 0x0003: "HKDF-SHA512"}


def _suite_key(suite: Any) -> str:
    return f"0x{suite.kdf_id:04x}/0x{suite.aead_id:04x}"


def _post(url: str, body: bytes, content_type: str, *, timeout_s: float = 30.0) -> bytes:
    """One HTTP POST straight to the gateway; the body of its 200 answer."""
    import urllib.request

    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        if answer.status != 200:
            raise RuntimeError(f"the gateway answered HTTP {answer.status}")
        data: bytes = answer.read()
        return data


def _measure_http(
    srv: ServerProcess,
    url: str,
    body: bytes,
    n: int,
    s: Settings,
    size: int,
    loadgen_cpus: set[int] | None,
) -> LoadResult:
    """``n`` POSTs of ``body`` to the gateway at ``url`` over ``s.concurrency`` HTTP/1.1
    connections, one request in flight on each (as many in flight as the gRPC rounds,
    which spread them over ``s.connections`` HTTP/2 connections); the server's CPU."""
    from staycheck.client.ohttp import REQUEST_MEDIA_TYPE

    return _with_server_cpu(
        srv,
        lambda: drive_http1(
            url,
            body,
            content_type=REQUEST_MEDIA_TYPE,
            count=n,
            connections=s.concurrency,
            response_bytes=size,
            cpus=loadgen_cpus,
        ),
    )


def oblivious_figures(pub: Published, root: pathlib.Path, s: Settings, now: int) -> dict[str, Any]:
    """Figure 8: the Oblivious HTTP gateway's server CPU per submission beside gRPC
    SubmitItinerary on the same server, for each KDF/AEAD pair its key offers.

    One server (``--ohttp-listen 127.0.0.1:0``, pinned as for figure 1) following ``pub``;
    the same itinerary as figure 1. Its key configuration is fetched from the gateway's
    well-known URL; per pair, the request is sealed once (the inner request is the Binary
    HTTP POST ``ObliviousClient.submit`` sends) and POSTed to the gateway directly (no
    relay: the relay's CPU is its operator's). The answer is opened and its verdict
    verified offline; the same bytes are POSTed again (the gateway answers a replay as a
    fresh request, at the same cost: HPKE decapsulation, AEAD open, match, sign, response
    encapsulation), and the length of that answer is the OK size h2load's body bytes are
    checked against; a sealed request the gateway must refuse inside (a body that is not
    protobuf) is checked to give a 200 of another length. Then rounds alternate: gRPC
    SubmitItinerary (h2load, as figure 1), then one round of ``h2load --h1`` per pair with
    the fixed sealed body over ``s.concurrency`` (64) connections x 1."""
    from staycheck.client.bhttp import Request, Response
    from staycheck.client.oblivious import KEYS_PATH, PROTOBUF, load_key_configs
    from staycheck.client.ohttp import REQUEST_MEDIA_TYPE, encapsulate_request

    areas, n_areas = pub.areas, len(pub.areas)
    request = bdata.ItineraryMaker(areas, now=now, seed=2).request()
    submit_body = request.SerializeToString()
    split = split_cpus() if s.pin else None
    server_cpus, loadgen_cpus = split if split else (None, None)
    out: dict[str, Any] = {
        "areas": n_areas,
        "server_cpus": sorted(server_cpus) if server_cpus else "all",
        "loadgen_cpus": sorted(loadgen_cpus) if loadgen_cpus else "all",
        "http1_connections": s.concurrency,
        "http1_in_flight_per_connection": 1,
        "grpc_connections": s.connections,
        "grpc_in_flight": s.concurrency,
    }
    args = [*s.serve_args, OHTTP_FLAG, "127.0.0.1:0"]
    with serve(root / "oblivious-server", pub.files, extra_args=args, cpus=server_cpus) as srv:
        m = srv.wait_for_stdout(GATEWAY_LINE, timeout=30)
        if m is None:
            raise RuntimeError("the server printed no gateway line:\n" + srv.stderr_tail())
        url = m.group(1)
        out["startup_s"] = srv.startup_s
        _check_server(srv, n_areas, request, now)
        jwks = pb.GetVerdictKeysResponse.FromString(
            call_raw(srv.target, KEYS, pb.GetVerdictKeysRequest().SerializeToString())
        )
        verdict_keys = VerdictKeySet(KeySet.from_jwks(jwks.jwks_json))
        configs = load_key_configs(url.rstrip("/") + KEYS_PATH)
        config = configs[0]
        suites = [suite for suite in config.symmetric if suite.supported]
        inner = Request(
            "POST", "https", "", SUBMIT, (("content-type", PROTOBUF.encode()),), submit_body
        ).encode()
        bad_inner = Request(
            "POST", "https", "", SUBMIT, (("content-type", PROTOBUF.encode()),), b"\xff"
        ).encode()
        sealed: dict[str, bytes] = {}
        sizes: dict[str, int] = {}
        out["suites"] = {}
        inner_response = b""
        for suite in suites:
            key = _suite_key(suite)
            body, context = encapsulate_request(config, inner, suite=suite)
            answer = _post(url, body, REQUEST_MEDIA_TYPE)
            inner_response = context.decapsulate_response(answer)
            response = Response.decode(inner_response)
            if response.status != 200:
                raise RuntimeError(f"oblivious submit ({key}): inner status {response.status}")
            message = pb.SubmitItineraryResponse.FromString(response.content)
            verdict = verify_token(
                message.token,
                verdict_keys,
                now=int(time.time()),
                identity=SubjectBinding(request.subject_binding),
            )
            if message.status != pb.VERDICT_STATUS_NO_ABNORMALITY or int(verdict.status) != 1:
                raise RuntimeError("the benchmark itinerary should get NO_ABNORMALITY")
            replayed = _post(url, body, REQUEST_MEDIA_TYPE)  # what every load request is
            again = Response.decode(context.decapsulate_response(replayed))
            if again.status != 200 or len(replayed) != len(answer):
                raise RuntimeError(f"oblivious submit ({key}): the replay got another answer")
            bad_body, _ = encapsulate_request(config, bad_inner, suite=suite)
            refused = _post(url, bad_body, REQUEST_MEDIA_TYPE)
            if len(refused) == len(answer):
                raise RuntimeError(f"({key}): an error answer has the OK size; cannot check")
            sealed[key], sizes[key] = body, len(answer)
            out["suites"][key] = {
                "kdf": KDF_NAMES.get(suite.kdf_id, hex(suite.kdf_id)),
                "aead": AEAD_NAMES.get(suite.aead_id, hex(suite.aead_id)),
                "request_bytes": len(body),
                "response_bytes": len(answer),
                "error_response_bytes": len(refused),
            }
        grpc_size = len(call_raw(srv.target, SUBMIT, submit_body))
        out["grpc_response_bytes"] = grpc_size
        out["inner_request_bytes"] = len(inner)
        out["inner_response_bytes"] = len(inner_response)

        def one(kind: str, n: int) -> LoadResult:
            if kind == "grpc":
                return _measure(srv, SUBMIT, submit_body, n, s, grpc_size, loadgen_cpus)
            return _measure_http(srv, url, sealed[kind], n, s, sizes[kind], loadgen_cpus)

        kinds = ["grpc", *sealed]
        counts: dict[str, int] = {}
        warm = 300 if s.quick else 2000
        for kind in kinds:  # warm-up, and calibrate the call counts
            r = one(kind, warm)
            if r.errors:
                raise RuntimeError(f"oblivious figure, {kind}: errors in warm-up: {r.errors}")
            per_call = max(r.server_cpu_per_call_s, 20e-6)
            counts[kind] = int(min(200_000, max(500, s.cpu_per_measure_s / per_call)))
        runs: dict[str, list[LoadResult]] = {k: [] for k in kinds}
        for _ in range(s.rounds):
            for kind in kinds:
                runs[kind].append(one(kind, counts[kind]))
        _check_server(srv, n_areas, request, now)  # still answering correctly after the load
    out["submit"] = _summary(runs["grpc"], counts["grpc"])
    for key in sealed:
        out["suites"][key] |= _summary(runs[key], counts[key])
    out["encapsulation"] = {
        k: {name: asdict(rate) for name, rate in v.items()}
        for k, v in gateway_encapsulation(
            suites,
            inner,
            inner_response,
            rounds=s.inproc_rounds,
            seconds=s.inproc_seconds,
        ).items()
    }
    return out


def oblivious_skipped(s: Settings) -> str | None:
    """Why figure 8 cannot be measured in this run, or None."""
    if not h2load_path():
        return "figure 8 needs h2load (HTTP/1.1 load); apt-get install nghttp2-client"
    if not serve_supports(OHTTP_FLAG):
        return f"staycheck serve has no {OHTTP_FLAG}"
    return None


# --- figure 5 ------------------------------------------------------------------------------


def _child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bundleload", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"bench.bundleload failed: {out.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def repository_refresh(root: pathlib.Path, pub: Published) -> dict[str, Any]:
    """Figure 5 in two fresh processes (``bench.bundleload``): the first refresh of ``pub``'s
    repository from nothing but its root, as a starting server does; then the same merged
    message decoded without TUF (``RiskAreaBundle.from_payload``), the baseline."""
    work = root / "repository-refresh"
    work.mkdir()
    merged = work / "merged.pb"
    files = pub.files
    refresh = _child(
        [
            "--repository", str(files.served), "--trusted-root", str(files.trusted_root),
            "--state-dir", str(work / "state"), "--save-merged", str(merged),
        ]
    )  # fmt: skip
    if refresh["areas"] != len(pub.areas):
        raise RuntimeError(f"the refresh gave {refresh['areas']} areas, not {len(pub.areas)}")
    return {"refresh": refresh, "baseline": _child(["--baseline", str(merged)])}


def refresh_under_load(
    root: pathlib.Path, pub: Published, s: Settings, now: int, *, expect_s: float
) -> dict[str, Any]:
    """SubmitItinerary latency on one server (pinned as for figure 1) while it refreshes,
    beside the same load without a refresh. Changes ``pub``'s repository: run it last.

    The server refreshes only when told (``--repository-refresh-s 3600``, then SIGHUP). A
    round of N calls without a refresh is the baseline; then the first department
    republishes its share of the areas with every window opened an hour earlier (the same
    verdicts, new content, so the whole index is rebuilt), the repository is served, and
    a second round of N calls runs, during which the server gets SIGHUP. The refresh lasts
    from the signal until the server reports the new snapshot version (polled every
    20 ms); the calls whose span overlaps it are "during the refresh". N is enough calls
    for about 1 s before the signal and 24 times ``expect_s`` (at least 12 s) after it.

    The load is closed-loop (a fixed number of calls in flight): while the server stalls,
    no new calls start, so this understates what clients arriving at a fixed rate would
    see."""
    areas, files = pub.areas, pub.files
    request = bdata.ItineraryMaker(areas, now=now, seed=2).request()
    body = request.SerializeToString()
    split = split_cpus() if s.pin else None
    server_cpus, loadgen_cpus = split if split else (None, None)
    lead_s = 1.0
    args = [*s.serve_args, "--repository-refresh-s", "3600"]
    with serve(root / "refresh-under-load", files, extra_args=args, cpus=server_cpus) as srv:
        _check_server(srv, len(areas), request, now)
        size = len(call_raw(srv.target, SUBMIT, body))
        warm = _measure(srv, SUBMIT, body, 300 if s.quick else 2000, s, size, loadgen_cpus)
        # The refresh thread runs at a lower priority (server.bundles.BACKGROUND_NICE), so
        # under full load it takes several times its idle duration: cover twenty-four times that.
        count = int(warm.calls_per_s * (lead_s + max(24 * expect_s, 12.0) + 1.0))

        def load() -> LoadResult:
            return drive(
                srv.target,
                SUBMIT,
                body,
                count=count,
                concurrency=s.concurrency,
                connections=s.connections,
                tool=s.loadgen,
                response_bytes=size,
                cpus=loadgen_cpus,
                timeline=True,
            )

        quiet = load()
        old_version = _status(srv.target).version
        moved = dataclasses.replace(areas, active_from=areas.active_from - bdata.HOUR)
        bdata.publish(files, moved, departments=DEPARTMENTS, only=bdata.DEPARTMENTS[0], now=now)
        new_version = files.snapshot_version()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            during = pool.submit(load)
            time.sleep(lead_s)
            signalled = time.time()
            os.kill(srv.pid, signal.SIGHUP)
            refreshed = _wait_for_version(srv.target, new_version, timeout_s=120.0)
            result = during.result()
        _check_server(srv, len(areas), request, now)  # answering correctly on the new set
    spans = [(start, start + latency, latency) for start, latency in result.timeline]
    inside = [lat for start, end, lat in spans if start < refreshed and end > signalled]
    outside = [lat for start, end, lat in spans if not (start < refreshed and end > signalled)]
    covered = (
        bool(spans)
        and min(x[0] for x in spans) < signalled
        and max(x[1] for x in spans) > refreshed
    )
    return {
        "areas": len(areas),
        "departments": DEPARTMENTS,
        "calls_per_round": count,
        "versions": [old_version, new_version],
        "refresh_wall_s": refreshed - signalled,
        "covered": covered,
        "calls_during": len(inside),
        "p99_during_s": percentiles(inside)["p99"],
        "p99_outside_s": percentiles(outside)["p99"],
        "p99_quiet_s": quiet.latency_s["p99"],
        "latency_during_s": percentiles(inside),
        "latency_quiet_s": quiet.latency_s,
        "errors": dict(Counter(quiet.errors) + Counter(result.errors)),
        "tool": result.tool,
    }


def _wait_for_version(target: str, version: int, *, timeout_s: float) -> float:
    """Poll the server's risk-area status every 20 ms until it reports ``version``; the Unix
    time it first did."""
    request = pb.GetRiskAreaStatusRequest().SerializeToString()
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(STATUS, request_serializer=None, response_deserializer=None)
        while time.monotonic() < deadline:
            status = pb.GetRiskAreaStatusResponse.FromString(call(request, timeout=10))
            if status.version == version:
                return time.time()
            time.sleep(0.02)
    raise RuntimeError(f"the server did not move to version {version} in {timeout_s:.0f} s")


# --- putting it together -----------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    versions = {}
    for dist in (
        "grpcio",
        "protobuf",
        "cryptography",
        "shapely",
        "numpy",
        "cbor2",
        "pyhpke",
        "aiohttp",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    h2 = h2load_path()
    if h2:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            versions["h2load"] = subprocess.run(
                [h2, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=ROOT,
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit,
    }


def loadavg() -> float:
    """The 1-minute load average (other work on the machine distorts every figure)."""
    try:
        return float(pathlib.Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def busy_cpu() -> tuple[float, float]:
    """(CPU seconds the whole machine was busy, CPU seconds of this process and its reaped
    children) so far; the difference over a run is what other processes took."""
    import resource

    fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    machine_s = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        own += r.ru_utime + r.ru_stime
    return machine_s, own


def wait_idle(max_wait_s: float) -> float:
    """Wait until other processes use under 10 % of a core for 10 s in a row, at most
    ``max_wait_s``; returns the seconds waited."""
    t0 = time.monotonic()
    quiet = 0
    prev = busy_cpu()
    while time.monotonic() - t0 < max_wait_s and quiet < 10:
        time.sleep(1.0)
        cur = busy_cpu()
        other = (cur[0] - prev[0]) - (cur[1] - prev[1])
        quiet = quiet + 1 if other < 0.1 else 0
        prev = cur
    return time.monotonic() - t0


def settings(args: argparse.Namespace) -> Settings:
    loadgen = args.loadgen
    if loadgen == "h2load" and not h2load_path():
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    if loadgen == "auto":
        loadgen = "h2load" if h2load_path() else "python"
    serve_args: list[str] = shlex.split(args.serve_args)
    compare = not args.quick and args.workers is None and not args.no_workers_compare
    if compare and not serve_supports("--workers"):
        compare = False
    if args.workers is not None:
        if serve_supports("--workers"):
            serve_args += ["--workers", str(args.workers)]
        else:
            print("note: staycheck serve has no --workers yet; running one process")
    return Settings(
        quick=args.quick,
        areas=args.areas,
        concurrency=args.concurrency,
        connections=args.connections,
        loadgen=loadgen,
        rounds=args.rounds or (1 if args.quick else 8),
        cpu_per_measure_s=0.6 if args.quick else 2.0,
        inproc_rounds=1 if args.quick else 5,
        inproc_seconds=0.3 if args.quick else 1.0,
        serve_args=serve_args,
        compare_workers=compare,
        nice=args.nice,
        pin=not args.no_pin and split_cpus() is not None and args.workers is None,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run (seconds per figure)")
    p.add_argument(
        "--areas",
        type=lambda t: sorted({int(x) for x in t.split(",")}),
        default=[100, 10_000, 100_000],
        help="numbers of areas for figure 2 (default 100,10000,100000); the largest is figure 5's",
    )
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    p.add_argument("--connections", type=int, default=16, help="HTTP/2 connections (default 16)")
    p.add_argument("--loadgen", choices=["auto", "h2load", "python"], default="auto")
    p.add_argument("--rounds", type=int, default=0, help="measurements per method per server")
    p.add_argument("--workers", type=int, help="pass --workers N to staycheck serve")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="let server and load generator share all CPUs (default: the server on all but "
        "the last CPU, the load generator on the last; figure 6 never pins)",
    )
    p.add_argument(
        "--no-workers-compare",
        action="store_true",
        help="skip figure 6 (SubmitItinerary with --workers 2 vs 1; full runs only)",
    )
    p.add_argument(
        "--serve-args",
        default="",
        metavar="ARGS",
        help="more flags for staycheck serve, e.g. '--metrics-listen 127.0.0.1:0'",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait (at most this long) until no other process uses the CPUs",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the bench, its servers and load generator at this niceness (e.g. -10 as "
        "root, so that other work on a shared machine disturbs the figures less)",
    )
    p.add_argument(
        "--sweep-threads",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[],
        metavar="N,N,...",
        help="also figure 1 again with --max-workers N for each N (handler threads), at the "
        "middle area count, to choose the default by measurement",
    )
    p.add_argument("--out", type=pathlib.Path, default=RESULTS / "latest.json")
    args = p.parse_args(argv)
    s = settings(args)
    if args.nice:
        try:  # inherited by the servers and the load generator
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            print(f"note: cannot set niceness {args.nice} (needs root); running at 0")
    started = time.monotonic()
    now = int(time.time())
    date = dt.datetime.now(dt.UTC)
    print(f"StayCheck bench ({'quick' if s.quick else 'full'}), load generator: {s.loadgen}")
    if args.wait_idle > 0:
        waited = wait_idle(args.wait_idle)
        if waited > 4:
            print(f"waited {waited:.0f} s for the machine to be idle")
    load_start = loadavg()
    busy0 = busy_cpu()
    if load_start > 0.5:
        print(f"warning: load average {load_start:.2f} before starting: the machine is not idle")
    res: dict[str, Any] = {"servers": {}}
    with tempfile.TemporaryDirectory(prefix="staycheck-bench-") as tmp:
        root = pathlib.Path(tmp)
        repositories = Repositories(root, now)
        for n in s.areas:
            pub = repositories.get(n)
            t0 = time.monotonic()
            res["servers"][n] = server_figures(pub, root, s, now)
            res["servers"][n]["publish_s"] = pub.publish_s
            _report_server(f"{n} areas", res["servers"][n], t0)
        n_mid = 10_000 if 10_000 in s.areas else s.areas[len(s.areas) // 2]
        mid = repositories.get(n_mid)
        # Figure 1 again, the same way (same areas, load, pinning), with freed memory
        # scrubbed: what --scrub-freed-memory costs per call (issue 13).
        t0 = time.monotonic()
        res["scrub_freed_memory"] = server_figures(mid, root, s, now, extra_args=(SCRUB_FLAG,))
        if args.sweep_threads:
            res["thread_sweep"] = {}
            for threads in args.sweep_threads:
                flag = ("--max-workers", str(threads))
                res["thread_sweep"][threads] = got = server_figures(
                    mid, root, s, now, extra_args=flag
                )
                _report_server(f"{n_mid} areas, --max-workers {threads}", got, t0)
        _report_server(f"{n_mid} areas, {SCRUB_FLAG}", res["scrub_freed_memory"], t0)
        # Figure 8: the Oblivious HTTP gateway beside gRPC on one server, pinned the same way.
        skipped = oblivious_skipped(s)
        if skipped is None:
            t0 = time.monotonic()
            res["oblivious"] = ob = oblivious_figures(mid, root, s, now)
            suites = ", ".join(
                f"{v['aead']} {fmt_duration(v['cpu_per_call_s'])}" for v in ob["suites"].values()
            )
            print(
                f"  oblivious gateway, {n_mid} areas: {suites} CPU/call; gRPC submit"
                f" {fmt_duration(ob['submit']['cpu_per_call_s'])}, {time.monotonic() - t0:.0f} s",
                flush=True,
            )
        else:
            print(f"  note: no figure 8 in this run: {skipped}", flush=True)
        if s.compare_workers:
            for k in (1, 2):
                t0 = time.monotonic()
                w = server_figures(
                    mid,
                    root,
                    s,
                    now,
                    extra_args=("--workers", str(k)),
                    pinned=False,
                    methods=(SUBMIT,),
                )
                res[f"workers{k}"] = w
                print(
                    f"  server, {n_mid} areas, {k} worker(s), not pinned: submit"
                    f" {w['submit']['calls_per_s']:.0f} calls/s,"
                    f" {fmt_duration(w['submit']['cpu_per_call_s'])} CPU/call,"
                    f" {time.monotonic() - t0:.0f} s",
                    flush=True,
                )
        token, no_token = make_token(root)
        if token is None:
            print(f"  note: no verdict key on a token in this run: {no_token}", flush=True)
        streams = {"partner_stream": None} | ({"partner_stream_hsm": token} if token else {})
        for key, stream_token in streams.items():
            res[key] = partner_stream_figure(root, mid, s, now, token=stream_token)
            ps = res[key]
            print(
                f"  partner stream{', SoftHSM2 key' if stream_token else ''}: {ps['items']}"
                f" items, {ps['errors']} errors,"
                f" {ps['verdicts_per_core_s']:.0f} verdicts/s per server core",
                flush=True,
            )
        bundle = bdata.merged_bundle(mid.files, now=now)
        maker = bdata.ItineraryMaker(mid.areas, now=now, seed=3)
        requests = [maker.request(hit=k % 5 == 0) for k in range(256)]
        rates = match_and_sign(
            bundle,
            requests,
            now=now,
            rounds=s.inproc_rounds,
            seconds=s.inproc_seconds,
            hsm_signer=token.signer if token is not None else None,
        )
        res["match_sign"] = {k: asdict(v) for k, v in rates.items()}
        res["match_sign"]["areas"] = n_mid
        print("  in-process match + sign done", flush=True)
        vrates = verify_rates(now=now, rounds=s.inproc_rounds, seconds=s.inproc_seconds)
        res["verify"] = {k: asdict(v) for k, v in vrates.items()}
        print("  offline verification done", flush=True)
        grates = binding_guesses(rounds=s.inproc_rounds, seconds=max(s.inproc_seconds, 0.5))
        res["binding_guesses"] = grates
        print("  binding guesses done", flush=True)
        big = repositories.get(max(s.areas))
        res["repository_refresh"] = rr = repository_refresh(root, big)
        print(
            f"  repository refresh, {len(big.areas)} areas: {fmt_duration(rr['refresh']['load_s'])}"
            f" (without TUF {fmt_duration(rr['baseline']['load_s'])})",
            flush=True,
        )
        res["refresh_under_load"] = ul = refresh_under_load(
            root, big, s, now, expect_s=rr["refresh"]["load_s"]
        )
        print(
            f"  SubmitItinerary during a {fmt_duration(ul['refresh_wall_s'])} refresh:"
            f" p99 {fmt_duration(ul['p99_during_s'])} over {ul['calls_during']} calls"
            f" (without {fmt_duration(ul['p99_quiet_s'])})"
            + ("" if ul["covered"] else "; NOT JUDGED: the load did not span the refresh"),
            flush=True,
        )
    split = split_cpus()
    res["method"] = {
        "load_generator": f"{s.loadgen}, {s.concurrency} in flight over {s.connections} "
        "connections",
        "pinning": (
            f"server on CPU {sorted(split[0])}, load on CPU {sorted(split[1])}"
            if s.pin and split
            else "not pinned"
        ),
    }
    figs = build_figures(res, concurrency=s.concurrency)
    measured = {str(n): srv for n, srv in res["servers"].items()}
    measured[SCRUB_FLAG] = res["scrub_freed_memory"]
    for k in (1, 2):
        if f"workers{k}" in res:
            measured[f"{k} worker(s)"] = res[f"workers{k}"]
    errors = {
        n: {m: srv[m]["errors"] for m in ("submit", "health") if m in srv and srv[m]["errors"]}
        for n, srv in measured.items()
    }
    errors = {n: e for n, e in errors.items() if e}
    oblivious = res.get("oblivious")
    if oblivious is not None:
        kinds = {
            "gRPC submit": oblivious["submit"],
            **{v["aead"]: v for v in oblivious["suites"].values()},
        }
        ob_errors = {k: v["errors"] for k, v in kinds.items() if v["errors"]}
        if ob_errors:
            errors["oblivious"] = ob_errors
    if res["refresh_under_load"]["errors"]:
        errors["refresh under load"] = {"submit": res["refresh_under_load"]["errors"]}
    m = machine()
    busy1 = busy_cpu()
    foreign = max(0.0, (busy1[0] - busy0[0]) - (busy1[1] - busy0[1]))
    m["loadavg_start"] = load_start
    m["foreign_cpu_s"] = round(foreign, 1)
    print()
    print(
        f"{date:%Y-%m-%d %H:%M} UTC, {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']},"
        f" grpcio {m['versions'].get('grpcio', '?')}, load generator {s.loadgen},"
        f" {s.concurrency} in flight over {s.connections} connections"
    )
    split = split_cpus()
    if s.pin and split:
        print(
            f"figures 1-2, 8 and 5's p99 during a refresh: server pinned to CPU"
            f" {sorted(split[0])}, load generator to CPU {sorted(split[1])}; figure 6 unpinned"
        )
    print()
    print_table(figs)
    lg = res["servers"][n_mid]["submit"]["loadgen_cpu_per_call_s"]
    print(f"load generator ({s.loadgen}) CPU per call: {fmt_duration(lg)}")
    elapsed = time.monotonic() - started
    if foreign > 0.05 * elapsed:
        print(
            f"warning: other processes used {foreign:.0f} CPU-s during this {elapsed:.0f} s run;"
            " figures are distorted"
        )
    if errors:
        print(f"\nERRORS during the load: {errors}")
    doc = {
        "schema": 1,
        "date": date.isoformat(timespec="seconds"),
        "mode": "quick" if s.quick else "full",
        "elapsed_s": round(elapsed, 1),
        "machine": m,
        "settings": asdict(s),
        "figures": [asdict(f) for f in figs],
        "details": {**res, "servers": {str(k): v for k, v in res["servers"].items()}},
        "errors": {str(k): v for k, v in errors.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n"
    args.out.write_text(text)
    dated = args.out.parent / f"bench-{date:%Y-%m-%d}{'-quick' if s.quick else ''}.json"
    if args.out.resolve() != dated.resolve():
        shutil.copyfile(args.out, dated)
    print(f"\nwrote {args.out} and {dated} ({elapsed:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

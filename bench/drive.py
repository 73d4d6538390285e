"""Driving a fixed number of unary calls at a server, and checking they succeeded.

Two load generators, one interface (:func:`drive`):

- ``h2load`` (Debian package nghttp2-client): sends one fixed gRPC-framed request body with
  ``-c`` connections x ``-m`` streams in flight, for 20-40 µs of its own CPU per call. It
  only sees HTTP statuses, and gRPC errors travel as HTTP 200 with a ``grpc-status``
  trailer, so success is checked by the bytes received: every OK response of these methods
  has the same size (an error has no body), and the DATA bytes h2load reports must equal
  calls x that size. Latencies come from its per-request log.
- ``bench.pyload`` (grpc.aio, in a subprocess): used when h2load is missing or asked for;
  costs about as much CPU per call as the server.

The load generator's own CPU time is measured as well (``RUSAGE_CHILDREN`` around it).

:func:`drive_http1` drives plain HTTP/1.1 POSTs (the Oblivious HTTP gateway) with ``h2load
--h1``: ``-c`` keep-alive connections with one request each in flight (HTTP/1.1 has no
streams; h2load would pipeline with ``-m`` above 1, which no relay does). A call is OK if
its status is 200 (h2load's per-request log) and the body bytes it reports equal calls x
the size of an OK answer (an encapsulated error answer is 200 too, but shorter).
"""

from __future__ import annotations

import json
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import grpc

from bench.data import grpc_frame
from bench.procs import pin
from bench.stats import percentiles


@dataclass
class LoadResult:
    tool: str
    calls: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    calls_per_s: float
    latency_s: dict[str, float]
    loadgen_cpu_s: float
    server_cpu_s: float = 0.0
    server_sys_s: float = 0.0
    server_ctx_switches: int = 0
    notes: list[str] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    """With ``drive(timeline=True)``: (start on the Unix clock, latency) of each OK call,
    seconds."""

    @property
    def server_cpu_per_call_s(self) -> float:
        return self.server_cpu_s / self.calls if self.calls else 0.0


def h2load_path() -> str | None:
    return shutil.which("h2load")


def call_raw(target: str, method: str, body: bytes, *, timeout_s: float = 30.0) -> bytes:
    """One unary call with an already serialized request; returns the serialized response."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        response: bytes = call(body, timeout=timeout_s)
        return response


def _run_pinned(
    cmd: list[str], cpus: set[int] | None, *, timeout_s: float, cwd: pathlib.Path | None = None
) -> tuple[int, str, str]:
    """Run ``cmd`` to completion on ``cpus``; (exit status, stdout, stderr). Killed on
    timeout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        pin(proc.pid, cpus)
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return proc.returncode, out, err


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")


def _h2load(
    target: str,
    method: str,
    body: bytes,
    *,
    count: int,
    connections: int,
    streams: int,
    response_bytes: int,
    timeout_s: float,
    cpus: set[int] | None = None,
    timeline: bool = False,
) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="staycheck-h2load-") as tmp:
        body_path = pathlib.Path(tmp) / "body.bin"
        log_path = pathlib.Path(tmp) / "requests.log"
        body_path.write_bytes(grpc_frame(body))
        cmd = [
            h2load_path() or "h2load",
            "-n",
            str(count),
            "-c",
            str(connections),
            "-m",
            str(streams),
            "-t",
            "1",
            "-d",
            str(body_path),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--log-file",
            str(log_path),
            f"http://{target}{method}",
        ]
        cpu0 = _children_cpu()
        returncode, text, stderr = _run_pinned(cmd, cpus, timeout_s=timeout_s)
        cpu = _children_cpu() - cpu0
        if returncode != 0:
            raise RuntimeError(f"h2load failed ({returncode}): {stderr[-500:]}")
        latencies = []
        calls: list[tuple[float, float]] = []
        for line in log_path.read_text().splitlines():
            # Start (microseconds since the epoch), HTTP status, duration (microseconds).
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1] == "200":
                latencies.append(int(cols[2]) / 1e6)
                if timeline:
                    calls.append((int(cols[0]) / 1e6, int(cols[2]) / 1e6))
    fin, req, traffic = _FINISHED.search(text), _REQUESTS.search(text), _TRAFFIC.search(text)
    if not (fin and req and traffic):
        raise RuntimeError(f"cannot read h2load's output:\n{text[-1500:]}")
    wall = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    done, succeeded = int(req.group(3)), int(req.group(4))
    data = int(traffic.group(3))
    per_call = 5 + response_bytes
    # DATA bytes are exactly calls x (5-byte prefix + response) when every call was OK.
    errors: dict[str, int] = {}
    if done > succeeded:
        errors["HTTP_FAILED"] = done - succeeded
    ok = succeeded
    if data != succeeded * per_call:
        ok = min(succeeded, data // per_call)
        errors["GRPC_ERROR_OR_SIZE_MISMATCH"] = max(1, succeeded - ok)
        ok = succeeded - errors["GRPC_ERROR_OR_SIZE_MISMATCH"]
    return LoadResult(
        "h2load",
        done,
        ok,
        errors,
        wall,
        done / wall if wall > 0 else 0.0,
        percentiles(latencies),
        cpu,
        timeline=calls,
    )


def _pyload(
    target: str,
    method: str,
    body: bytes,
    *,
    count: int,
    concurrency: int,
    channels: int,
    timeout_s: float,
    cpus: set[int] | None = None,
    timeline: bool = False,
) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="staycheck-pyload-") as tmp:
        body_path = pathlib.Path(tmp) / "body.bin"
        body_path.write_bytes(body)
        cmd = [
            sys.executable,
            "-m",
            "bench.pyload",
            "--target",
            target,
            "--method",
            method,
            "--body",
            str(body_path),
            "--count",
            str(count),
            "--concurrency",
            str(concurrency),
            "--channels",
            str(channels),
            "--max-seconds",
            str(timeout_s),
            *(["--timeline"] if timeline else []),
        ]
        root = pathlib.Path(__file__).resolve().parent.parent
        cpu0 = _children_cpu()
        returncode, stdout, stderr = _run_pinned(cmd, cpus, timeout_s=timeout_s + 60, cwd=root)
        cpu = _children_cpu() - cpu0
    if returncode != 0:
        raise RuntimeError(f"bench.pyload failed ({returncode}): {stderr[-1500:]}")
    r = json.loads(stdout)
    return LoadResult(
        "python-aio",
        r["calls"],
        r["ok"],
        r["errors"],
        r["wall_s"],
        r["calls_per_s"],
        r["latency_s"],
        cpu,
        notes=[f"load generator's own CPU in its loop: {r['loadgen_cpu_s']:.2f} s"],
        timeline=[(start, latency) for start, latency in r.get("timeline", [])],
    )


def drive(
    target: str,
    method: str,
    body: bytes,
    *,
    count: int,
    concurrency: int = 64,
    connections: int = 16,
    tool: str = "auto",
    response_bytes: int,
    timeout_s: float = 600.0,
    cpus: set[int] | None = None,
    timeline: bool = False,
) -> LoadResult:
    """``count`` calls of ``method`` with ``body``, ``concurrency`` in flight; with
    ``cpus``, the load generator runs on those CPUs only; with ``timeline``, the result
    holds when each OK call started and how long it took."""
    if tool == "auto":
        tool = "h2load" if h2load_path() else "python"
    if tool == "h2load":
        streams = max(1, concurrency // connections)
        return _h2load(
            target,
            method,
            body,
            count=count,
            connections=connections,
            streams=streams,
            response_bytes=response_bytes,
            timeout_s=timeout_s,
            cpus=cpus,
            timeline=timeline,
        )
    return _pyload(
        target,
        method,
        body,
        count=count,
        concurrency=concurrency,
        channels=connections,
        timeout_s=timeout_s,
        cpus=cpus,
        timeline=timeline,
    )


def drive_http1(
    url: str,
    body: bytes,
    *,
    content_type: str,
    count: int,
    connections: int,
    response_bytes: int,
    timeout_s: float = 600.0,
    cpus: set[int] | None = None,
) -> LoadResult:
    """``count`` HTTP/1.1 POSTs of ``body`` to ``url`` with ``h2load --h1``, over
    ``connections`` keep-alive connections, one request in flight on each; with ``cpus``,
    h2load runs on those CPUs only. Errors: ``HTTP_FAILED`` (not done: reset, timeout),
    ``HTTP_<status>`` (done but not 200), ``SIZE_MISMATCH`` (200 but the body bytes are not
    calls x ``response_bytes``: at least that many answers were not OK ones; h2load does not
    log sizes, so the count is a lower bound)."""
    with tempfile.TemporaryDirectory(prefix="staycheck-h2load-") as tmp:
        body_path = pathlib.Path(tmp) / "body.bin"
        log_path = pathlib.Path(tmp) / "requests.log"
        body_path.write_bytes(body)
        cmd = [
            h2load_path() or "h2load", "--h1",
            "-n", str(count), "-c", str(connections), "-m", "1", "-t", "1",
            "-d", str(body_path), "-H", f"content-type: {content_type}",
            "--log-file", str(log_path), url,
        ]  # fmt: skip
        cpu0 = _children_cpu()
        returncode, text, stderr = _run_pinned(cmd, cpus, timeout_s=timeout_s)
        cpu = _children_cpu() - cpu0
        if returncode != 0:
            raise RuntimeError(f"h2load --h1 failed ({returncode}): {stderr[-500:]}")
        latencies = []
        statuses: dict[str, int] = {}
        for line in log_path.read_text().splitlines():
            cols = line.split("\t")
            if len(cols) >= 3:
                statuses[cols[1]] = statuses.get(cols[1], 0) + 1
                if cols[1] == "200":
                    latencies.append(int(cols[2]) / 1e6)
    fin, req, traffic = _FINISHED.search(text), _REQUESTS.search(text), _TRAFFIC.search(text)
    if not (fin and req and traffic):
        raise RuntimeError(f"cannot read h2load's output:\n{text[-1500:]}")
    wall = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    done = int(req.group(3))
    data = int(traffic.group(3))
    errors: dict[str, int] = {}
    if done < count:
        errors["HTTP_FAILED"] = count - done
    for status, n in statuses.items():
        if status != "200":
            errors[f"HTTP_{status}"] = n
    ok = statuses.get("200", 0)
    # Other statuses are errors already (their bodies are in ``data`` too): the sizes are
    # checked when every request that was done got a 200.
    if ok == done and data != ok * response_bytes:
        bad = max(1, ok - data // response_bytes)
        errors["SIZE_MISMATCH"] = bad
        ok -= bad
    return LoadResult(
        "h2load --h1",
        done,
        ok,
        errors,
        wall,
        done / wall if wall > 0 else 0.0,
        percentiles(latencies),
        cpu,
    )

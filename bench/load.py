"""``make load``: N concurrent clients for T seconds against a real server.

By default it starts its own ``staycheck serve`` on 127.0.0.1:0 following a TUF repository
that publishes 10 000 synthetic risk areas (``bench.data.server_files``), then runs
``--clients`` threads, each with its own :class:`staycheck.client.client.StayCheckClient`
(the shipped client, with its retry policy and its own connection), submitting varied
14-stay itineraries until ``--duration`` seconds have passed. Every answer is checked: the
status must be the one the matching rule gives locally for the same risk areas (the
repository's merged set, as servers merge it), and every ``--verify-every``-th token is
verified offline with the server's published keys and the request's binding. It reports OK
count, errors by gRPC code (plus ``WRONG_STATUS`` and ``BAD_TOKEN``), calls/s, p50/p99
latency and, for its own server, CPU per call and RSS before and after; it exits 1 if any
call failed.

    python -m bench.load                          # 50 clients, 60 s
    python -m bench.load --clients 10 --duration 5
    python -m bench.load --target 127.0.0.1:50051 # an already running server (no status check)

Only loopback targets are accepted. Calls are bounded by the deadline and ``--max-calls``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import pathlib
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from staycheck.client.client import StayCheckClient
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.itinerary import DEFAULT_LIMITS
from staycheck.geo.matching import evaluate
from staycheck.trust.keys import VerdictKeySet
from staycheck.trust.verifier import SubjectBinding, verify_token
from staycheck.v1 import verification_pb2 as pb

from bench import data as bdata
from bench.procs import ServerProcess, serve
from bench.stats import fmt_bytes, percentiles

LOOPBACK = ("127.", "localhost:", "[::1]:")


@dataclass
class Tally:
    deadline: float = 0.0
    """Set before the clients are released; read by them after the start barrier."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    issued: int = 0
    error_details: dict[str, str] = field(default_factory=dict)

    def take_ticket(self, max_calls: int) -> bool:
        with self.lock:
            if self.issued >= max_calls:
                return False
            self.issued += 1
            return True

    def error(self, code: str, detail: str) -> None:
        with self.lock:
            self.errors[code] += 1
            self.error_details.setdefault(code, detail[:200])


def _expected(bundle: RiskAreaBundle, reqs: list[Any], now: int) -> list[int]:
    """The status the matching rule gives each request, computed here."""
    from staycheck.server.service import stays_from_proto

    return [
        int(evaluate(stays_from_proto(r.itinerary, limits=DEFAULT_LIMITS), bundle, now=now))
        for r in reqs
    ]


def _client_loop(
    k: int,
    target: str,
    requests: list[pb.SubmitItineraryRequest],
    expected: list[int] | None,
    keys: VerdictKeySet,
    tally: Tally,
    *,
    max_calls: int,
    verify_every: int,
    timeout_s: float,
    start: threading.Barrier,
) -> None:
    # A local subchannel pool gives each client its own connection, as separate apps have.
    client = StayCheckClient(
        target, timeout_s=timeout_s, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        start.wait(timeout=60)
        deadline = tally.deadline
        i = k * 7919
        n = 0
        while time.monotonic() < deadline and tally.take_ticket(max_calls):
            j = i % len(requests)
            i += 1
            req = requests[j]
            t0 = time.perf_counter()
            try:
                resp = client.submit(req.itinerary, subject_binding=req.subject_binding)
            except grpc.RpcError as e:
                code = e.code().name if hasattr(e, "code") else "UNKNOWN"
                tally.error(code, str(e.details()) if hasattr(e, "details") else "")
                continue
            latency = time.perf_counter() - t0
            n += 1
            if expected is not None and resp.status != expected[j]:
                tally.error("WRONG_STATUS", f"request {j}: got {resp.status}, want {expected[j]}")
                continue
            if verify_every and n % verify_every == 0:
                try:
                    verdict = verify_token(
                        resp.token,
                        keys,
                        now=int(time.time()),
                        identity=SubjectBinding(req.subject_binding),
                    )
                    if int(verdict.status) != resp.status:
                        raise ValueError("token status differs from the response's")
                except Exception as e:  # any failure of an answered call is an error here
                    tally.error("BAD_TOKEN", f"{type(e).__name__}: {e}")
                    continue
            with tally.lock:
                tally.ok += 1
                tally.latencies.append(latency)
                tally.statuses[pb.VerdictStatus.Name(resp.status)] += 1
    finally:
        client.close()


@contextlib.contextmanager
def _own_server(
    areas: int, now: int
) -> Iterator[tuple[ServerProcess, RiskAreaBundle, bdata.Areas]]:
    """A server following a fresh repository of ``areas`` areas; the risk areas it serves,
    merged here from the repository the way servers merge them; the areas."""
    area_set = bdata.make_areas(areas, now=now, seed=1)
    with tempfile.TemporaryDirectory(prefix="staycheck-load-") as tmp:
        files = bdata.server_files(pathlib.Path(tmp) / "repository", area_set, now=now)
        merged = files.repository.merged(now=now)
        bundle = RiskAreaBundle.from_proto(merged, digest="the repository's merged set")
        with serve(pathlib.Path(tmp) / "server", files) as srv:
            yield srv, bundle, area_set


def run(args: argparse.Namespace) -> dict[str, Any]:
    now = int(time.time())
    with contextlib.ExitStack() as stack:
        srv: ServerProcess | None = None
        bundle: RiskAreaBundle | None = None
        if args.target:
            target = args.target
            area_set = bdata.make_areas(args.areas, now=now, seed=1)
        else:
            srv, bundle, area_set = stack.enter_context(_own_server(args.areas, now))
            target = srv.target
        maker = bdata.ItineraryMaker(area_set, now=now, seed=5)
        requests = [maker.request(hit=k % 5 == 0) for k in range(args.pool)]
        expected = _expected(bundle, requests, now) if bundle is not None else None
        try:
            with StayCheckClient(target, timeout_s=30) as c:
                keys = c.verdict_keys()
        except grpc.RpcError as e:
            raise SystemExit(f"load: cannot reach {target}: {e.code().name}") from None
        tally = Tally()
        start = threading.Barrier(args.clients + 1)
        rss0 = srv.rss_bytes() if srv else 0
        threads = [
            threading.Thread(
                target=_client_loop,
                args=(k, target, requests, expected, keys, tally),
                kwargs={
                    "max_calls": args.max_calls,
                    "verify_every": args.verify_every,
                    "timeout_s": args.timeout,
                    "start": start,
                },
                daemon=True,
            )
            for k in range(args.clients)
        ]
        for t in threads:
            t.start()
        cpu0 = srv.cpu_seconds() if srv else 0.0
        t0 = time.monotonic()
        tally.deadline = t0 + args.duration
        start.wait(timeout=60)  # every client has its channel: go
        for t in threads:
            t.join(timeout=max(1.0, tally.deadline - time.monotonic()) + args.timeout + 30)
        wall = time.monotonic() - t0
        cpu = (srv.cpu_seconds() - cpu0) if srv else 0.0
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            tally.error("CLIENT_STUCK", f"{stuck} client threads did not finish")
        lat = percentiles(tally.latencies)
        calls = tally.ok + sum(tally.errors.values())
        return {
            "target": target,
            "own_server": srv is not None,
            "areas": args.areas,
            "clients": args.clients,
            "duration_s": args.duration,
            "wall_s": wall,
            "ok": tally.ok,
            "errors": dict(tally.errors),
            "error_examples": tally.error_details,
            "statuses": dict(tally.statuses),
            "calls_per_s": calls / wall if wall > 0 else 0.0,
            "latency_s": lat,
            "server_cpu_per_call_s": cpu / calls if calls and srv else None,
            "server_rss_before": rss0 or None,
            "server_rss_after": srv.rss_bytes() if srv else None,
            "status_checked": expected is not None,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--areas", type=int, default=10_000, help="risk areas (default 10000)")
    p.add_argument("--target", help="HOST:PORT of a running server (loopback only)")
    p.add_argument("--pool", type=int, default=500, help="distinct itineraries (default 500)")
    p.add_argument("--verify-every", type=int, default=20, help="verify every Nth token offline")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    p.add_argument("--max-calls", type=int, default=5_000_000, help="stop after this many calls")
    p.add_argument("--json", type=pathlib.Path, help="also write the result here")
    args = p.parse_args(argv)
    if args.target and not args.target.startswith(LOOPBACK):
        p.error("--target must be a loopback address (127.0.0.0/8, localhost or [::1])")
    if not (1 <= args.clients <= 1000 and 0 < args.duration <= 3600 and args.pool >= 1):
        p.error("--clients within 1-1000, --duration within (0, 3600] s, --pool at least 1")
    print(
        f"load: {args.clients} clients for {args.duration:.0f} s against "
        f"{args.target or f'a fresh server with {args.areas} areas'}",
        flush=True,
    )
    r = run(args)
    lat = r["latency_s"]
    print(f"  OK        {r['ok']}  ({', '.join(f'{k} {v}' for k, v in r['statuses'].items())})")
    if r["errors"]:
        print("  errors    " + ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())))
        for code, detail in r["error_examples"].items():
            print(f"    e.g. {code}: {detail}")
    else:
        print("  errors    0")
    print(f"  calls/s   {r['calls_per_s']:.0f}")
    print(
        f"  latency   p50 {lat['p50'] * 1e3:.1f} ms, p99 {lat['p99'] * 1e3:.1f} ms,"
        f" max {lat['max'] * 1e3:.1f} ms"
    )
    if r["server_cpu_per_call_s"] is not None:
        print(
            f"  server    {r['server_cpu_per_call_s'] * 1e6:.0f} µs CPU per call, RSS "
            f"{fmt_bytes(r['server_rss_before'])} -> {fmt_bytes(r['server_rss_after'])}"
        )
    if not r["status_checked"]:
        print("  (statuses not checked: the target's risk areas are not known here)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    failed = bool(r["errors"]) or r["ok"] == 0
    print("FAIL" if failed else "PASS: no errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A Python load generator (grpc.aio), for when ``h2load`` is not installed.

Sends one fixed, already serialized request to one method with ``--concurrency`` calls in
flight over ``--channels`` connections until ``--count`` calls are done (or ``--max-seconds``
pass), and prints one JSON object: calls, OK count, errors by code, wall time, latency
percentiles, response size and its own CPU time (with ``--timeline``, also when each OK
call started and how long it took). It costs about as much CPU per call as the
server does, so ``bench.run`` reports the server's CPU per call, not calls/s, as the figure.

    python -m bench.pyload --target 127.0.0.1:PORT --method /pkg.Svc/Method \\
        --body request.bin --count 10000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import resource
import sys
import time
from collections import Counter

import grpc

from bench.stats import percentiles


async def _run(args: argparse.Namespace, body: bytes) -> dict[str, object]:
    channels = [grpc.aio.insecure_channel(args.target) for _ in range(args.channels)]
    calls = [
        ch.unary_unary(args.method, request_serializer=None, response_deserializer=None)
        for ch in channels
    ]
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []
    errors: Counter[str] = Counter()
    sizes: Counter[int] = Counter()
    issued = 0
    deadline = time.monotonic() + args.max_seconds

    async def worker(k: int) -> None:
        nonlocal issued
        call = calls[k % len(calls)]
        while issued < args.count and time.monotonic() < deadline:
            issued += 1
            started = time.time()
            t0 = time.perf_counter()
            try:
                response = await call(body, timeout=30)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if args.timeline:
                timeline.append((started, latencies[-1]))
            sizes[len(response)] += 1

    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(args.concurrency)))
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        for ch in channels:
            await ch.close(grace=None)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    done = len(latencies) + sum(errors.values())
    extra = {"timeline": timeline} if args.timeline else {}
    return {
        "calls": done,
        "ok": len(latencies),
        "errors": dict(errors),
        "wall_s": wall,
        "calls_per_s": done / wall if wall > 0 else 0.0,
        "latency_s": percentiles(latencies),
        "response_bytes": sizes.most_common(1)[0][0] if sizes else 0,
        "loadgen_cpu_s": cpu,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="127.0.0.1:PORT (loopback only)")
    p.add_argument("--method", required=True, help="/package.Service/Method")
    p.add_argument("--body", required=True, help="file with the serialized request message")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument(
        "--timeline", action="store_true", help="also list (start, latency) of each OK call"
    )
    args = p.parse_args(argv)
    if not args.target.startswith(("127.", "localhost:", "[::1]:")):
        p.error("--target must be a loopback address")
    body = pathlib.Path(args.body).read_bytes()
    result = asyncio.run(_run(args, body))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

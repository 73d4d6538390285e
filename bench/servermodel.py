"""Which gRPC server model costs least per call: data for the sync-vs-aio decision.

Each model runs in its own process, serving the standard health ``Check`` and the real
``SubmitItinerary`` handler (the servicer ``StayCheckServer`` wires, over ``--areas``
synthetic areas published in a TUF repository, ``bench.data.server_files``, that every
model's process refreshes from into a state dir of its own), and is measured like
``bench.run`` does: server CPU per call from /proc under ``h2load`` with 64 calls in
flight, plus calls/s; the server runs on all CPUs but the last, h2load on the last; the
median of ``--rounds`` rounds is kept.

    python -m bench.servermodel                       # sync:2 sync:4 sync:16 aio
    python -m bench.servermodel --models sync:16,aio --areas 100000

Models: ``sync:N`` is ``grpc.server`` with a thread pool of N (the server today uses 16);
``aio`` is ``grpc.aio.server`` running the same synchronous handler inline on the event
loop (CPU-bound work in a single-process worker; one process per core would scale it).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import time
from concurrent import futures
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from staycheck.v1 import verification_pb2 as pb

from bench import data as bdata
from bench.drive import call_raw, drive, h2load_path
from bench.procs import cpu_seconds, spawn, split_cpus
from bench.stats import fmt_duration, median
from tests import harness

HEALTH = "/grpc.health.v1.Health/Check"
SUBMIT = "/staycheck.v1.ItineraryVerification/SubmitItinerary"
OPTIONS = [("grpc.so_reuseport", 0)]
REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def _submit_service(method: Any) -> Any:
    import grpc

    return grpc.method_handlers_generic_handler(
        "staycheck.v1.ItineraryVerification", {"SubmitItinerary": method}
    )


def _serve_sync(handler: Any, workers: int) -> None:
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
    hs = health.HealthServicer()
    hs.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    method = grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=pb.SubmitItineraryRequest.FromString,
        response_serializer=pb.SubmitItineraryResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((_submit_service(method),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination(timeout=3600)


async def _serve_aio(handler: Any) -> None:
    import grpc

    server = grpc.aio.server(options=OPTIONS)
    hs = health.aio.HealthServicer()  # type: ignore[attr-defined]
    await hs.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)

    async def submit(request: Any, context: Any) -> Any:
        return handler(request, context)

    method = grpc.unary_unary_rpc_method_handler(
        submit,
        request_deserializer=pb.SubmitItineraryRequest.FromString,
        response_serializer=pb.SubmitItineraryResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((_submit_service(method),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination(timeout=3600)


def child(model: str, args: argparse.Namespace) -> int:
    import signal

    from bench.profile import submit_handler

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    handler = submit_handler(args.repository, args.trusted_root, args.root / "state")
    if model == "aio":
        asyncio.run(_serve_aio(handler))
    else:
        _serve_sync(handler, int(model.split(":", 1)[1]))
    return 0


def measure(
    model: str,
    root: pathlib.Path,
    files: harness.ServerFiles,
    body: bytes,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.servermodel", "--child", model, "--root", str(root)]
    cmd += ["--repository", str(files.served), "--trusted-root", str(files.trusted_root)]
    out: dict[str, Any] = {"model": model}
    health_body = health_pb2.HealthCheckRequest().SerializeToString()
    split = split_cpus()
    server_cpus, loadgen_cpus = split if split else (None, None)
    # The child runs in ``root``: it finds ``bench`` (and ``tests``) through PYTHONPATH.
    env = {"PYTHONPATH": str(REPOSITORY)}
    with spawn(cmd, root, cpus=server_cpus, env=env) as (proc, port, _):
        target = f"127.0.0.1:{port}"
        for name, method, req in (("health", HEALTH, health_body), ("submit", SUBMIT, body)):
            size = len(call_raw(target, method, req))
            warm = drive(target, method, req, count=1000, response_bytes=size, cpus=loadgen_cpus)
            count = int(max(500, min(200_000, warm.calls_per_s * seconds)))
            per_call, rates = [], []
            for _ in range(rounds):
                c0 = cpu_seconds(proc.pid)
                r = drive(target, method, req, count=count, response_bytes=size, cpus=loadgen_cpus)
                if r.errors:
                    raise RuntimeError(f"{model} {name}: {r.errors}")
                per_call.append((cpu_seconds(proc.pid) - c0) / r.calls)
                rates.append(r.calls_per_s)
            out[name] = {"cpu_per_call_s": median(per_call), "calls_per_s": median(rates)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.servermodel", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--models", default="sync:2,sync:4,sync:16,aio")
    p.add_argument("--areas", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--root", type=pathlib.Path, help=argparse.SUPPRESS)
    p.add_argument("--repository", help=argparse.SUPPRESS)
    p.add_argument("--trusted-root", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args)
    if not h2load_path():
        print("h2load is not installed: apt-get install nghttp2-client")
        return 2
    now = int(time.time())
    areas = bdata.make_areas(args.areas, now=now)
    body = bdata.ItineraryMaker(areas, now=now).request().SerializeToString()
    print(
        f"server models, {args.areas} areas, 64 in flight over 16 connections (h2load),"
        f" server and h2load on separate CPUs\n"
    )
    print(
        f"{'model':<8} {'health CPU/call':>16} {'submit CPU/call':>16} {'ratio':>6}"
        f" {'health/s':>9} {'submit/s':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="staycheck-models-") as tmp:
        files = bdata.server_files(pathlib.Path(tmp) / "repository", areas, now=now)
        for model in args.models.split(","):
            root = pathlib.Path(tmp) / model.replace(":", "-")
            root.mkdir()
            r = measure(model, root, files, body, args.seconds, args.rounds)
            h, s = r["health"], r["submit"]
            print(
                f"{model:<8} {fmt_duration(h['cpu_per_call_s']):>16}"
                f" {fmt_duration(s['cpu_per_call_s']):>16}"
                f" {s['cpu_per_call_s'] / h['cpu_per_call_s']:>6.2f}"
                f" {h['calls_per_s']:>9.0f} {s['calls_per_s']:>9.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

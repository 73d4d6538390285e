"""Where the time of one SubmitItinerary call goes.

Three views (run from the repository root; always as a module, since a script named
``profile.py`` would shadow the standard library's ``profile`` that ``cProfile`` imports):

    python -m bench.profile                # stage table + pyinstrument (or cProfile)
    python -m bench.profile --live         # py-spy on a real server under h2load load

- **stages**: the handler path split into its steps (parse, convert, validate, match,
  issue, CBOR, Ed25519, COSE, base45, response, serialize), each timed alone over the same
  varied requests, in microseconds per call, against ``--areas`` areas published in a TUF
  repository (``bench.data.server_files``) and merged as servers merge them;
- **in-process profile**: the whole path (request bytes -> the real servicer's
  ``SubmitItinerary`` of a server that refreshed from that repository -> response bytes)
  under pyinstrument when installed, else cProfile;
- **live** (``--live``): a real ``staycheck serve`` process under ``h2load`` load, sampled
  by ``py-spy`` (``pip install py-spy``; needs ptrace, as root here), every thread, so the
  gRPC runtime's own Python (``grpc._server``, thread pool) shows too. Samples are summed by
  leaf function and by package.

Pure measurement: it changes nothing and talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.itinerary import DEFAULT_LIMITS, validate
from staycheck.geo.matching import evaluate, evaluate_batch
from staycheck.trust import cose
from staycheck.trust.base45 import b45encode
from staycheck.trust.binding import DEFAULT_PARAMETERS
from staycheck.trust.keys import Ed25519Signer
from staycheck.trust.verdict import TokenSigner, issue_verdict
from staycheck.v1 import verification_pb2 as pb

from bench import data as bdata
from bench.inproc import CHUNK

ISSUER = "110000"


class _Context:
    """The least of a ``grpc.ServicerContext`` the handler may touch."""

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"handler aborted: {code}: {details}")

    def is_active(self) -> bool:
        return True

    def set_code(self, code: Any) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass


def _per_call_us(fn: Callable[[Any], object], items: Sequence[Any], n: int) -> float:
    """Mean CPU time of this thread per call of ``fn``, microseconds, over ``n`` calls
    cycling ``items`` (CPU, not wall time, so other processes do not inflate it)."""
    k = len(items)
    for i in range(min(n, 200)):
        fn(items[i % k])
    t0 = time.thread_time()
    for i in range(n):
        fn(items[i % k])
    return (time.thread_time() - t0) / n * 1e6


def stage_table(bundle: Any, requests: list[pb.SubmitItineraryRequest], now: int, n: int) -> None:
    from staycheck.server.service import stays_from_proto

    raws = [r.SerializeToString() for r in requests]
    msgs = [pb.SubmitItineraryRequest.FromString(r) for r in raws]
    stays = [stays_from_proto(m.itinerary, limits=DEFAULT_LIMITS) for m in msgs]
    policy = bundle.policy
    signer = Ed25519Signer.generate()
    key = Ed25519PrivateKey.generate()
    token_signer = TokenSigner(signer)
    protected = cose.encode_protected({cose.HEADER_ALG: signer.alg, cose.HEADER_KID: signer.kid})
    statuses = [evaluate(s, bundle, now=now) for s in stays]

    def issue(i: int) -> Any:
        return issue_verdict(
            statuses[i],
            now=now,
            issuer=ISSUER,
            riskset_version=bundle.version,
            bundle_expires_at=bundle.expires_at,
            binding=msgs[i].subject_binding,
            binding_params=DEFAULT_PARAMETERS if msgs[i].subject_binding else None,
        )

    idx = list(range(len(requests)))
    verdicts = [issue(i) for i in idx]
    payloads = [cbor2.dumps(v.claims(), canonical=True) for v in verdicts]
    tbs = [cose.sig_structure(protected, p) for p in payloads]
    sigs = [key.sign(t) for t in tbs]
    sign1s = [cose.encode_sign1(protected, p, s) for p, s in zip(payloads, sigs, strict=True)]
    tokens = [token_signer.sign(v) for v in verdicts]

    w0 = now - policy.window_s

    def located_arrays(its: list[Any]) -> Any:
        """Every located stay, clipped: what the index query gets for these itineraries."""
        located = [x for x in its if x.location is not None]
        coords = np.array([x.location[::-1] for x in located], dtype=np.float64)
        starts = np.array([max(x.arrival, w0) for x in located], dtype=np.int64)
        ends = np.array([min(x.departure, now) for x in located], dtype=np.int64)
        return coords, starts, ends

    arrays = [located_arrays(s) for s in stays]
    chunks = [stays[k : k + CHUNK] for k in range(0, len(stays) - CHUNK + 1, CHUNK)]
    chunk_arrays = [located_arrays([x for it in c for x in it]) for c in chunks]
    index = bundle.index

    def point_hits(a: Any) -> object:
        return index.point_hits(*a)

    def batch(c: list[Any]) -> object:
        return evaluate_batch(c, bundle, now=now)

    def response(i: int) -> pb.SubmitItineraryResponse:
        v = verdicts[i]
        return pb.SubmitItineraryResponse(
            status=pb.VerdictStatus.ValueType(v.status),
            token=tokens[i],
            issued_at=Timestamp(seconds=v.issued_at),
            expires_at=Timestamp(seconds=v.expires_at),
            riskset_version=v.riskset_version,
        )

    responses = [response(i) for i in idx]
    lim = DEFAULT_LIMITS

    def convert(m: Any) -> object:
        return stays_from_proto(m.itinerary, limits=lim)

    def claims_cbor(v: Any) -> bytes:
        return bytes(cbor2.dumps(v.claims(), canonical=True))

    def sign1(i: int) -> bytes:
        return cose.encode_sign1(protected, payloads[i], sigs[i])

    steps: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        ("request bytes -> message (FromString)", pb.SubmitItineraryRequest.FromString, raws),
        ("message -> Stay list (stays_from_proto)", convert, msgs),
        ("validate", lambda s: validate(s, now=now, limits=lim), stays),
        ("evaluate (whole match)", lambda s: evaluate(s, bundle, now=now), stays),
        ("  NumPy arrays of the located stays", located_arrays, stays),
        ("  point_hits (points, STRtree query, mask)", point_hits, arrays),
        (f"  evaluate_batch of {CHUNK}, per itinerary", batch, chunks),
        (f"  point_hits of {CHUNK} itineraries, per itinerary", point_hits, chunk_arrays),
        ("issue_verdict (incl. 16 random bytes)", issue, idx),
        ("TokenSigner.sign (whole)", token_signer.sign, verdicts),
        ("  claims() + cbor2.dumps(canonical)", claims_cbor, verdicts),
        ("  sig_structure (cbor2)", lambda p: cose.sig_structure(protected, p), payloads),
        ("  Ed25519 sign", key.sign, tbs),
        ("  encode_sign1 (cbor2 + tag)", sign1, idx),
        ("  base45 encode", b45encode, sign1s),
        ("response message (+2 Timestamps)", response, idx),
        ("response -> bytes (SerializeToString)", lambda r: r.SerializeToString(), responses),
    ]
    rows = [
        (name, _per_call_us(fn, items, n) / (CHUNK if f"of {CHUNK}" in name else 1))
        for name, fn, items in steps
    ]
    top = [us for name, us in rows if not name.startswith(" ")]
    print(
        f"\nStages of one SubmitItinerary ({len(bundle.index)} flagged areas indexed, "
        f"{len(requests)} varied 14-stay itineraries, mean thread CPU time of {n} calls each):\n"
    )
    for name, us in rows:
        share = "" if name.startswith(" ") else f"{us / sum(top) * 100:5.1f} %"
        print(f"  {name:<44} {us:8.1f} µs  {share}")
    print(f"  {'sum of the top-level stages':<44} {sum(top):8.1f} µs")
    sizes = [len(t) for t in tokens]
    print(f"\n  token: {min(sizes)}-{max(sizes)} characters; request {len(raws[0])} bytes")


def submit_handler(repository: str, trusted_root: pathlib.Path, state_dir: pathlib.Path) -> Any:
    """The real servicer's SubmitItinerary, wired by StayCheckServer (not started) over the
    risk areas of ``repository`` (refreshed once, as ``start`` would)."""
    from staycheck.server.app import StayCheckServer
    from staycheck.server.config import ServerConfig

    cfg = ServerConfig(
        listen="127.0.0.1:0",
        repository=repository,
        trusted_root_path=trusted_root,
        state_dir=state_dir,
        issuer=ISSUER,
    )
    srv = StayCheckServer(cfg)
    result = srv.bundles.reload()
    if not result.accepted:
        raise RuntimeError(f"the repository was refused: {result.reason}")
    servicer = getattr(srv, "servicer", None)
    if servicer is None:  # since the VerdictCore refactor the servicer wraps srv.core
        from staycheck.server.service import ItineraryVerificationServicer

        servicer = ItineraryVerificationServicer(srv.core)
    return servicer.SubmitItinerary


def in_process_profile(handler: Any, raws: list[bytes], n: int, *, tool: str) -> None:
    context = _Context()

    def work() -> None:
        k = len(raws)
        for i in range(n):
            req = pb.SubmitItineraryRequest.FromString(raws[i % k])
            handler(req, context).SerializeToString()

    work()  # warm-up
    if tool == "auto":
        try:
            import pyinstrument  # noqa: F401

            tool = "pyinstrument"
        except ImportError:
            tool = "cprofile"
    if tool == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        work()
        profiler.stop()
        print(f"\nIn-process handler path, {n} calls (pyinstrument; times include its overhead):")
        print(profiler.output_text(unicode=True, color=False, show_all=False, short_mode=False))
    else:
        import cProfile  # here, not at the top: see the module docstring
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        work()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(f"\nIn-process handler path, {n} calls (cProfile, by own time):")
        print(out.getvalue())
    plain = time.thread_time()
    work()
    per_call = (time.thread_time() - plain) / n * 1e6
    print(f"handler path without a profiler: {per_call:.0f} µs CPU per call (one thread)")


# --- live: py-spy on a real server ---------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _package(file: str) -> str:
    f = file.replace("\\", "/")
    for key, name in (
        ("/grpc/", "grpc runtime (Python)"),
        ("cygrpc", "grpc runtime (Cython)"),
        ("/google/protobuf/", "protobuf"),
        ("/shapely/", "shapely"),
        ("/numpy/", "numpy"),
        ("/cryptography/", "cryptography"),
        ("/cbor2/", "cbor2"),
        ("/concurrent/futures/", "thread pool"),
        ("threading.py", "threading"),
        ("queue.py", "thread pool"),
        ("/geo/", "staycheck geo"),
        ("/trust/", "staycheck trust (verdict, base45, cose)"),
        ("/client/", "staycheck client"),
        ("/server/", "staycheck server"),
        ("/grpc_health/", "grpc health"),
    ):
        if key in f:
            return name
    return "other: " + f.rsplit("/", 1)[-1]


def summarize_raw(path: pathlib.Path, top: int = 25) -> None:
    """Sum py-spy ``--format raw`` stacks by leaf function and by package of the leaf."""
    by_leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_pkg: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        m = _FRAME.match(leaf)
        file = m.group("file") if m else leaf
        by_leaf[_short(leaf)] += n
        by_pkg[_package(file)] += n
        for f in {_short(f) for f in frames}:
            inclusive[f] += n
    if not total:
        print("py-spy recorded no samples")
        return
    print(f"\n{total} samples\n\nBy package of the running function:")
    for name, n in by_pkg.most_common(15):
        print(f"  {n / total * 100:5.1f} %  {name}")
    print("\nBy running function (self):")
    for name, n in by_leaf.most_common(top):
        print(f"  {n / total * 100:5.1f} %  {name}")
    print("\nBy function on the stack (inclusive):")
    for name, n in inclusive.most_common(top):
        print(f"  {n / total * 100:5.1f} %  {name}")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    parts = file.split("/")
    for anchor in ("site-packages", "main", "lib"):
        if anchor in parts:
            file = "/".join(parts[parts.index(anchor) + 1 :])
            break
    return f"{m.group('func')} ({file})"


def live(areas: int, seconds: float, *, native: bool, rate: int, gil_only: bool) -> int:
    from bench.drive import call_raw, drive, h2load_path
    from bench.procs import serve

    pyspy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
    if not pathlib.Path(pyspy).exists():
        print("py-spy is not installed: pip install py-spy")
        return 2
    if not h2load_path():
        print("h2load is not installed: apt-get install nghttp2-client")
        return 2
    now = int(time.time())
    area_set = bdata.make_areas(areas, now=now)
    body = bdata.ItineraryMaker(area_set, now=now).request().SerializeToString()
    method = "/staycheck.v1.ItineraryVerification/SubmitItinerary"
    with tempfile.TemporaryDirectory(prefix="staycheck-profile-") as tmp:
        root = pathlib.Path(tmp)
        files = bdata.server_files(root / "repository", area_set, now=now)
        with serve(root / "server", files) as srv:
            size = len(call_raw(srv.target, method, body))
            warm = drive(srv.target, method, body, count=2000, response_bytes=size)
            count = int(min(500_000, warm.calls_per_s * (seconds + 5)))
            out = root / "pyspy.txt"
            cmd = [pyspy, "record", "--pid", str(srv.pid), "--duration", str(int(seconds))]
            cmd += ["--rate", str(rate), "--format", "raw", "--output", str(out)]
            cmd.append("--full-filenames")
            if not native:  # --native must pause the process to unwind its stacks
                cmd.append("--nonblocking")
            if gil_only:
                cmd.append("--gil")
            if native:
                cmd.append("--native")
            spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                time.sleep(1.0)
                result = drive(srv.target, method, body, count=count, response_bytes=size)
                spy.wait(timeout=seconds + 60)
            finally:
                if spy.poll() is None:
                    spy.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        spy.wait(timeout=10)
            log = spy.stdout.read().decode(errors="replace") if spy.stdout else ""
            print(
                f"Live server, {areas} areas, h2load {result.calls} calls at"
                f" {result.calls_per_s:.0f}/s, errors {result.errors or 'none'}"
            )
            if not out.exists():
                print(f"py-spy wrote nothing:\n{log[-1500:]}")
                return 1
            summarize_raw(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--areas", type=int, default=10_000, help="risk areas (default 10000)")
    p.add_argument("--calls", type=int, default=3000, help="calls per stage and profile")
    p.add_argument("--tool", choices=["auto", "pyinstrument", "cprofile"], default="auto")
    p.add_argument("--live", action="store_true", help="py-spy on a real server under load")
    p.add_argument("--seconds", type=float, default=10.0, help="--live: sampling time")
    p.add_argument("--rate", type=int, default=250, help="--live: samples per second")
    p.add_argument("--native", action="store_true", help="--live: include native frames")
    p.add_argument(
        "--all",
        action="store_true",
        help="--live: sample threads without the GIL too (default: GIL holders only)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.calls <= 1_000_000 or not 1 <= args.seconds <= 300:
        p.error("--calls within 1-1000000, --seconds within 1-300")
    if args.live:
        return live(
            args.areas, args.seconds, native=args.native, rate=args.rate, gil_only=not args.all
        )
    now = int(time.time())
    area_set = bdata.make_areas(args.areas, now=now)
    maker = bdata.ItineraryMaker(area_set, now=now, seed=3)
    requests = [maker.request(hit=k % 5 == 0) for k in range(256)]
    with tempfile.TemporaryDirectory(prefix="staycheck-profile-") as tmp:
        root = pathlib.Path(tmp)
        files = bdata.server_files(root / "repository", area_set, now=now)
        merged = files.repository.merged(now=now)
        bundle = RiskAreaBundle.from_proto(merged, digest="the repository's merged set")
        stage_table(bundle, requests, now, args.calls)
        handler = submit_handler(str(files.served), files.trusted_root, root / "state")
        in_process_profile(
            handler, [r.SerializeToString() for r in requests], args.calls, tool=args.tool
        )
    return 0


if __name__ == "__main__":
    if not __package__:
        sys.exit("run as: python -m bench.profile (from the repository root)")
    sys.exit(main())

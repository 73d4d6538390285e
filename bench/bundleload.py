"""Figure 5, run in a fresh process for isolation: a server's first refresh of the risk-area
repository, or the baseline decode of the same merged message, with time and memory as JSON.

    python -m bench.bundleload --repository DIR --trusted-root ROOT.json --state-dir DIR \\
        [--save-merged FILE]
    python -m bench.bundleload --baseline FILE

Everything the server imports is imported first, so the RSS before is the interpreter and
its libraries. The refresh is what ``StayCheckServer.start`` does before it serves:
``staycheck.server.bundles.RepositoryBundles.reload`` over a new
``staycheck.server.follower.RepositoryFollower`` with an empty state dir (nothing trusted
yet but ``ROOT.json``, read before the clock starts): TUF's whole update (root, timestamp,
snapshot, targets and every department's role), the download of the policy and of every
department's areas file with their lengths and hashes checked, the merge, then
``RiskAreaBundle.from_proto`` (every invariant and the STRtree index). Reported: its wall
time, the follower's share of it (``refresh_s``; the rest, ``index_s``, is the index
build), RSS (VmRSS) before and after and the peak (VmHWM). ``--save-merged`` then writes the
merged message (after the memory readings).

``--baseline``: the same merged message from FILE (read before the clock) decoded the way a
server did before the repository, ``RiskAreaBundle.from_payload`` (protobuf parse, the
invariants and the index, no TUF), with its time and memory the same way, and the bare
protobuf parse (the floor of "parse").
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import pathlib
import sys
import time

import grpc  # noqa: F401  (imported as the server does, so the RSS baseline includes it)
import numpy  # noqa: F401
import shapely  # noqa: F401
import staycheck.server.app  # noqa: F401
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.server.bundles import RepositoryBundles
from staycheck.server.follower import Refreshed, RepositoryFollower
from staycheck.v1 import bundle_pb2


def _self_kib(key: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _memory(rss_before: int) -> dict[str, int]:
    gc.collect()
    rss_after = _self_kib("VmRSS") * 1024
    return {
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_growth": rss_after - rss_before,
        "rss_peak": _self_kib("VmHWM") * 1024,
    }


class _TimedFollower(RepositoryFollower):
    """The real follower; it also notes how long its refreshes took and what the last gave."""

    refresh_s = 0.0
    last: Refreshed | None = None

    def refresh(self, *, now: int) -> Refreshed:
        t0 = time.perf_counter()
        self.last = super().refresh(now=now)
        self.refresh_s += time.perf_counter() - t0
        return self.last


def refresh(args: argparse.Namespace) -> dict[str, object]:
    trusted_root = pathlib.Path(args.trusted_root).read_bytes()
    state_dir = pathlib.Path(args.state_dir)
    gc.collect()
    rss_before = _self_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    follower = _TimedFollower(state_dir, args.repository, trusted_root=trusted_root)
    bundles = RepositoryBundles(follower, clock=lambda: int(time.time()))
    result = bundles.reload()
    load_s = time.perf_counter() - t0
    if not result.accepted or follower.last is None:
        raise SystemExit(f"the repository was refused: {result.reason}")
    bundle = bundles.bundle_for(int(time.time()))  # serving: what a call would match against
    out: dict[str, object] = {
        "areas": bundle.area_count,
        "departments": len(follower.last.departments),
        "snapshot_version": follower.last.snapshot_version,
        "load_s": load_s,
        "refresh_s": follower.refresh_s,
        "index_s": load_s - follower.refresh_s,
        "downloaded_bytes": sum(p.stat().st_size for p in state_dir.rglob("*") if p.is_file()),
    }
    out.update(_memory(rss_before))
    if args.save_merged:
        merged = follower.last.bundle.SerializeToString(deterministic=True)
        pathlib.Path(args.save_merged).write_bytes(merged)
        out["merged_bytes"] = len(merged)
    return out


def baseline(args: argparse.Namespace) -> dict[str, object]:
    gc.collect()
    rss_before = _self_kib("VmRSS") * 1024
    path = pathlib.Path(args.baseline)
    payload = path.read_bytes()
    t0 = time.perf_counter()
    bundle = RiskAreaBundle.from_payload(payload, digest=hashlib.sha256(payload).hexdigest())
    load_s = time.perf_counter() - t0
    out: dict[str, object] = {"areas": bundle.area_count, "bytes": len(payload), "load_s": load_s}
    del payload
    out.update(_memory(rss_before))
    payload = path.read_bytes()  # after the memory readings: a second copy
    t0 = time.perf_counter()
    bundle_pb2.RiskAreaBundle.FromString(payload)
    out["protobuf_parse_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", help="the repository's folder or URL")
    p.add_argument("--trusted-root", help="the root.json to start from")
    p.add_argument("--state-dir", help="an empty folder for TUF's trusted metadata")
    p.add_argument("--save-merged", metavar="FILE", help="write the merged message here")
    p.add_argument("--baseline", metavar="FILE", help="decode this merged message instead")
    args = p.parse_args(argv)
    if args.baseline:
        result = baseline(args)
    elif args.repository and args.trusted_root and args.state_dir:
        result = refresh(args)
    else:
        p.error("--repository, --trusted-root and --state-dir, or --baseline FILE")
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figure 5, run in a fresh process for isolation: load one signed bundle file and report
time and memory as JSON.

    python -m bench.bundleload --bundle FILE --authority-key PUB.pem --now UNIX

Everything the server imports is imported first, so the RSS before loading is the
interpreter and its libraries; the bundle file is read before the clock starts. Reported:
``staycheck.trust.bundles.TrustedBundleSet.update`` wall time (signature check + protobuf parse +
every invariant + STRtree index), and separately the bare COSE decode + Ed25519 verify, the bare
protobuf parse (the floor of "parse") and ``RiskAreaBundle.from_payload``; RSS (VmRSS)
before, after (file bytes dropped) and the peak (VmHWM).
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
from staycheck.geo.bundle import RiskAreaBundle
from staycheck.trust import cose
from staycheck.trust.bundles import TrustedBundleSet
from staycheck.trust.keys import AuthorityKeySet, KeySet, PublicKey
from staycheck.v1 import bundle_pb2


def _self_kib(key: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--authority-key", required=True)
    p.add_argument("--now", required=True, type=int)
    p.add_argument("--parts", action="store_true", help="also time the parts (after the load)")
    args = p.parse_args(argv)
    keys = AuthorityKeySet(
        KeySet([PublicKey.from_pem(pathlib.Path(args.authority_key).read_bytes())])
    )
    gc.collect()
    rss_before = _self_kib("VmRSS") * 1024
    path = pathlib.Path(args.bundle)
    data = path.read_bytes()
    trusted = TrustedBundleSet(keys)
    t0 = time.perf_counter()
    bundle = trusted.update(data, now=args.now)
    load_s = time.perf_counter() - t0
    result: dict[str, object] = {
        "areas": bundle.area_count,
        "file_bytes": len(data),
        "load_s": load_s,
    }
    del data
    gc.collect()
    rss_after = _self_kib("VmRSS") * 1024
    result.update(
        rss_before=rss_before,
        rss_after=rss_after,
        rss_growth=rss_after - rss_before,
        rss_peak=_self_kib("VmHWM") * 1024,
    )
    if args.parts:  # after the memory readings: these allocate a second copy
        data = path.read_bytes()
        t0 = time.perf_counter()
        sign1 = cose.decode_sign1(data, max_size=len(data))
        keys.verify(key_id=sign1.kid, signature=sign1.signature, data=sign1.to_be_signed(), at=0)
        result["verify_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        bundle_pb2.RiskAreaBundle.FromString(sign1.payload)
        result["protobuf_parse_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        RiskAreaBundle.from_payload(sign1.payload, digest=hashlib.sha256(data).hexdigest())
        result["from_payload_s"] = time.perf_counter() - t0
    assert trusted.current is bundle
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

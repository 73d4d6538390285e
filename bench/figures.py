"""What each figure of ``make bench`` is and how it is shown: its value and its baseline
from the same run, the ratio of the two, the target (issue 15's, where it set one) and
whether it is met, and the table that prints them.

It takes the measurements ``bench.run`` collected (plain dicts of numbers) and returns
``Figure`` objects; ``print_table`` prints them. It starts no server, drives no load, reads
no clock and writes no file: measuring and the JSON are ``bench.run``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bench.stats import fmt_bytes, fmt_duration, fmt_rate

MiB = 2**20


@dataclass
class Figure:
    """One row of the table: a measured ``value`` beside its ``baseline`` from the same
    run, their ``ratio``, and issue 5's ``target`` with whether it ``passed``."""

    key: str
    title: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""

    def with_target(self, target: str, passed: bool | None) -> Figure:
        """This figure with a ``target`` and whether it is met (None: not judged)."""
        return replace(self, target=target, passed=passed)

    def row(self) -> list[str]:
        def show(v: float | None) -> str:
            if v is None:
                return "-"
            if self.unit == "s":
                return fmt_duration(v)
            if self.unit == "/s":
                return fmt_rate(v)
            if self.unit == "B":
                return fmt_bytes(v)
            return f"{v:.3g} {self.unit}".strip()

        base = f"{show(self.baseline)} {self.baseline_name}".strip() if self.baseline_name else ""
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        verdict = {True: "PASS", False: "MISS", None: ""}[self.passed]
        return [self.title, show(self.value), base, ratio, self.target, verdict]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _at_most(ratio: float | None, bound: float) -> bool | None:
    return None if ratio is None else ratio <= bound


def _at_least(ratio: float | None, bound: float) -> bool | None:
    return None if ratio is None else ratio >= bound


def _beside(
    key: str,
    title: str,
    value: float | None,
    unit: str,
    baseline: float | None,
    baseline_name: str,
    note: str = "",
) -> Figure:
    """``value`` beside ``baseline``, with the ratio value / baseline."""
    ratio = _ratio(value, baseline)
    return Figure(key, title, value, unit, baseline, baseline_name, ratio, note=note)


def _compare(
    key: str,
    title: str,
    metric: str,
    unit: str,
    measured: tuple[dict[str, Any], dict[str, Any]],
    baseline_name: str,
    note: str = "",
) -> Figure:
    """``metric`` of the first of ``measured`` beside the same metric of the second."""
    subject, baseline = measured
    return _beside(key, title, subject[metric], unit, baseline[metric], baseline_name, note)


def build_figures(res: dict[str, Any], *, concurrency: int) -> list[Figure]:
    """The rows of the table, in order, from the measurements of ``bench.run``
    (``concurrency``: the calls in flight, for a title)."""
    figs: list[Figure] = []
    servers: dict[int, dict[str, Any]] = res["servers"]
    mid = servers.get(10_000) or servers[sorted(servers)[len(servers) // 2]]
    pair = mid["submit"], mid["health"]
    check = "health Check"
    title = f"1 SubmitItinerary server CPU/call ({mid['areas']} areas)"
    f = _compare("1.cpu_per_call", title, "cpu_per_call_s", "s", pair, check)
    figs.append(f.with_target("≤ 1.6 × Check", _at_most(f.ratio, 1.6)))
    title = f"  calls/s, {concurrency} in flight"
    note = "shares the cores with the load generator"
    figs.append(_compare("1.calls_per_s", title, "calls_per_s", "/s", pair, check, note))
    for q in ("p50", "p99"):
        figs.append(
            _compare(f"1.latency_{q}", f"  latency {q}", f"latency_{q}_s", "s", pair, check)
        )
    scrub = res.get("scrub_freed_memory")
    if scrub is not None:  # informational (issue 13): what scrubbing freed memory costs
        title = "1 SubmitItinerary CPU/call, --scrub-freed-memory"
        pair = scrub["submit"], mid["submit"]
        note = "the cost of scrubbing"
        figs.append(
            _compare("1.scrub_cpu_per_call", title, "cpu_per_call_s", "s", pair, "plain", note)
        )
    ns = sorted(servers)
    for n in ns:
        title = f"2 SubmitItinerary CPU/call, {n} areas"
        pair = servers[n]["submit"], servers[n]["health"]
        figs.append(_compare(f"2.cpu_per_call_{n}", title, "cpu_per_call_s", "s", pair, check))
    if len(ns) > 1:
        title = f"2 CPU/call at {ns[-1]} vs {ns[0]} areas"
        pair = servers[ns[-1]]["submit"], servers[ns[0]]["submit"]
        f = _compare("2.growth", title, "cpu_per_call_s", "s", pair, f"at {ns[0]} areas")
        figs.append(f.with_target("≤ 1.1 ×", _at_most(f.ratio, 1.1)))
    stream = res.get("partner_stream")
    ms = res["match_sign"]
    sign, raw_sign = ms["raw_sign"], "raw Ed25519 signs/s"
    if stream is not None:
        v = stream["verdicts_per_core_s"]
        title = "3 Partner stream verdicts/s per server core"
        f = _beside("3.stream", title, v, "/s", sign["per_s"], raw_sign)
        met = v >= 12_000 and f.ratio is not None and f.ratio >= 0.4
        figs.append(f.with_target("≥ 12 000 /s, ≥ 0.4 × raw", met))
    title = "3 match + sign verdicts/s per core (in-process)"
    note = "no gRPC: the stream's own work, chunks of 64"
    f = _compare("3.match_sign", title, "per_s", "/s", (ms["match_sign"], sign), raw_sign, note)
    figs.append(f.with_target("≥ 20 000 /s", ms["match_sign"]["per_s"] >= 20_000))
    title = "  parse+validate+match+sign+encode per core"
    figs.append(_compare("3.full_item", title, "per_s", "/s", (ms["full_item"], sign), raw_sign))
    if "match_sign_single" in ms:
        title = "  match + sign one itinerary at a time"
        pair = ms["match_sign_single"], ms["match_sign_chunked"]
        note = "evaluate per item, beside evaluate_batch of 64"
        figs.append(_compare("3.match_sign_single", title, "per_s", "/s", pair, "chunks", note))
    # Issue 12: the verdict key on a SoftHSM2 token beside the key file, same run (no target:
    # a software token in this process is not an HSM's latency, but it is the PKCS#11 path).
    hsm_stream = res.get("partner_stream_hsm")
    if hsm_stream is not None and stream is not None:
        title = "3 Partner stream verdicts/s per core, SoftHSM2 key"
        v = hsm_stream["verdicts_per_core_s"]
        base = stream["verdicts_per_core_s"]
        figs.append(_beside("3.stream_hsm", title, v, "/s", base, "key file, same run"))
    if "match_sign_hsm" in ms:
        title = "3 match + sign verdicts/s per core, SoftHSM2 key"
        pair = ms["match_sign_hsm"], ms["match_sign_file"]
        note = "PKCS#11 through PyKCS11 into SoftHSM2, in process"
        figs.append(_compare("3.match_sign_hsm", title, "per_s", "/s", pair, "key file", note))
        title = "  raw signs/s per core, SoftHSM2 (CKM_EDDSA)"
        pair = ms["raw_sign_hsm"], ms["raw_sign_file"]
        figs.append(_compare("3.raw_sign_hsm", title, "per_s", "/s", pair, "raw Ed25519, file"))
    vr = res["verify"]
    title = "4 Offline verify_token tokens/s (one core)"
    pair = vr["verify_token"], vr["raw_verify"]
    f = _compare("4.verify", title, "per_s", "/s", pair, "raw Ed25519 verifies/s")
    figs.append(f.with_target("≥ 0.90 × raw", _at_least(f.ratio, 0.90)))
    bg = res.get("binding_guesses")
    if bg is not None:
        title = "7 Binding guesses/s per core (Argon2id, 64 MiB)"
        argon2, plain = bg["argon2id"]["per_s"], bg["hmac_sha256"]["per_s"]
        years = 1e11 / argon2 / (365.25 * 86400)
        check_ms = bg["argon2id"]["wall_s"] * 1000
        note = (
            f"10^11 ID numbers: {years:,.0f} core-years (HMAC: {1e11 / plain / 3600:.0f} "
            f"core-hours); one check takes {check_ms:.0f} ms"
        )
        pair = bg["argon2id"], bg["hmac_sha256"]
        f = _compare("7.binding_guesses", title, "per_s", "/s", pair, "HMAC-SHA256 (before)", note)
        # The one bound here: a hotel verifies a presentation (one derivation) in < 150 ms.
        figs.append(f.with_target("check < 150 ms", check_ms < 150))
    rr = res["repository_refresh"]
    fresh, old = rr["refresh"], rr["baseline"]
    title = f"5 Repository refresh, {fresh['areas']} areas, {fresh['departments']} departments"
    note = (
        f"TUF + downloads + merge {fmt_duration(fresh['refresh_s'])}, index"
        f" {fmt_duration(fresh['index_s'])}; a fresh process, repository in a folder"
    )
    base = "same areas, no TUF (from_payload)"
    f = _beside("5.refresh_time", title, fresh["load_s"], "s", old["load_s"], base, note)
    figs.append(f.with_target("≤ 0.5 s (issue 15; 11: ≤ 2 s)", fresh["load_s"] <= 0.5))
    title = "  peak RSS of the refreshing process (VmHWM)"
    note = (
        f"before {fresh['rss_before'] / MiB:.0f} MiB, after {fresh['rss_after'] / MiB:.0f} MiB;"
        f" without TUF after {old['rss_after'] / MiB:.0f} MiB"
    )
    base = "same, no TUF"
    f = _beside("5.refresh_rss", title, fresh["rss_peak"], "B", old["rss_peak"], base, note)
    figs.append(f.with_target("≤ 200 MiB", fresh["rss_peak"] <= 200 * MiB))
    ul = res.get("refresh_under_load")
    if ul is not None:
        title = f"5 SubmitItinerary p99 during a refresh ({ul['areas']} areas)"
        note = (
            f"{ul['calls_during']} calls overlap the {fmt_duration(ul['refresh_wall_s'])}"
            f" refresh after one department published; closed loop, {concurrency} in flight"
        )
        if not ul["covered"]:
            note += "; NOT MEASURED: the load did not span the whole refresh"
        base = "same load, no refresh"
        f = _beside("5.refresh_p99", title, ul["p99_during_s"], "s", ul["p99_quiet_s"], base, note)
        figs.append(f.with_target("≤ 1.5 ×", _at_most(f.ratio, 1.5) if ul["covered"] else None))
    big, small = servers[ns[-1]], servers[ns[0]]
    title = f"5 Server peak RSS (VmHWM), {big['areas']} areas"
    note = f"RSS after the load test {big['server_rss'] / MiB:.0f} MiB"
    base = f"same with {small['areas']} areas"
    f = _compare("5.server_rss", title, "server_peak_rss", "B", (big, small), base, note)
    figs.append(f.with_target("≤ 300 MiB", big["server_peak_rss"] <= 300 * MiB))
    w1, w2 = res.get("workers1"), res.get("workers2")
    if w1 is not None and w2 is not None:
        pair = w2["submit"], w1["submit"]
        title = f"6 SubmitItinerary calls/s, 2 workers ({w2['areas']} areas)"
        note = "h2load shares the 2 cores here, so the target does not apply"
        f = _compare("6.workers", title, "calls_per_s", "/s", pair, "1 worker", note)
        figs.append(f.with_target("≥ 1.6 × (own cores)", None))
        title = "  server CPU/call, 2 workers"
        figs.append(_compare("6.workers_cpu", title, "cpu_per_call_s", "s", pair, "1 worker"))
    figs.extend(oblivious_figures(res.get("oblivious")))
    for threads, got in sorted((res.get("thread_sweep") or {}).items()):
        title = f"1 SubmitItinerary CPU/call, --max-workers {threads}"
        pair = got["submit"], got["health"]
        note = f"p99 {fmt_duration(got['submit']['latency_p99_s'])}; default 16"
        figs.append(
            _compare(f"1.threads_{threads}", title, "cpu_per_call_s", "s", pair, check, note)
        )
    figs.extend(planning_figures(mid, stream, res.get("method", {})))
    return figs


PEAK_VERDICTS_PER_S = 50_000
"""The morning peak a city's operator plans for (issue 15)."""


def planning_figures(
    mid: dict[str, Any], stream: dict[str, Any] | None, method: dict[str, Any]
) -> list[Figure]:
    """Cores for :data:`PEAK_VERDICTS_PER_S`, from the measured per-core figures of this
    run: unary calls at the server CPU per SubmitItinerary (figure 1: gRPC included), and
    partner streams at their verdicts per server core (figure 3). Server cores only: the
    load balancers, TLS termination and the clients are the operator's own sum."""
    how = method.get("load_generator", "h2load")
    pinning = method.get("pinning", "server on CPU 0, load on CPU 1")
    note = f"from this run's per-core figures; load {how}, {pinning}; server cores only"
    figs = []
    per_call = mid["submit"]["cpu_per_call_s"]
    if per_call:
        cores = PEAK_VERDICTS_PER_S * per_call
        title = f"9 Cores for {PEAK_VERDICTS_PER_S:,} verdicts/s, unary SubmitItinerary"
        figs.append(
            Figure(
                "9.cores_unary", title, cores, "cores", note=f"{per_call * 1e6:.0f} µs/call; {note}"
            )
        )
    if stream is not None and stream.get("verdicts_per_core_s"):
        cores = PEAK_VERDICTS_PER_S / stream["verdicts_per_core_s"]
        title = f"9 Cores for {PEAK_VERDICTS_PER_S:,} verdicts/s, partner streams"
        figs.append(Figure("9.cores_partner", title, cores, "cores", note=note))
    return figs


def oblivious_figures(ob: dict[str, Any] | None) -> list[Figure]:
    """Figure 8 (issue 14): the Oblivious HTTP gateway's server CPU per submission beside
    gRPC SubmitItinerary on the same server, per KDF/AEAD pair (target ≤ 1.5 ×); then, in
    process, the gateway's HPKE work per request beside one Ed25519 sign (no target)."""
    if ob is None:
        return []
    figs: list[Figure] = []
    grpc = ob["submit"]
    base = "gRPC SubmitItinerary"
    for key, suite in ob["suites"].items():
        title = f"8 Oblivious submit server CPU/call ({suite['aead']})"
        note = (
            f"{suite['kdf']} ({key}); HTTP/1.1 POSTs straight to the gateway (no relay),"
            f" {ob['http1_connections']} connections x 1; gRPC {ob['grpc_connections']}"
            f" connections, {ob['grpc_in_flight']} in flight; {ob['areas']} areas"
        )
        pair = suite, grpc
        f = _compare(f"8.cpu_per_call_{key}", title, "cpu_per_call_s", "s", pair, base, note)
        figs.append(f.with_target("≤ 1.5 × gRPC", _at_most(f.ratio, 1.5)))
    names = {key: suite["aead"] for key, suite in ob["suites"].items()}
    for key, rates in ob.get("encapsulation", {}).items():
        title = f"  HPKE open + seal per request ({names.get(key, key)}, in-process)"
        note = "GatewayKeys.decapsulate_request + encapsulate_response, one thread"
        value = 1 / rates["open_seal"]["per_s"] if rates["open_seal"]["per_s"] else None
        sign = 1 / rates["raw_sign"]["per_s"] if rates["raw_sign"]["per_s"] else None
        figs.append(_beside(f"8.hpke_{key}", title, value, "s", sign, "one Ed25519 sign", note))
    return figs


def print_table(figs: list[Figure]) -> None:
    """Print ``figs`` as a table under a header, each column as wide as its widest cell."""
    header = ["figure", "value", "baseline (same run)", "ratio", "target", ""]
    rows = [header] + [f.row() for f in figs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))

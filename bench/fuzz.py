"""Fuzz the request path and the token verifier for as long as asked (``make fuzz``).

    python -m bench.fuzz --seconds 600                  # both targets, time split evenly
    python -m bench.fuzz --seconds 300 --target token   # one target
    python -m bench.fuzz --seconds 60 --engine hypothesis

The targets and what counts as a finding are in ``tests/fuzz/targets.py`` (the same ones
``make test`` runs briefly): the request path from raw bytes to a verdict may raise only our
own errors (and protobuf's ``DecodeError`` when parsing), and refusals quote nothing of the
input; the token verifier may raise only ``SignedDataError`` and accept only what was signed.

Engines: atheris (coverage-guided libFuzzer, ``pip install atheris``) when it imports,
otherwise Hypothesis, run in rounds with fresh random seeds until the time is up. With
atheris each target runs in its own process (libFuzzer owns the process), seeded with
valid requests and tokens; a crashing input is written to ``bench/results/`` (ignored by
git) as ``fuzz-TARGET-crash-*``. Exit status: 0 when nothing was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
TARGETS = ("request", "token")


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# --- atheris --------------------------------------------------------------------------------


def atheris_worker(target: str, seconds: int, corpus: pathlib.Path) -> None:
    """Run one target under libFuzzer in this process (it exits when done)."""
    import atheris

    with atheris.instrument_imports(include=["staycheck", "tests.fuzz"]):
        from staycheck.trust.base45 import b45decode, b45encode

        from tests.fuzz import targets

    corpus.mkdir(parents=True, exist_ok=True)
    if target == "request":
        seeds = targets.seed_requests()

        def one_input(data: bytes) -> None:
            targets.request_path(data)

    else:
        seeds = [b45decode(targets.TOKEN[4:])]

        def one_input(data: bytes) -> None:
            # Most inputs are COSE bytes (so libFuzzer explores CBOR); some are raw text.
            if data[:1] == b"\x00":
                targets.token_path(data[1:].decode("utf-8", "replace"))
            else:
                targets.token_path("SC1:" + b45encode(data))

    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-artifact_prefix={RESULTS}/fuzz-{target}-",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_atheris(chosen: list[str], seconds: int) -> int:
    failed = 0
    per_target = max(seconds // len(chosen), 1)
    with tempfile.TemporaryDirectory(prefix="staycheck-fuzz-") as tmp:
        for target in chosen:
            print(f"atheris: {target} for {per_target} s", flush=True)
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    target,
                    "--seconds",
                    str(per_target),
                    "--corpus",
                    str(pathlib.Path(tmp) / target),
                ],
                cwd=ROOT,
                check=False,
            )
            if r.returncode != 0:
                print(f"atheris: {target}: FINDING (exit {r.returncode}), see {RESULTS}")
                failed += 1
            else:
                print(f"atheris: {target}: nothing found")
    return 1 if failed else 0


# --- Hypothesis -------------------------------------------------------------------------------


def run_hypothesis(chosen: list[str], seconds: int) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.fuzz import targets

    rounds = settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @rounds
    @given(st.binary(max_size=4096))
    def raw_requests(data: bytes) -> None:
        targets.request_path(data)

    @rounds
    @given(targets.requests())
    def structured_requests(request: object) -> None:
        targets.run_request(request)  # type: ignore[arg-type]

    @rounds
    @given(targets.tokens_any)
    def tokens(text: str) -> None:
        targets.token_path(text)

    tests = {"request": [raw_requests, structured_requests], "token": [tokens]}
    per_target = seconds / len(chosen)
    failed = 0
    for target in chosen:
        deadline = time.monotonic() + per_target
        n = 0
        while time.monotonic() < deadline:
            for test in tests[target]:
                try:
                    test()  # a fresh random seed each round
                except Exception:
                    traceback.print_exc()
                    print(f"hypothesis: {target}: FINDING (see the falsifying example above)")
                    failed += 1
                    deadline = 0
                    break
                n += 1
        print(f"hypothesis: {target}: {n} rounds of up to 2000 examples", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="total time (default 300)")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        atheris_worker(args.worker, args.seconds, args.corpus)
        return 0
    chosen = list(TARGETS) if args.target == "all" else [args.target]
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "hypothesis"
    if engine == "atheris" and not have_atheris():
        parser.error("atheris is not installed (pip install atheris)")
    print(f"fuzzing {', '.join(chosen)} with {engine} for {args.seconds} s", flush=True)
    if engine == "atheris":
        return run_atheris(chosen, args.seconds)
    return run_hypothesis(chosen, args.seconds)


if __name__ == "__main__":
    sys.exit(main())

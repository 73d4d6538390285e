"""Real server processes for benchmarks, and what the kernel says about them.

:func:`serve` starts ``staycheck serve`` (the console script beside this interpreter) on
``127.0.0.1:0`` with a fresh authority key, state dir and the given bundle, waits for its
``serving on HOST:PORT`` line and always terminates it (SIGTERM, then SIGKILL) on exit.
CPU time and RSS are read from ``/proc`` for the server and all its descendants, so a
pre-forked multi-worker server is measured whole.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from staycheck.trust.keys import Ed25519Signer

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_SERVING = re.compile(r"serving on (\S+):(\d+)")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (index 0 is field 3, state)."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its live descendants."""
    user = system = 0
    for p in descendants(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants, seconds."""
    return sum(cpu_times(pid))


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` and its live
    descendants (threads that have exited are not counted)."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    text = pathlib.Path(f"/proc/{p}/task/{task}/status").read_text()
                    for line in text.splitlines():
                        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
    return total


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (``VmRSS``, ``VmHWM``), KiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its live descendants, bytes."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += status_kib(p, "VmRSS") * 1024
    return total


def pin(pid: int, cpus: set[int] | None) -> None:
    """Run every thread of ``pid`` on ``cpus`` only; threads it starts later inherit it.
    Called right after the process is started (before it can have started threads) and
    again once it is ready."""
    if not cpus:
        return
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tasks:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(server CPUs, load generator CPUs): all but the last usable CPU, and the last;
    None on a single-CPU machine."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None
    return set(usable[:-1]), {usable[-1]}


def staycheck_command() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "staycheck"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "staycheck.cli.main"]


def serve_supports(flag: str) -> bool:
    """True if ``staycheck serve --help`` lists ``flag`` (e.g. ``--workers``)."""
    out = subprocess.run(
        [*staycheck_command(), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return flag in out.stdout


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    root: pathlib.Path
    authority: Ed25519Signer
    startup_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.pid)

    def context_switches(self) -> int:
        return context_switches(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def peak_rss_bytes(self) -> int:
        return sum(status_kib(p, "VmHWM") * 1024 for p in descendants(self.pid))

    def stderr_tail(self, lines: int = 20) -> str:
        path = self.root / "server.err"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = 15.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; never raises."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


@contextlib.contextmanager
def serve(
    root: pathlib.Path,
    bundle: bytes,
    authority: Ed25519Signer,
    *,
    issuer: str = "110000",
    extra_args: Sequence[str] = (),
    start_timeout_s: float = 120.0,
    cpus: set[int] | None = None,
) -> Iterator[ServerProcess]:
    """A ``staycheck serve`` subprocess on 127.0.0.1:0 serving ``bundle``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "authority.pub").write_bytes(authority.public_key.to_pem())
    (root / "bundle.cose").write_bytes(bundle)
    cmd = [
        *staycheck_command(),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--bundle",
        str(root / "bundle.cose"),
        "--authority-key",
        str(root / "authority.pub"),
        "--state-dir",
        str(root / "state"),
        "--issuer",
        issuer,
        "--log-level",
        "warning",
        *extra_args,
    ]
    with spawn(cmd, root, start_timeout_s=start_timeout_s, cpus=cpus) as (proc, port, startup_s):
        yield ServerProcess(proc, port, root, authority, startup_s)


@contextlib.contextmanager
def spawn(
    cmd: Sequence[str],
    root: pathlib.Path,
    *,
    start_timeout_s: float = 120.0,
    cpus: set[int] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int, float]]:
    """Run ``cmd`` (output to ``root``/server.out and .err) until it prints
    ``serving on HOST:PORT``; yields (process, port, startup seconds); always stops it.
    With ``cpus``, the process and every thread it starts run on those CPUs only."""
    out_path, err_path = root / "server.out", root / "server.err"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        # The server's own settings come from flags only: no STAYCHECK_* from this shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STAYCHECK_")}
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        pin(proc.pid, cpus)
    try:
        port = 0
        deadline = started + start_timeout_s
        while time.monotonic() < deadline:
            m = _SERVING.search(out_path.read_text(errors="replace"))
            if m:
                port = int(m.group(2))
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if not port:
            tail = err_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server did not start (exit {proc.poll()}):\n{tail}")
        pin(proc.pid, cpus)
        yield proc, port, time.monotonic() - started
    finally:
        stop_process(proc)

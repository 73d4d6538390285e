"""Real server processes for benchmarks, and what the kernel says about them.

:func:`serve` starts ``staycheck serve --repository DIR --trusted-root ROOT.json`` through the
one harness of tests and benchmarks (``tests/harness.py``: on ``127.0.0.1:0``, following the
served folder of a repository made by ``bench.data.server_files``, with a state dir of its
own, waits for its ``serving on HOST:PORT`` line and always terminates it, SIGTERM then
SIGKILL), and pins it to CPUs.
CPU time and RSS are read from ``/proc`` for the server and all its descendants, so a
pre-forked multi-worker server is measured whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from tests import harness

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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
    return list(harness.STAYCHECK)


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
class ServerProcess(harness.ServeProcess):
    """A served ``staycheck serve`` (tests/harness.py) and what /proc says about it."""

    @classmethod
    def of(cls, served: harness.ServeProcess) -> ServerProcess:
        return cls(**{f.name: getattr(served, f.name) for f in dataclasses.fields(served)})

    @property
    def startup_s(self) -> float:
        return self.started_s

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


@contextlib.contextmanager
def serve(
    root: pathlib.Path,
    files: harness.ServerFiles,
    *,
    issuer: str = "110000",
    extra_args: Sequence[str] = (),
    start_timeout_s: float = 120.0,
    cpus: set[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """A ``staycheck serve`` subprocess on 127.0.0.1:0 in ``root`` following ``files``'
    served repository, with its own state dir (``root``/state: it trusts nothing but the
    root yet, so it starts with a full refresh) and ``TMPDIR`` (``root``/tmp); its threads
    pinned to ``cpus`` (from its start, and again once it is ready); ``env`` is added to
    its environment (``SOFTHSM2_CONF`` for a verdict key on a token). Several servers may
    follow the same files, one after the other or at once."""
    own = dataclasses.replace(files, state_dir=root / "state")
    (root / "tmp").mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [*harness.STAYCHECK, *own.serve_args(issuer=issuer, log_level="warning")]
    with harness.spawn(
        [*command, *extra_args],
        root,
        env={"TMPDIR": str(root / "tmp"), **(env or {})},
        start_timeout_s=start_timeout_s,
        on_start=lambda pid: pin(pid, cpus),
        files=own,
    ) as served:
        pin(served.pid, cpus)
        yield ServerProcess.of(served)


@contextlib.contextmanager
def spawn(
    cmd: Sequence[str],
    root: pathlib.Path,
    *,
    start_timeout_s: float = 120.0,
    cpus: set[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], int, float]]:
    """Run ``cmd`` in ``root`` (tests/harness.py: output to ``root``/server.out and .err)
    until it prints ``serving on HOST:PORT``; yields (process, port, startup seconds);
    always stops it. With ``cpus``, the process and every thread it starts run on those
    CPUs only; ``env`` is added to its environment."""
    with harness.spawn(
        cmd, root, env=env, start_timeout_s=start_timeout_s, on_start=lambda pid: pin(pid, cpus)
    ) as served:
        pin(served.pid, cpus)
        yield served.proc, served.port, served.started_s

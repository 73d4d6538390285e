"""``staycheck serve`` as a real subprocess, for the canary and memory tests, and what they
read of it in ``/proc``.

:func:`serve_subprocess` is the one harness's :func:`tests.harness.serve_process`: a TUF
repository in ``root`` publishing the risk areas given (and the folder it is served from,
and its ``root.json``), the server on ``127.0.0.1:0`` following it, with its own state dir
and its own ``TMPDIR`` (both under ``root``), stdout kept, stderr in a file. With
``audited=True`` it runs through ``audited_serve.py`` (an audit hook installed before the
command line starts).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import struct
import sys
from collections.abc import Iterable, Iterator

import numpy as np

from tests import harness

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAUNCHER = HERE / "audited_serve.py"


ServeProcess = harness.ServeProcess


@contextlib.contextmanager
def serve_subprocess(
    root: pathlib.Path,
    *,
    areas: harness.Areas,
    audited: bool = False,
    log_level: str = "debug",
    issuer: str = "110000",
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[ServeProcess]:
    """``staycheck serve`` through the one harness (tests/harness.py), at DEBUG by default,
    optionally through the audit-hook launcher."""
    with harness.serve_process(
        root,
        areas=areas,
        issuer=issuer,
        log_level=log_level,
        extra_args=extra_args,
        launcher=[sys.executable, str(LAUNCHER)] if audited else None,
        env=extra_env,
    ) as served:
        yield served


def status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def tcp_sockets(pid: int) -> list[tuple[int, int, int]]:
    """``(local port, remote port, state)`` of the TCP sockets process ``pid`` holds open,
    from ``/proc``: a socket inode of ``/proc/PID/fd`` matched in ``/proc/PID/net/tcp{,6}``.
    State 0x0A is LISTEN, 0x01 ESTABLISHED."""
    inodes = set()
    fd_dir = pathlib.Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    found = []
    for name in ("tcp", "tcp6"):
        path = pathlib.Path(f"/proc/{pid}/net/{name}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if int(cols[9]) in inodes:
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                found.append((local_port, remote_port, int(cols[3], 16)))
    return found


def doubles_in_memory(pid: int, values: Iterable[float]) -> set[float]:
    """Which of ``values`` occur, as little-endian IEEE-754 doubles at any byte offset, in
    the anonymous memory of process ``pid`` (heap, stacks, anonymous mappings; not files
    mapped from disk), read through ``/proc/PID/mem`` (the test is its parent)."""
    by_bits = {struct.unpack("<Q", struct.pack("<d", v))[0]: v for v in values}
    wanted = np.array(sorted(by_bits), dtype=np.uint64)
    found: set[int] = set()
    with (
        open(f"/proc/{pid}/maps", encoding="ascii") as maps,
        open(f"/proc/{pid}/mem", "rb", buffering=0) as mem,
    ):
        for line in maps:
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if "r" not in fields[1] or (name and not name.startswith("[")):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue  # e.g. [vvar]
            for offset in range(8):
                count = (len(data) - offset) // 8
                if count > 0:
                    words = np.frombuffer(data, dtype="<u8", count=count, offset=offset)
                    # Positive doubles order as their bits do: a range test first (cheap),
                    # then the exact test on the few words inside the range.
                    near = words[(words >= wanted[0]) & (words <= wanted[-1])]
                    found.update(near[np.isin(near, wanted)].tolist())
    return {by_bits[b] for b in found}


# --- the processes of a server and the connections they accepted ---------------------------

LISTEN, ESTABLISHED = 0x0A, 0x01
"""TCP states in ``/proc/PID/net/tcp``."""


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (of any of its threads), from ``/proc``: the workers of
    ``staycheck serve --workers N`` under their supervisor."""
    found = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            found += [int(x) for x in (task / "children").read_text().split()]
    return sorted(found)


def listening_on(pids: Iterable[int], port: int) -> set[int]:
    """Which of ``pids`` hold a listening socket on ``port`` (several share it with
    ``SO_REUSEPORT``)."""
    return {
        pid
        for pid in pids
        if any(local == port and state == LISTEN for local, _, state in tcp_sockets(pid))
    }


def accepted_from(client: int, servers: Iterable[int], port: int) -> dict[int, set[int]]:
    """For each of ``servers``: the client-side ports of the connections that process
    ``client`` holds to ``port`` and that this server process accepted."""
    ours = {
        local
        for local, remote, state in tcp_sockets(client)
        if remote == port and state == ESTABLISHED
    }
    return {
        pid: {
            remote
            for local, remote, state in tcp_sockets(pid)
            if local == port and state == ESTABLISHED and remote in ours
        }
        for pid in servers
    }

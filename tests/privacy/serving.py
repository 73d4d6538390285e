"""``staycheck serve`` as a real subprocess, for the canary and memory tests.

:func:`serve_subprocess` writes the authority's public key and a bundle into ``root``, starts
the server on ``127.0.0.1:0`` with its own state dir and its own ``TMPDIR`` (both under
``root``), stdout on a pipe and stderr in a file, waits for the ``serving on`` line and
always ends the process. With ``audited=True`` it runs through ``audited_serve.py`` (an
audit hook installed before the command line starts).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from staycheck.trust.keys import Ed25519Signer

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAUNCHER = HERE / "audited_serve.py"
_sibling = pathlib.Path(sys.executable).parent / "staycheck"
STAYCHECK = str(_sibling) if _sibling.exists() else shutil.which("staycheck")
_SERVING = re.compile(r"serving on 127\.0\.0\.1:(\d+)")


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    port: int
    root: pathlib.Path
    state_dir: pathlib.Path
    tmp_dir: pathlib.Path
    stderr_path: pathlib.Path
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout_text(self) -> str:
        return "".join(self.stdout_lines)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_stdout(self, pattern: str, *, timeout: float = 10) -> re.Match[str] | None:
        """The first match of ``pattern`` in stdout, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.stdout_text())
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    def wait_for_stderr(self, needle: str, *, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr_text():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, wait; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def _pump(stream: object, lines: list[str], q: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
        q.put(line)
    q.put(None)


@contextlib.contextmanager
def serve_subprocess(
    root: pathlib.Path,
    *,
    authority: Ed25519Signer,
    bundle: bytes,
    audited: bool = False,
    log_level: str = "debug",
    issuer: str = "110000",
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[ServeProcess]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "authority.pub").write_bytes(authority.public_key.to_pem())
    (root / "bundle.cose").write_bytes(bundle)
    state_dir, tmp_dir = root / "state", root / "tmp"
    tmp_dir.mkdir(mode=0o700)
    stderr_path = root / "serve.stderr"
    args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--bundle",
        str(root / "bundle.cose"),
        "--authority-key",
        str(root / "authority.pub"),
        "--state-dir",
        str(state_dir),
        "--issuer",
        issuer,
        "--log-level",
        log_level,
        *extra_args,
    ]
    if audited:
        command = [sys.executable, str(LAUNCHER), *args]
    else:
        assert STAYCHECK, "the staycheck console script is not installed"
        command = [STAYCHECK, *args]
    hermetic = ("GRPC_", "AUDIT_", "STAYCHECK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hermetic)}
    env |= {"TMPDIR": str(tmp_dir), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=root,
            env=env,
        )
    try:
        lines: list[str] = []
        q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines, q), daemon=True).start()
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            try:
                line = q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no 'serving on' line within 30 s:\n{stderr_path.read_text()}"
                ) from None
            if line is None:
                raise AssertionError(f"serve exited ({proc.wait()}):\n{stderr_path.read_text()}")
            m = _SERVING.search(line)
            port = int(m.group(1)) if m else None
        yield ServeProcess(proc, port, root, state_dir, tmp_dir, stderr_path, lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


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

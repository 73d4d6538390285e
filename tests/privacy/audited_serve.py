"""Run the ``staycheck`` command line under an audit hook (a test tool, not shipped).

Usage: ``python tests/privacy/audited_serve.py serve --listen ... --state-dir DIR ...``,
i.e. the arguments of ``staycheck``. A ``sys.addaudithook`` hook is installed before
``staycheck.cli.main.main()`` runs. It is *armed* when the server prints its ``serving on`` line
(stdout is wrapped to see it), or at once when the environment has ``AUDIT_ARM=start``;
SIGUSR1 disarms it. While armed it reports to stderr, one line per event, ``AUDIT PID EVENT``
(the pid of the process that saw it):

- ``open`` for writing (a mode with ``w``, ``a``, ``x`` or ``+``, or flags with
  ``O_WRONLY``, ``O_RDWR``, ``O_CREAT``, ``O_APPEND`` or ``O_TRUNC``);
- file system changes: rename, replace, remove, mkdir, truncate, links, chmod, temp files;
- network: ``socket.connect``, ``sendto``, ``sendmsg``, ``bind`` and name lookups;
- new processes.

A line holds the event name, the open mode and flags, and a path *category* (``state``,
``tmp``, ``pycache``, ``dev``, ``proc``, ``fd``, ``other``), or the socket family: never a
path, an address or any other argument that could carry itinerary data. Events of Python
code only: what the C core of gRPC does directly is invisible here (the canary test checks
the state dir, the temp dir and the process's sockets for that).

Forked processes (the workers of ``staycheck serve --workers N``) keep the hook, the signal
handlers and the armed state they were forked with (an audit hook cannot be removed, and a
fork copies the interpreter). Their supervisor prints ``serving on`` once they are ready, so
arming and disarming are passed down: a process that arms (at ``serving on``, or on SIGUSR2)
sends SIGUSR2 to its children, and one that disarms (SIGUSR1) sends them SIGUSR1; each
reports its own ``armed`` and ``disarmed`` line. Nothing of this changes the product: the
server installs no SIGUSR1 or SIGUSR2 handler, and its supervisor forwards only SIGHUP,
SIGTERM and SIGINT.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import threading
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_FS_EVENTS = frozenset(
    {
        "os.rename",
        "os.replace",
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.truncate",
        "os.link",
        "os.symlink",
        "os.chmod",
        "os.chown",
        "os.utime",
        "shutil.copyfile",
        "shutil.copymode",
        "shutil.copystat",
        "shutil.move",
        "shutil.rmtree",
        "tempfile.mkstemp",
        "tempfile.mkdtemp",
    }
)
_NET_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.sendto",
        "socket.sendmsg",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
    }
)
_PROC_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}
)

# A plain flag, not a threading.Event: a fork copies it safely whatever other threads hold.
_armed = False
_busy = threading.local()


def _state_dir(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--state-dir" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
        if arg.startswith("--state-dir="):
            return os.path.abspath(arg.split("=", 1)[1])
    return None


_STATE = _state_dir(sys.argv[1:])
_TMP = os.path.abspath(os.environ["TMPDIR"]) if os.environ.get("TMPDIR") else None


def _category(path: Any) -> str:
    """Where a path points, as a word; never the path itself."""
    if isinstance(path, int):
        return "fd"
    try:
        text = os.path.abspath(os.fsdecode(path))
    except (TypeError, ValueError):
        return "other"
    if _STATE and (text == _STATE or text.startswith(_STATE + os.sep)):
        return "state"
    if _TMP and (text == _TMP or text.startswith(_TMP + os.sep)):
        return "tmp"
    if "__pycache__" in text:
        return "pycache"
    for prefix in ("/dev", "/proc"):
        if text == prefix or text.startswith(prefix + "/"):
            return prefix[1:]
    return "other"


def _report(line: str) -> None:
    os.write(2, f"AUDIT {os.getpid()} {line}\n".encode("ascii", "replace"))


def _describe(event: str, args: tuple[Any, ...]) -> str | None:
    """The AUDIT line for ``event``, or None if it is not one we report."""
    if event == "open":
        path, mode, flags = (*args, None, None, None)[:3]
        by_mode = isinstance(mode, str) and any(c in mode for c in "wax+")
        by_flags = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        if not (by_mode or by_flags):
            return None
        shown_mode = mode if isinstance(mode, str) and len(mode) <= 4 else "-"
        shown_flags = hex(flags) if isinstance(flags, int) else "-"
        return f"open mode={shown_mode} flags={shown_flags} path={_category(path)}"
    if event in _FS_EVENTS:
        return f"{event} path={_category(args[0]) if args else 'other'}"
    if event in _NET_EVENTS:
        family = getattr(args[0], "family", None) if args else None
        name = getattr(family, "name", "other")
        return f"{event} family={name if isinstance(name, str) else 'other'}"
    if event in _PROC_EVENTS:
        return event
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _armed or getattr(_busy, "active", False):
        return
    _busy.active = True
    try:
        line = _describe(event, args)
        if line is not None:
            _report(line)
    finally:
        _busy.active = False


def _children() -> list[int]:
    """This process's children (of any of its threads), from ``/proc``."""
    pids = []
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            pids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return pids


def _tell_children(signum: int) -> None:
    for pid in _children():
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


def _arm() -> None:
    """Arm here and in the children; the children are told first, while this process is
    still disarmed, so that telling them is not itself reported."""
    global _armed
    if _armed:
        return
    _tell_children(signal.SIGUSR2)
    _armed = True
    _report("armed")


def _disarm() -> None:
    global _armed
    _armed = False
    _report("disarmed")
    _tell_children(signal.SIGUSR1)


class _ArmOnServing:
    """stdout, armed by the ``serving on`` line before it is written (and so seen)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        if "serving on" in text:
            _arm()
        return int(self._inner.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def main() -> int:
    sys.addaudithook(_hook)
    signal.signal(signal.SIGUSR1, lambda signum, frame: _disarm())
    signal.signal(signal.SIGUSR2, lambda signum, frame: _arm())
    sys.stdout = _ArmOnServing(sys.stdout)
    if os.environ.get("AUDIT_ARM") == "start":
        _arm()

    from staycheck.cli.main import main as staycheck_main

    return staycheck_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

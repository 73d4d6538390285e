"""What every ``staycheck`` command shares: exit codes, messages, reading and writing the
caller's files, and telling the caller which extra a command needs.

Exit codes: 0 success; 1 a refusal (a token or bundle that does not verify, a call the
server refused); 2 a usage or input error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import sys
import time
from typing import Any, NoReturn

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

# Third-party packages that only an extra installs, and which extra brings each.
EXTRA_OF_PACKAGE = {
    "grpc": "client",
    "google": "client",
    "grpc_health": "server",
    "grpc_reflection": "server",
    "shapely": "server",
    "numpy": "server",
    "prometheus_client": "server",
    "tuf": "repository",
    "securesystemslib": "repository",
    "segno": "qr",
    "zxingcpp": "qr",
    "PIL": "qr",
    "PyKCS11": "hsm",
}


def missing_extra(e: ModuleNotFoundError, *, default: str) -> str | None:
    """The extra that would bring the module ``e`` could not find, or None when the missing
    module is not one an extra installs (then it is a bug, not an install to finish)."""
    root = (e.name or "").split(".")[0]
    if root not in EXTRA_OF_PACKAGE:
        return None
    # A command that needs the server extra may first miss a package of the client (or
    # repository) extra, which the server extra includes; the QR packages are in no extra
    # but their own.
    if EXTRA_OF_PACKAGE[root] == "qr":
        return "qr"
    return "server" if default == "server" else EXTRA_OF_PACKAGE[root]


def now() -> int:
    return int(time.time())


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"staycheck: {message}", file=sys.stderr)
    raise SystemExit(code)


def read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        fail(f"{what}: cannot read {path} ({e.strerror})")


def check_writable(*paths: pathlib.Path) -> None:
    """Fail before writing anything if a target's folder is missing or not writable."""
    for path in paths:
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            fail(f"cannot write {path} (folder missing or not writable)")


def write_atomic(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Write beside ``path`` and rename over it: readers never see half a file."""
    from staycheck.client.files import atomic_write

    check_writable(path)
    try:
        atomic_write(path, data, mode=mode)
    except OSError as e:
        fail(f"cannot write {path} ({e.strerror})")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False))


def server_address(text: str) -> str:
    """``--server`` as HOST:PORT (argparse type): a port is required, never defaulted."""
    import argparse

    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, e.g. 127.0.0.1:50051")
    return text

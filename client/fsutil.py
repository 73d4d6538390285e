"""Small file helpers: atomic writes with fixed modes (the server's state dir, the
command line's output files)."""

from __future__ import annotations

import os
import pathlib
import tempfile


def atomic_write(path: pathlib.Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never
    a half-written one: write a temporary file beside it, fsync, rename, fsync the folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_private_dir(path: pathlib.Path) -> None:
    """Create ``path`` (mode 0700) if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)

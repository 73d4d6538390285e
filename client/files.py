"""Files on the caller's side: atomic writes with fixed modes (the server's state dir, the
command line's output files) and reading a trust store with the JWKS files it names.

The rules for what is in those files are elsewhere (``staycheck.trust.truststore``); this
module only moves bytes between them and the disk.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from staycheck.geo.errors import ConfigurationError
from staycheck.trust.truststore import TrustStore


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


def load_trust_store(path: pathlib.Path) -> TrustStore:
    """The trust store file at ``path``; its ``jwks`` paths are relative to its folder."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"trust store: cannot read {path}") from e
    return TrustStore.from_toml(data, read_jwks=lambda name: (path.parent / name).read_bytes())

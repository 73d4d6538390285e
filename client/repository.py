"""Reading a TUF repository with python-tuf's stock ``ngclient``: the one trust path for
everything StayCheck publishes there (risk areas for servers, issuers' key sets for
verifiers).

:class:`RepositoryClient` keeps TUF's trusted metadata in a folder of the caller's (a
server's state dir, a verifier's cache), starting from a trusted ``root.json`` the first
time; :meth:`RepositoryClient.refresh` runs ngclient's whole update (root rotation,
timestamp, snapshot, targets; signatures, thresholds, versions, expiry, lengths, hashes)
and :meth:`RepositoryClient.target` returns a target's bytes after ngclient checked its
length and hash against the role that may publish its path. Nothing of ours is in the
trust path but :class:`DirectoryFetcher`, for a repository in a local folder.

Needs the ``repository`` extra (python-tuf); no protobuf, no gRPC.
"""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator
from typing import Any

from staycheck.client.files import atomic_write, ensure_private_dir
from tuf.api.exceptions import DownloadHTTPError, RepositoryError
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

ISSUER_KEYS = "keys/{code}.jwks.json"
"""The target of an issuer's verdict key set (JWKS), published by that issuer's role."""
MAX_TARGET_BYTES = 64 * 1024 * 1024
"""Most bytes of one target (a department's areas file of about 200 000 areas); the signed
metadata gives each file's exact length, and ngclient never reads past it."""


def issuer_keys_path(code: str) -> str:
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        raise RepositoryError("issuer: a six-digit code")
    return ISSUER_KEYS.format(code=code)


class DirectoryFetcher(FetcherInterface):
    """Reads ``file:`` URLs under one folder (no network): a repository on a mounted
    volume. Only what ngclient asks for, only under ``root``; a missing file is a 404."""

    def __init__(self, root: pathlib.Path) -> None:
        self._root = root.resolve()

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith("file:"):
            raise DownloadHTTPError(f"not a file: URL: {url}", 404)
        path = pathlib.Path(url.removeprefix("file:")).resolve()
        if not path.is_relative_to(self._root):
            raise DownloadHTTPError("outside the repository folder", 404)
        try:
            # O_NONBLOCK: a FIFO (or a device) put in the folder cannot hold the reader;
            # O_NOFOLLOW: no symlink swapped in after the check above.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise DownloadHTTPError(f"{path.name}: not found", 404) from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DownloadHTTPError(f"{path.name}: not a regular file", 404)
            while chunk := f.read(1 << 16):
                yield chunk


class RepositoryClient:
    """ngclient over ``source`` (an http(s) URL or a local folder), with its trusted
    metadata in ``local_dir``."""

    def __init__(self, local_dir: pathlib.Path, source: str, *, trusted_root: bytes) -> None:
        self.metadata_dir = local_dir / "metadata"
        self._targets_dir = local_dir / "targets"
        for folder in (local_dir, self.metadata_dir, self._targets_dir):
            ensure_private_dir(folder)
        if not (self.metadata_dir / "root.json").exists():
            atomic_write(self.metadata_dir / "root.json", trusted_root, mode=0o600)
        self._fetcher: FetcherInterface | None = None
        if source.startswith(("http://", "https://")):
            base = source.rstrip("/")
        else:
            folder = pathlib.Path(source).resolve()
            self._fetcher = DirectoryFetcher(folder)
            base = f"file:{folder}"
        self._metadata_url = f"{base}/metadata/"
        self._targets_url = f"{base}/targets/"
        self._config = UpdaterConfig()
        self._updater: Updater | None = None

    def refresh(self) -> None:
        """ngclient's update of the top-level metadata; raises what ngclient raises."""
        # A new Updater per refresh: it loads the trusted metadata from metadata_dir, which
        # it updates on success only (python-tuf's documented use).
        kwargs: dict[str, Any] = {"config": self._config, "bootstrap": None}
        if self._fetcher is not None:
            kwargs["fetcher"] = self._fetcher
        updater = Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=self._metadata_url,
            target_dir=str(self._targets_dir),
            target_base_url=self._targets_url,
            **kwargs,
        )
        updater.refresh()
        self._updater = updater

    def target_info(self, path: str) -> TargetFile:
        """The signed description of ``path`` from the role that may publish it (after a
        :meth:`refresh`); ``RepositoryError`` when no such role lists it."""
        if self._updater is None:
            raise RepositoryError("refresh the repository first")
        info = self._updater.get_targetinfo(path)
        if info is None:
            raise RepositoryError(f"{path}: no role that may publish it lists it")
        if info.length > MAX_TARGET_BYTES:
            raise RepositoryError(f"{path}: signed length above {MAX_TARGET_BYTES} bytes")
        if "sha256" not in info.hashes:
            raise RepositoryError(f"{path}: the signed hashes must include sha256")
        return info

    def target(self, path: str) -> bytes:
        """The bytes of ``path``, checked by ngclient against the signed length and hash."""
        info = self.target_info(path)
        assert self._updater is not None
        cached = self._updater.find_cached_target(info)
        local = cached if cached is not None else self._updater.download_target(info)
        return pathlib.Path(local).read_bytes()

    def trusted(self, role: str) -> Any:
        """The signed part of a role's metadata that ngclient verified and kept."""
        return Metadata.from_file(str(self.metadata_dir / f"{role}.json")).signed

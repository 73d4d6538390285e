"""The Oblivious HTTP gateway's keys in the state dir: made on first start, rotated with a
key id of their own, old ones still opening requests for a grace period.

Layout, in ``ohttp/`` of the state dir (0700; private keys 0600)::

    keys.json       {"keys": [{"key_id": 1, "created_at": T, "retired_at": null}, ...]}
    <key_id>.key    the raw 32-byte X25519 private key

The key with ``retired_at`` null is published (listed in ``application/ohttp-keys``); a
retired key is not listed but still opens requests until ``retired_at + grace_s``, so a
client that fetched the configuration just before a rotation still gets an answer, and
after that it is deleted. Every replica of a deployment must hold the same keys (a client
seals for the configuration it fetched from any of them): like the verdict key, they come
from a Secret (docs/deploy.md).

Key files are written before ``keys.json`` names them, each by rename; a running server
picks a rotation up through :meth:`GatewayKeyStore.reload_if_changed`.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

from staycheck.client.files import atomic_write, ensure_private_dir
from staycheck.client.ohttp import (
    AEAD_CHACHA20_POLY1305,
    DEFAULT_SYMMETRIC,
    KDF_HKDF_SHA256,
    GatewayKey,
    GatewayKeys,
    SymmetricSuite,
)
from staycheck.geo.errors import ConfigurationError

FOLDER = "ohttp"
INDEX = "keys.json"
DEFAULT_GRACE_S = 7 * 86400
"""How long a retired key still opens requests: longer than any client keeps a fetched
configuration (the well-known resource is served with a max-age of a day)."""
SYMMETRIC = (*DEFAULT_SYMMETRIC, SymmetricSuite(KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305))
"""The KDF/AEAD pairs each key offers: RFC 9458's interoperable HKDF-SHA256 with
AES-128-GCM first, and ChaCha20-Poly1305 (a 256-bit key, fast without AES instructions)."""


@dataclass(frozen=True)
class KeyEntry:
    key_id: int
    created_at: int
    retired_at: int | None = None


@dataclass(frozen=True)
class Index:
    """What ``keys.json`` holds."""

    entries: list[KeyEntry]
    grace_s: int
    last_key_id: int


class GatewayKeyStore:
    """The gateway keys of the state dir ``state_dir``."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self.folder = state_dir / FOLDER
        self._index = self.folder / INDEX
        self._stamp: tuple[int, int] | None = None
        self._keys: GatewayKeys | None = None
        self._next_expiry: int | None = None

    @property
    def keys(self) -> GatewayKeys:
        if self._keys is None:
            raise ConfigurationError("oblivious gateway keys: not loaded")
        return self._keys

    def load_or_create(self, *, now: int) -> GatewayKeys:
        """The keys, after making the first one if there is none."""
        ensure_private_dir(self.folder)
        if not self._index.exists():
            key = GatewayKey.generate(1, symmetric=SYMMETRIC)
            self._write_key(key)
            self._write_index([KeyEntry(1, now)])
        return self._load(now=now)

    def rotate(self, *, now: int, grace_s: int = DEFAULT_GRACE_S) -> int:
        """A new published key (the next free key id); the one published until now is
        retired, and retired keys past their grace are deleted. Returns the new key id."""
        ensure_private_dir(self.folder)
        index = self._read_index()
        entries = [e for e in index.entries if not _expired(e, now, grace_s)]
        used = {e.key_id for e in entries}
        # Ids go on from the last one made (1-255, then round again), so a client still
        # holding a deleted key's configuration meets "unknown key" (and fetches the keys
        # again), not another key under its old id.
        last = index.last_key_id
        key_id = next(
            (i for i in ((last + k - 1) % 255 + 1 for k in range(1, 256)) if i not in used), None
        )
        if key_id is None:
            raise ConfigurationError("oblivious gateway keys: all 255 key ids in use")
        key = GatewayKey.generate(key_id, symmetric=SYMMETRIC)
        self._write_key(key)
        entries = [
            KeyEntry(e.key_id, e.created_at, now if e.retired_at is None else e.retired_at)
            for e in entries
        ]
        self._write_index([*entries, KeyEntry(key_id, now)], grace_s=grace_s)
        keep = {f"{e.key_id}.key" for e in entries} | {f"{key_id}.key"}
        for path in self.folder.glob("*.key"):
            if path.name not in keep:  # retired past their grace
                path.unlink(missing_ok=True)
        return key_id

    def reload_if_changed(self, *, now: int) -> bool:
        """Load again if ``keys.json`` changed (a rotation) or a retired key's grace ended;
        True if it did."""
        try:
            st = os.stat(self._index)
        except OSError:
            return False
        expired = self._next_expiry is not None and now >= self._next_expiry
        if (st.st_mtime_ns, st.st_size) == self._stamp and not expired:
            return False
        self._load(now=now)
        return True

    def _load(self, *, now: int) -> GatewayKeys:
        st = os.stat(self._index)
        index = self._read_index()
        entries, grace_s = index.entries, index.grace_s
        published = [self._read_key(e) for e in entries if e.retired_at is None]
        retired = [
            self._read_key(e)
            for e in entries
            if e.retired_at is not None and not _expired(e, now, grace_s)
        ]
        self._keys = GatewayKeys(published, retired=retired)
        self._stamp = (st.st_mtime_ns, st.st_size)
        ends = [
            e.retired_at + grace_s
            for e in entries
            if e.retired_at is not None and not _expired(e, now, grace_s)
        ]
        self._next_expiry = min(ends) if ends else None
        return self._keys

    def _read_index(self) -> Index:
        """``keys.json``, read and parsed once."""
        try:
            data = json.loads(self._index.read_bytes())
            entries = [
                KeyEntry(int(e["key_id"]), int(e["created_at"]), e.get("retired_at"))
                for e in data["keys"]
            ]
            last = int(data.get("last_key_id", max((e.key_id for e in entries), default=0)))
            return Index(entries, int(data.get("grace_s", DEFAULT_GRACE_S)), last)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigurationError(f"oblivious gateway keys: cannot read {self._index}") from e

    def _read_key(self, entry: KeyEntry) -> GatewayKey:
        path = self.folder / f"{entry.key_id}.key"
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigurationError(f"oblivious gateway keys: cannot read {path}") from e
        return GatewayKey.from_private_bytes(entry.key_id, raw, symmetric=SYMMETRIC)

    def _write_key(self, key: GatewayKey) -> None:
        atomic_write(self.folder / f"{key.key_id}.key", key.private_bytes(), mode=0o600)

    def _write_index(self, entries: list[KeyEntry], *, grace_s: int = DEFAULT_GRACE_S) -> None:
        body = {
            "keys": [
                {"key_id": e.key_id, "created_at": e.created_at, "retired_at": e.retired_at}
                for e in entries
            ],
            "grace_s": grace_s,
            "last_key_id": entries[-1].key_id,
        }
        atomic_write(self._index, json.dumps(body, indent=2).encode() + b"\n", mode=0o600)


def _expired(entry: KeyEntry, now: int, grace_s: int) -> bool:
    return entry.retired_at is not None and now >= entry.retired_at + grace_s

"""Canary values and a fast search for them.

A canary is a value only a test put into an itinerary. :func:`float_forms` and
:func:`time_forms` list the ways it could show up if some code printed, logged, formatted or
stored it: the repr, fixed decimals, exponent and ``%g`` forms, float32 rounding, the
binary IEEE-754 double; Unix seconds and RFC 3339 / ISO / log-style date texts.
:class:`CanaryIndex` finds any of thousands of canaries in megabytes of text or bytes in one
pass (a dict keyed on each canary's first bytes), so a leak anywhere is cheap to look for.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import struct
from collections.abc import Iterable

import numpy as np

_KEY = 6  # every canary form is at least this long


def float_forms(x: float) -> set[bytes]:
    """Texts and bytes a float could be printed or stored as."""
    texts = {repr(x), str(x), f"{x:g}", f"{x:e}", f"{x:.7f}", f"{x:.6f}", f"{x:.5f}", f"{x:.4f}"}
    texts.add(repr(float(np.float32(x))))
    texts.add(str(np.float32(x)))
    forms = {t.encode() for t in texts}
    forms |= {struct.pack("<d", x), struct.pack(">d", x)}
    return {f for f in forms if len(f) >= _KEY}


def time_forms(t: int) -> set[bytes]:
    """Texts a Unix time could be printed as."""
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t)
    texts = {
        str(t),
        when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        when.isoformat(),
        when.strftime("%Y-%m-%d %H:%M:%S"),
        when.replace(tzinfo=None).isoformat(),
    }
    return {s.encode() for s in texts if len(s) >= _KEY}


class CanaryIndex:
    """Finds which canaries occur in a text or a file."""

    def __init__(self, canaries: Iterable[bytes]) -> None:
        self._by_key: dict[bytes, list[bytes]] = {}
        self.count = 0
        for c in set(canaries):
            if len(c) < _KEY:
                raise ValueError("canaries must be at least 6 bytes long")
            self._by_key.setdefault(c[:_KEY], []).append(c)
            self.count += 1

    def find(self, data: bytes | str) -> set[bytes]:
        blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
        found = set()
        by_key = self._by_key
        for i in range(len(blob) - _KEY + 1):
            bucket = by_key.get(blob[i : i + _KEY])
            if bucket:
                found.update(c for c in bucket if blob.startswith(c, i))
        return found

    def find_in_tree(self, root: pathlib.Path) -> dict[str, set[bytes]]:
        """Canaries in every file under ``root`` (names included), by relative path."""
        hits = {}
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(root))
            found = self.find(rel)
            if path.is_file():
                found |= self.find(path.read_bytes())
            if found:
                hits[rel] = found
        return hits

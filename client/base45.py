"""Base45 (RFC 9285): bytes as QR-alphanumeric text."""

from __future__ import annotations

import functools
import struct

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


@functools.cache
def _pairs() -> tuple[str, ...]:
    """The three characters of every 16-bit value, built once (65 536 short strings)."""
    out = []
    for n in range(65536):
        e, r = divmod(n, 45 * 45)
        d, c = divmod(r, 45)
        out.append(ALPHABET[c] + ALPHABET[d] + ALPHABET[e])
    return tuple(out)


def b45encode(data: bytes) -> str:
    """Encode; signing calls this per verdict, hence the table (one lookup per 2 bytes)."""
    table = _pairs()
    even = len(data) - len(data) % 2
    out = "".join(map(table.__getitem__, struct.unpack(f">{even // 2}H", data[:even])))
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += ALPHABET[c] + ALPHABET[d]
    return out


def b45decode(text: str) -> bytes:
    """Decode, raising ValueError on characters outside the alphabet or bad lengths."""
    if len(text) % 3 == 1:
        raise ValueError("base45: invalid length")
    try:
        values = [_INDEX[c] for c in text]
    except KeyError:
        raise ValueError("base45: character outside the alphabet") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        if len(chunk) == 3:
            n = chunk[0] + chunk[1] * 45 + chunk[2] * 45 * 45
            if n > 0xFFFF:
                raise ValueError("base45: triplet out of range")
            out += n.to_bytes(2, "big")
        else:
            n = chunk[0] + chunk[1] * 45
            if n > 0xFF:
                raise ValueError("base45: pair out of range")
            out.append(n)
    return bytes(out)

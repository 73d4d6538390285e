"""Base45 (RFC 9285): bytes as QR-alphanumeric text."""

from __future__ import annotations

import functools
import struct

import numpy as np

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


_ALPHABET_BYTES = ALPHABET.encode("ascii")
_TO_DIGITS = bytes.maketrans(_ALPHABET_BYTES, bytes(range(45)))
_WEIGHTS = np.array([1, 45, 45 * 45], dtype=np.uint32)


def b45decode(text: str) -> bytes:
    """Decode, raising ValueError on characters outside the alphabet or bad lengths.
    Verifiers call this per token, hence the vectorised groups of three."""
    if len(text) % 3 == 1:
        raise ValueError("base45: invalid length")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("base45: character outside the alphabet") from None
    if raw.translate(None, _ALPHABET_BYTES):
        raise ValueError("base45: character outside the alphabet")
    digits = raw.translate(_TO_DIGITS)
    whole = len(digits) - len(digits) % 3
    values = np.frombuffer(digits[:whole], dtype=np.uint8).reshape(-1, 3) @ _WEIGHTS
    if (values > 0xFFFF).any():
        raise ValueError("base45: group out of range")
    out = values.astype(">u2").tobytes()
    if whole < len(digits):
        n = digits[-2] + digits[-1] * 45
        if n > 0xFF:
            raise ValueError("base45: pair out of range")
        out += bytes([n])
    return out

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


_ALPHABET_BYTES = ALPHABET.encode("ascii")
_TO_DIGITS = bytes.maketrans(_ALPHABET_BYTES, bytes(range(45)))


def b45decode(text: str) -> bytes:
    """Decode, raising ValueError on characters outside the alphabet or bad lengths.
    Verifiers call this per token, hence no loop over groups in Python: the digits of each
    position in a group are laid into 24-bit lanes of one big integer, the group values are
    ``c + 45 d + 2025 e`` computed on the three integers at once (a value is at most 91 124,
    so no lane carries into the next), and a group over 0xFFFF shows as a non-zero top
    byte of its lane. No numpy: a verifier installs without it."""
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
    groups = whole // 3
    lanes = bytearray(3 * groups)
    lanes[2::3] = digits[0:whole:3]
    c = int.from_bytes(lanes, "big")
    lanes[2::3] = digits[1:whole:3]
    d = int.from_bytes(lanes, "big")
    lanes[2::3] = digits[2:whole:3]
    e = int.from_bytes(lanes, "big")
    values = (c + 45 * d + 2025 * e).to_bytes(3 * groups, "big")
    if values[0::3].strip(b"\0"):
        raise ValueError("base45: group out of range")
    out = bytearray(2 * groups)
    out[0::2] = values[1::3]
    out[1::2] = values[2::3]
    if whole < len(digits):
        n = digits[-2] + digits[-1] * 45
        if n > 0xFF:
            raise ValueError("base45: pair out of range")
        out.append(n)
    return bytes(out)

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
# Every byte to its digit value, and every byte outside the alphabet to 0xFF, so that one
# ``isascii`` (all bytes below 0x80) tells that every character was in the alphabet.
_TO_DIGITS = bytes(_ALPHABET_BYTES.index(b) if b in _ALPHABET_BYTES else 0xFF for b in range(256))


_MASK_CACHE_GROUPS = 256  # masks are kept for texts up to 768 characters (about 200 KB)
_masks_by_groups: dict[int, tuple[int, int]] = {}


def _masks(groups: int) -> tuple[int, int]:
    """The low byte and the top byte of every 24-bit lane of ``groups`` lanes, as integers."""
    masks = _masks_by_groups.get(groups)
    if masks is None:
        masks = (
            int.from_bytes(b"\0\0\xff" * groups, "big"),
            int.from_bytes(b"\xff\0\0" * groups, "big"),
        )
        if groups <= _MASK_CACHE_GROUPS:
            _masks_by_groups[groups] = masks
    return masks


def b45decode(text: str) -> bytes:
    """Decode, raising ValueError on characters outside the alphabet or bad lengths.
    Verifiers call this per token, hence no loop over groups in Python: the digits are read
    as one big integer in which each group of three is a 24-bit lane ``c d e`` (a byte
    each); masks pick the three digits of every lane at once, the group values
    ``c + 45 d + 2025 e`` are computed on whole integers (a value is at most 91 124, so no
    lane carries into the next), a group over 0xFFFF shows as a non-zero top byte of its
    lane, and deleting every lane's top byte leaves the two output bytes of each group.
    No numpy: a verifier installs without it."""
    if len(text) % 3 == 1:
        raise ValueError("base45: invalid length")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("base45: character outside the alphabet") from None
    digits = raw.translate(_TO_DIGITS)
    if not digits.isascii():
        raise ValueError("base45: character outside the alphabet")
    whole = len(digits) - len(digits) % 3
    low, top = _masks_by_groups.get(whole // 3) or _masks(whole // 3)
    lanes = int.from_bytes(digits, "big")
    if whole < len(digits):
        lanes >>= 16  # the trailing pair is decoded on its own below
    values = ((lanes >> 16) & low) + 45 * ((lanes >> 8) & low) + 2025 * (lanes & low)
    if values & top:
        raise ValueError("base45: group out of range")
    out = bytearray(values.to_bytes(whole, "big"))
    del out[0::3]
    if whole < len(digits):
        n = digits[-2] + digits[-1] * 45
        if n > 0xFF:
            raise ValueError("base45: pair out of range")
        out.append(n)
    return bytes(out)

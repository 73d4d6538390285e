"""COSE_Sign1 (RFC 9052) encoding and decoding, strict and small.

What it does: builds the ``Sig_structure`` to be signed, encodes a tagged COSE_Sign1 and
decodes one into its parts, refusing anything that is not exactly a tagged four-element
array of (protected bstr, unprotected map, payload bstr, signature bstr), and anything that
is not the one deterministic encoding of it (RFC 8949 section 4.2: definite lengths,
shortest heads, no other tag, sorted map keys), so that a message has one byte string only.

The one shape tokens have is read by hand (:func:`split_sign1`, a few byte comparisons);
anything else goes through cbor2 and the checks above, which refuse it with their reason.
The hand reader accepts nothing the general decoder refuses and gives the same parts
(tests/unit/test_token_fast_path.py).

What it does not do: pick keys or algorithms, or verify. Callers verify the bytes returned
by :meth:`Sign1.to_be_signed` with a key *they* chose (``staycheck.trust.keys.KeySet``); a header's
``alg`` and ``kid`` are only hints.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from staycheck.geo.errors import MalformedError

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
ALG_EDDSA = -8
ALG_ES256 = -7


def encode_protected(header: dict[int, Any]) -> bytes:
    """The protected header as the deterministic CBOR bytes that get signed."""
    return cbor2.dumps(header, canonical=True)


# The CBOR head of the four-element Sig_structure array and its context text "Signature1"
# (RFC 9052 section 4.4): the constant prefix of every COSE_Sign1 Sig_structure.
SIG_STRUCTURE_HEAD = b"\x84\x6aSignature1"


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 section 4.4 ``Sig_structure`` for COSE_Sign1 with empty external AAD:
    ``["Signature1", protected, h'', payload]``, written as its deterministic CBOR bytes
    by concatenation (the bytes ``cbor2.dumps`` gives for that array; a test checks)."""
    return b"".join(
        (
            SIG_STRUCTURE_HEAD,
            bstr_header(len(protected)),
            protected,
            b"\x40",
            bstr_header(len(payload)),
            payload,
        )
    )


def bstr_header(length: int) -> bytes:
    """The CBOR head of a byte string of ``length`` bytes (major type 2, shortest form)."""
    if length < 24:
        return bytes([0x40 | length])
    if length < 0x100:
        return bytes([0x58, length])
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    return b"\x5a" + length.to_bytes(4, "big")


class Sign1Framer:
    """Frames many COSE_Sign1 messages under one protected header with the header's bytes
    encoded once: the per-message work is two byte-string heads and concatenation. Gives
    exactly the bytes of :func:`sig_structure` and :func:`encode_sign1` (a test checks)."""

    def __init__(self, protected: bytes) -> None:
        self._tbs_prefix = SIG_STRUCTURE_HEAD + cbor2.dumps(protected) + b"\x40"
        self._sign1_prefix = b"\xd2\x84" + cbor2.dumps(protected) + b"\xa0"

    def to_be_signed(self, payload: bytes) -> bytes:
        return self._tbs_prefix + bstr_header(len(payload)) + payload

    def message(self, payload: bytes, signature: bytes) -> bytes:
        return b"".join(
            (
                self._sign1_prefix,
                bstr_header(len(payload)),
                payload,
                bstr_header(len(signature)),
                signature,
            )
        )


def encode_sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    """A tagged COSE_Sign1 with an empty unprotected header."""
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded, *unverified* COSE_Sign1."""

    protected_bytes: bytes
    protected: dict[int, Any]
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(HEADER_KID)
        return kid if isinstance(kid, bytes) else None

    @property
    def alg(self) -> int | None:
        alg = self.protected.get(HEADER_ALG)
        return alg if isinstance(alg, int) else None

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected_bytes, self.payload)


def decode_sign1(data: bytes, *, max_size: int) -> Sign1:
    """Decode a tagged COSE_Sign1, or raise :class:`MalformedError`.

    ``max_size`` bounds the input before any parsing.
    """
    if len(data) > max_size:
        raise MalformedError(f"COSE_Sign1: larger than {max_size} bytes")
    parts = split_sign1(data)
    if parts is not None:
        end, alg, kid, start, stop, signature = parts
        return Sign1(data[3:end], {HEADER_ALG: alg, HEADER_KID: kid}, data[start:stop], signature)
    return _decode_sign1_general(data)


def _decode_sign1_general(data: bytes) -> Sign1:
    """:func:`decode_sign1` through cbor2, for any input (after the size check): what is not
    in the one shape :func:`split_sign1` reads is refused here, with the reason."""
    try:
        stream = io.BytesIO(data)
        obj = cbor2.CBORDecoder(stream).decode()
    except Exception as e:  # cbor2 raises several types on hostile input
        raise MalformedError("COSE_Sign1: not valid CBOR") from e
    if stream.tell() != len(data):
        raise MalformedError("COSE_Sign1: trailing bytes after the message")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise MalformedError("COSE_Sign1: missing tag 18")
    value = obj.value
    # cbor2 decodes the contents of a tag as immutable values (tuple, frozendict).
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise MalformedError("COSE_Sign1: not a four-element array")
    protected_bytes, unprotected, payload, signature = value
    if not isinstance(protected_bytes, bytes) or not isinstance(unprotected, Mapping):
        raise MalformedError("COSE_Sign1: bad header types")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise MalformedError("COSE_Sign1: payload and signature must be byte strings")
    if unprotected:
        raise MalformedError("COSE_Sign1: unprotected header must be empty")
    try:
        protected = cbor2.loads(protected_bytes) if protected_bytes else {}
    except Exception as e:
        raise MalformedError("COSE_Sign1: protected header is not valid CBOR") from e
    if not isinstance(protected, dict) or not all(isinstance(k, int) for k in protected):
        raise MalformedError("COSE_Sign1: protected header must be a map with integer labels")
    if HEADER_CRIT in protected:
        raise MalformedError("COSE_Sign1: critical headers are not supported")
    if protected_bytes and encode_protected(protected) != protected_bytes:
        raise MalformedError("COSE_Sign1: protected header is not deterministic CBOR")
    # The one encoding of these parts: tag 18, a four-element array, each byte string with
    # its shortest definite-length head. The payload is compared in place, not copied.
    head = b"\xd2\x84" + bstr_header(len(protected_bytes)) + protected_bytes + b"\xa0"
    head += bstr_header(len(payload))
    tail = bstr_header(len(signature)) + signature
    if (
        len(data) != len(head) + len(payload) + len(tail)
        or not data.startswith(head)
        or not data.endswith(tail)
    ):
        raise MalformedError("COSE_Sign1: not the deterministic CBOR encoding")
    return Sign1(protected_bytes, protected, payload, signature)


def _bstr_at(data: bytes, i: int) -> tuple[int, int]:
    """The length and the first content index of the byte string whose head is at ``i``,
    for a shortest definite-length head of at most 2 length bytes; ``(-1, 0)`` otherwise."""
    head = data[i]
    if 0x40 <= head < 0x58:
        return head - 0x40, i + 1
    if head == 0x58:
        n = data[i + 1]
        return (n, i + 2) if n >= 24 else (-1, 0)
    if head == 0x59:
        n = int.from_bytes(data[i + 1 : i + 3], "big")
        return (n, i + 3) if n >= 0x100 else (-1, 0)
    return -1, 0


def split_sign1(data: bytes) -> tuple[int, int, bytes, int, int, bytes] | None:
    """The parts of a COSE_Sign1 in the one shape tokens have, read by hand; ``None`` for
    anything else, which the caller then decodes with the general decoder.

    The shape is the deterministic encoding ``d2 84 | bstr(protected) | a0 | bstr(payload)
    | bstr(signature)`` with nothing after it, every byte-string head the shortest one, and
    the protected header exactly ``a2 01 <alg> 04 bstr(kid)``: a map of two entries, labels
    1 and 4 in that order, ``alg`` an integer of one byte (-24..23) and ``kid`` a byte
    string of at most 23 bytes, i.e. the deterministic encoding of ``{1: alg, 4: kid}``.
    Every byte string of that shape is one the general decoder accepts with the same parts;
    nothing is accepted here that it refuses (tests compare both on mutated tokens).

    Returns ``(end, alg, kid, start, stop, signature)``: ``data[3:end]`` is the protected
    header, ``data[start:stop]`` the payload, and ``data[2:end]`` and ``data[end + 1:stop]``
    are the protected and payload byte strings with their heads, as the ``Sig_structure``
    holds them."""
    if type(data) is not bytes or not data.startswith(b"\xd2\x84"):
        return None
    try:
        n = data[2] - 0x40
        if not 5 <= n < 24 or data[3:5] != b"\xa2\x01" or data[6] != HEADER_KID:
            return None
        a = data[5]
        if a < 0x18:
            alg = a
        elif 0x20 <= a < 0x38:
            alg = 0x1F - a
        else:
            return None
        if data[7] != 0x40 + n - 5:
            return None
        end = 3 + n
        if data[end] != 0xA0:
            return None
        if data[end + 1] == 0x58:  # a payload of 24-255 bytes, as every token's
            length, start = data[end + 2], end + 3
            if length < 24:
                return None
        else:
            length, start = _bstr_at(data, end + 1)
            if length < 0:
                return None
        stop = start + length
        if data[stop : stop + 2] == b"\x58\x40":  # a 64-byte signature
            first = stop + 2
            if first + 64 != len(data):
                return None
        else:
            length, first = _bstr_at(data, stop)
            if length < 0 or first + length != len(data):
                return None
    except IndexError:
        return None
    return end, alg, data[8:end], start, stop, data[first:]

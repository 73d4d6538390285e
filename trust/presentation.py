"""The presentation: what a traveller shows at the door, as one QR code.

Text form: ``SCP1:`` + base45 (RFC 9285) of the token's COSE_Sign1 bytes, followed, for a
bound token, by the 16 bytes of the salt the binding was derived with::

    presentation = "SCP1:" base45( COSE_Sign1 [ salt ] )

No other framing: a COSE_Sign1 is one CBOR data item and says where it ends, and what
follows it is exactly the salt (16 bytes) when the token's claims carry a binding and
nothing when they do not; anything else is malformed. Every character is in the QR
alphanumeric set (base45's alphabet, the digits, upper-case letters and ``:``), so the code
is dense; docs/formats.md has the size table (a bound verdict of a six-digit issuer fits
QR version 10 at error correction level M).

The ``SCP1:`` prefix names the version of this layout; a bare token (``SC1:...``) is
accepted where a presentation is expected, as an unbound presentation without a salt.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cbor2
from staycheck.geo.errors import MalformedError
from staycheck.trust.base45 import b45decode, b45encode
from staycheck.trust.binding import SALT_LENGTH
from staycheck.trust.verdict import (
    MAX_TOKEN_BYTES,
    MAX_TOKEN_CHARS,
    TOKEN_PREFIX,
    Verdict,
    decode_token,
    token_bytes,
)

PRESENTATION_PREFIX = "SCP1:"
MAX_PRESENTATION_CHARS = MAX_TOKEN_CHARS + 32


@dataclass(frozen=True, slots=True)
class Presentation:
    """A token's COSE bytes, with the salt of its binding (``b""`` when unbound)."""

    token: bytes
    salt: bytes = b""

    def __repr__(self) -> str:  # the salt is half of what identifies the bearer
        return f"Presentation(token=<{len(self.token)} bytes>, salt=<{len(self.salt)} bytes>)"

    @property
    def token_text(self) -> str:
        """The token alone, in its text form (``SC1:...``)."""
        return TOKEN_PREFIX + b45encode(self.token)

    def verdict(self) -> Verdict:
        """The token's claims, decoded and checked against the allowlist; not verified."""
        return decode_token(self.token)[1]

    def text(self) -> str:
        return PRESENTATION_PREFIX + b45encode(self.token + self.salt)


def present(token: str, salt: bytes = b"") -> str:
    """The presentation text of ``token`` (``SC1:...``) with the salt of its binding.

    A bound token needs its salt and an unbound one takes none, as :func:`read_presentation`
    requires."""
    data = token_bytes(token)
    _check_salt(decode_token(data)[1], salt)
    return Presentation(data, salt).text()


def read_presentation(text: str) -> Presentation:
    """Parse a presentation (or a bare token) into the token and the salt; the signature is
    not verified here (``staycheck.trust.verifier.verify_token`` does that)."""
    if not isinstance(text, str) or len(text) > MAX_PRESENTATION_CHARS:
        raise MalformedError("presentation: too long")
    text = text.strip()
    if text.startswith(TOKEN_PREFIX):
        data = token_bytes(text)
        decode_token(data)  # a bare token must be a whole one, with nothing after it
        return Presentation(data)
    if not text.startswith(PRESENTATION_PREFIX):
        raise MalformedError(f"presentation: must start with {PRESENTATION_PREFIX}")
    try:
        data = b45decode(text[len(PRESENTATION_PREFIX) :])
    except ValueError as e:
        raise MalformedError("presentation: not base45") from e
    if len(data) > MAX_TOKEN_BYTES + SALT_LENGTH:
        raise MalformedError("presentation: too long")
    end = _first_item_length(data)
    token, salt = data[:end], data[end:]
    _check_salt(decode_token(token)[1], salt)
    return Presentation(token, salt)


def _first_item_length(data: bytes) -> int:
    stream = io.BytesIO(data)
    try:
        cbor2.CBORDecoder(stream).decode()
    except Exception as e:  # cbor2 raises several types on hostile input
        raise MalformedError("presentation: does not begin with a COSE_Sign1") from e
    return stream.tell()


def _check_salt(verdict: Verdict, salt: bytes) -> None:
    if verdict.binding and len(salt) != SALT_LENGTH:
        raise MalformedError(f"presentation: a bound token needs its {SALT_LENGTH}-byte salt")
    if not verdict.binding and salt:
        raise MalformedError("presentation: an unbound token takes no salt")

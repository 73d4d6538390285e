"""Binary HTTP messages (RFC 9292): the plaintext that Oblivious HTTP encrypts.

What this module does:

- :class:`Request` and :class:`Response`, frozen values that check the RFC's rules once, at
  construction: control data (method, scheme, authority, path; the status code), header and
  trailer field lines, content, informational (1xx) responses before a final response.
- ``encode()``: the known-length form (framing indicators 0 and 1, RFC 9292 Section 3.1),
  in full or, with ``truncate=True``, without the trailing empty sections (Section 3.8).
- ``decode()``: the known-length and the indeterminate-length forms (framing indicators
  0 to 3, Sections 3.1 and 3.2), truncated messages, and zero padding (Section 3.8).
- QUIC variable-length integers (RFC 9000 Section 16): :func:`encode_varint`,
  :func:`decode_varint`.

Every fault in an encoded message raises :class:`BinaryHttpError`, whose message names the
part and the rule (``header[2].value: contains CR, LF or NUL``) and never a byte of the
message. Decoding is bounded: :data:`MAX_MESSAGE_BYTES` for a whole message,
:data:`MAX_FIELD_LINES` per field section, :data:`MAX_INFORMATIONAL` interim responses.

What it deliberately does not do: open sockets or files, read a clock, or interpret
fields (no Content-Length check, no Cookie combining, no lower-casing of names). It does
not encode the indeterminate-length form: a whole message is always known before it is
encrypted. It refuses every pseudo-field; RFC 9292 forbids the five of HTTP/2 and leaves
others to extensions, of which we use none. It refuses CONNECT-style control data (an
empty scheme or path): RFC 9292 Section 6 notes that such requests serve no purpose here.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from staycheck.geo.errors import InvalidInputError

MAX_MESSAGE_BYTES = 1 << 20
"""Bytes of one encoded message, padding included (1 MiB); a longer one is refused
before any part is read. Callers with smaller needs pass a smaller ``max_size``."""
MAX_FIELD_LINES = 128
"""Field lines in one header or trailer section (each interim response's too)."""
MAX_INFORMATIONAL = 8
"""Informational (1xx) responses before the final one."""
MAX_VARINT = (1 << 62) - 1
"""The largest QUIC variable-length integer."""

KNOWN_LENGTH_REQUEST = 0
KNOWN_LENGTH_RESPONSE = 1
INDETERMINATE_LENGTH_REQUEST = 2
INDETERMINATE_LENGTH_RESPONSE = 3

Field: TypeAlias = tuple[str, bytes]
"""One field line: its name (an RFC 9110 token) and its value (bytes)."""

_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_SCHEME_CHAR = frozenset(string.ascii_letters + string.digits + "+-.")
_VISIBLE = frozenset(chr(c) for c in range(0x21, 0x7F))
_AUTHORITY_CHAR = _VISIBLE - frozenset("/?#")
_FORBIDDEN_IN_VALUE = frozenset(b"\x00\r\n")
_WHITESPACE = frozenset(b" \t")


class BinaryHttpError(InvalidInputError, ValueError):
    """An encoded message, or a value to encode, breaks RFC 9292 or one of our bounds.

    ``field`` names the part (``method``, ``header[2].name``, ``informational[0].status``,
    ``padding``), ``rule`` the rule broken; neither ever holds bytes of the message.
    """


def encode_varint(value: int) -> bytes:
    """``value`` as a QUIC variable-length integer on the fewest bytes (RFC 9000 16)."""
    if value < 0 or value > MAX_VARINT:
        raise BinaryHttpError("integer", "outside 0 to 2^62 - 1")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """The QUIC variable-length integer at ``data[offset:]`` and the offset after it.

    Longer encodings than needed are accepted, as RFC 9292 Section 3 allows.
    """
    if offset >= len(data):
        raise BinaryHttpError("integer", "truncated")
    length = 1 << (data[offset] >> 6)
    end = offset + length
    if end > len(data):
        raise BinaryHttpError("integer", "truncated")
    value = int.from_bytes(data[offset:end], "big") & ((1 << (8 * length - 2)) - 1)
    return value, end


@dataclass(frozen=True)
class Informational:
    """An interim (1xx) response before the final one (RFC 9292 Section 3.5.1)."""

    status: int
    headers: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple(self.headers))
        _check_status(self.status, "status", informational=True)
        _check_fields(self.headers, "header", trailers=False)


@dataclass(frozen=True)
class Request:
    """An HTTP request: control data (RFC 9292 Section 3.4), fields, content.

    ``method`` is a token, ``scheme`` an RFC 3986 scheme, ``authority`` visible ASCII
    without ``/?#`` or empty (the Host header is then a field), ``path`` starts with
    ``/`` or is ``*``. Field names are tokens; field values are bytes without CR, LF or
    NUL and without leading or trailing whitespace (RFC 9113 Section 8.2.1).
    """

    method: str
    scheme: str
    authority: str
    path: str
    headers: tuple[Field, ...] = ()
    content: bytes = b""
    trailers: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple(self.headers))
        object.__setattr__(self, "trailers", tuple(self.trailers))
        _check_token(self.method, "method")
        _check_scheme(self.scheme)
        _check_authority(self.authority)
        _check_path(self.path)
        _check_fields(self.headers, "header", trailers=False)
        _check_bytes(self.content, "content")
        _check_fields(self.trailers, "trailer", trailers=True)

    def encode(self, *, truncate: bool = False) -> bytes:
        """The known-length encoding (framing indicator 0, RFC 9292 Section 3.1).

        With ``truncate``, empty sections at the end (trailers; then content; then
        headers) are left out (Section 3.8); a decoder reads them as empty.
        """
        out = bytearray(encode_varint(KNOWN_LENGTH_REQUEST))
        for part in (self.method, self.scheme, self.authority, self.path):
            _put_bytes(out, part.encode("ascii"))
        _put_tail(out, self.headers, self.content, self.trailers, truncate=truncate)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Request:
        """The request encoded in ``data`` (framing indicator 0 or 2).

        Raises :class:`BinaryHttpError` for a response, a malformed, truncated or padded-
        with-non-zero message, or one beyond our bounds.
        """
        reader = _Reader(data, max_size)
        framing = reader.varint("framing indicator")
        if framing not in (KNOWN_LENGTH_REQUEST, INDETERMINATE_LENGTH_REQUEST):
            raise BinaryHttpError("framing indicator", "must be 0 or 2 for a request")
        known = framing == KNOWN_LENGTH_REQUEST
        method = reader.text("method")
        scheme = reader.text("scheme")
        authority = reader.text("authority")
        path = reader.text("path")
        headers, content, trailers = reader.tail(known)
        return cls(method, scheme, authority, path, headers, content, trailers)


@dataclass(frozen=True)
class Response:
    """An HTTP response: the final status (200 to 599), fields, content, and the
    informational (1xx) responses that came before it (RFC 9292 Section 3.5)."""

    status: int
    headers: tuple[Field, ...] = ()
    content: bytes = b""
    trailers: tuple[Field, ...] = ()
    informational: tuple[Informational, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple(self.headers))
        object.__setattr__(self, "trailers", tuple(self.trailers))
        object.__setattr__(self, "informational", tuple(self.informational))
        _check_status(self.status, "status", informational=False)
        _check_fields(self.headers, "header", trailers=False)
        _check_bytes(self.content, "content")
        _check_fields(self.trailers, "trailer", trailers=True)
        if len(self.informational) > MAX_INFORMATIONAL:
            raise BinaryHttpError(
                "informational", f"more than {MAX_INFORMATIONAL} informational responses"
            )
        for i, interim in enumerate(self.informational):
            if not isinstance(interim, Informational):
                raise BinaryHttpError(f"informational[{i}]", "not an Informational")

    def encode(self, *, truncate: bool = False) -> bytes:
        """The known-length encoding (framing indicator 1, RFC 9292 Section 3.1), with
        the informational responses first; ``truncate`` as for :meth:`Request.encode`."""
        out = bytearray(encode_varint(KNOWN_LENGTH_RESPONSE))
        for interim in self.informational:
            out += encode_varint(interim.status)
            _put_bytes(out, _encode_fields(interim.headers))
        out += encode_varint(self.status)
        _put_tail(out, self.headers, self.content, self.trailers, truncate=truncate)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Response:
        """The response encoded in ``data`` (framing indicator 1 or 3); errors as for
        :meth:`Request.decode`."""
        reader = _Reader(data, max_size)
        framing = reader.varint("framing indicator")
        if framing not in (KNOWN_LENGTH_RESPONSE, INDETERMINATE_LENGTH_RESPONSE):
            raise BinaryHttpError("framing indicator", "must be 1 or 3 for a response")
        known = framing == KNOWN_LENGTH_RESPONSE
        informational: list[Informational] = []
        while True:
            status = reader.varint("status")
            if not 100 <= status <= 199:
                break
            if len(informational) == MAX_INFORMATIONAL:
                raise BinaryHttpError(
                    "informational", f"more than {MAX_INFORMATIONAL} informational responses"
                )
            part = f"informational[{len(informational)}].header"
            informational.append(Informational(status, reader.fields(known, part, trailers=False)))
        _check_status(status, "status", informational=False)
        headers, content, trailers = reader.tail(known)
        return cls(status, headers, content, trailers, tuple(informational))


class _Reader:
    """A cursor over one encoded message; every read names the part it reads."""

    def __init__(self, data: bytes, max_size: int) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BinaryHttpError("message", "must be bytes")
        if len(data) > max_size:
            raise BinaryHttpError("message", f"longer than {max_size} bytes")
        self._data = bytes(data)
        self._pos = 0
        self._max_size = max_size

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def varint(self, part: str) -> int:
        try:
            value, self._pos = decode_varint(self._data, self._pos)
        except BinaryHttpError:
            raise BinaryHttpError(part, "truncated") from None
        return value

    def take(self, length: int, part: str) -> bytes:
        end = self._pos + length
        if end > len(self._data):
            raise BinaryHttpError(part, "truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def prefixed(self, part: str) -> bytes:
        return self.take(self.varint(f"{part} length"), part)

    def text(self, part: str) -> str:
        """A length-prefixed ASCII string of control data."""
        raw = self.prefixed(part)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise BinaryHttpError(part, "not ASCII") from None

    def fields(self, known: bool, part: str, *, trailers: bool) -> tuple[Field, ...]:
        """A field section: length-prefixed (known length) or ended by a zero."""
        lines: list[Field] = []
        if known:
            section = _Reader(self.prefixed(f"{part} section"), self._max_size)
            while not section.at_end():
                lines.append(section.field_line(f"{part}[{len(lines)}]", lines))
        else:
            while True:
                item = f"{part}[{len(lines)}]"
                name_length = self.varint(f"{item}.name length")
                if name_length == 0:
                    break
                lines.append(self.field_line(item, lines, name_length=name_length))
        fields = tuple(lines)
        _check_fields(fields, part, trailers=trailers)
        return fields

    def field_line(self, part: str, lines: list[Field], *, name_length: int = -1) -> Field:
        if len(lines) == MAX_FIELD_LINES:
            raise BinaryHttpError(part, f"more than {MAX_FIELD_LINES} field lines")
        if name_length < 0:
            name_length = self.varint(f"{part}.name length")
        if name_length == 0:
            raise BinaryHttpError(f"{part}.name", "must not be empty")
        raw_name = self.take(name_length, f"{part}.name")
        value = self.prefixed(f"{part}.value")
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise BinaryHttpError(f"{part}.name", "not a token") from None
        return name, value

    def content(self, known: bool) -> bytes:
        if known:
            return self.prefixed("content")
        chunks = bytearray()
        while True:
            length = self.varint("content chunk length")
            if length == 0:
                return bytes(chunks)
            chunks += self.take(length, "content chunk")

    def tail(self, known: bool) -> tuple[tuple[Field, ...], bytes, tuple[Field, ...]]:
        """Header section, content, trailer section, padding: each section may be cut
        off where it would start (RFC 9292 Section 3.8), and then reads as empty."""
        headers: tuple[Field, ...] = ()
        content = b""
        trailers: tuple[Field, ...] = ()
        if not self.at_end():
            headers = self.fields(known, "header", trailers=False)
        if not self.at_end():
            content = self.content(known)
        if not self.at_end():
            trailers = self.fields(known, "trailer", trailers=True)
        if self._data[self._pos :].strip(b"\x00"):
            raise BinaryHttpError("padding", "must be zero bytes")
        return headers, content, trailers


def _put_bytes(out: bytearray, value: bytes) -> None:
    out += encode_varint(len(value))
    out += value


def _encode_fields(fields: Iterable[Field]) -> bytes:
    out = bytearray()
    for name, value in fields:
        _put_bytes(out, name.encode("ascii"))
        _put_bytes(out, value)
    return bytes(out)


def _put_tail(
    out: bytearray,
    headers: tuple[Field, ...],
    content: bytes,
    trailers: tuple[Field, ...],
    *,
    truncate: bool,
) -> None:
    sections = [_encode_fields(headers), content, _encode_fields(trailers)]
    if truncate:
        while sections and not sections[-1]:
            sections.pop()
    for section in sections:
        _put_bytes(out, section)


def _check_status(status: int, part: str, *, informational: bool) -> None:
    if not isinstance(status, int) or isinstance(status, bool):
        raise BinaryHttpError(part, "must be an integer")
    low, high = (100, 199) if informational else (200, 599)
    if not low <= status <= high:
        raise BinaryHttpError(part, f"must be {low} to {high}")


def _check_token(value: str, part: str) -> None:
    if not isinstance(value, str):
        raise BinaryHttpError(part, "must be a string")
    if not value:
        raise BinaryHttpError(part, "must not be empty")
    if not _TCHAR.issuperset(value):
        raise BinaryHttpError(part, "not a token")


def _check_scheme(scheme: str) -> None:
    if not isinstance(scheme, str):
        raise BinaryHttpError("scheme", "must be a string")
    if not scheme:
        raise BinaryHttpError("scheme", "must not be empty")
    if not (scheme[0] in string.ascii_letters and _SCHEME_CHAR.issuperset(scheme)):
        raise BinaryHttpError("scheme", "not an RFC 3986 scheme")


def _check_authority(authority: str) -> None:
    if not isinstance(authority, str):
        raise BinaryHttpError("authority", "must be a string")
    if not _AUTHORITY_CHAR.issuperset(authority):
        raise BinaryHttpError("authority", "must be visible ASCII without / ? #")


def _check_path(path: str) -> None:
    if not isinstance(path, str):
        raise BinaryHttpError("path", "must be a string")
    if not path:
        raise BinaryHttpError("path", "must not be empty")
    if not (path == "*" or path.startswith("/")):
        raise BinaryHttpError("path", "must start with / or be *")
    if not _VISIBLE.issuperset(path):
        raise BinaryHttpError("path", "must be visible ASCII")


def _check_bytes(value: bytes, part: str) -> None:
    if not isinstance(value, bytes):
        raise BinaryHttpError(part, "must be bytes")


def _check_fields(fields: tuple[Field, ...], part: str, *, trailers: bool) -> None:
    """The rules of RFC 9292 Section 3.6 for one field section."""
    if len(fields) > MAX_FIELD_LINES:
        raise BinaryHttpError(part, f"more than {MAX_FIELD_LINES} field lines")
    for i, line in enumerate(fields):
        item = f"{part}[{i}]"
        if not (isinstance(line, tuple) and len(line) == 2):
            raise BinaryHttpError(item, "must be a (name, value) pair")
        name, value = line
        if isinstance(name, str) and name.startswith(":"):
            where = "in trailers" if trailers else "here"
            raise BinaryHttpError(f"{item}.name", f"pseudo-fields are not accepted {where}")
        _check_token(name, f"{item}.name")
        _check_bytes(value, f"{item}.value")
        if _FORBIDDEN_IN_VALUE.intersection(value):
            raise BinaryHttpError(f"{item}.value", "contains CR, LF or NUL")
        if value and (value[0] in _WHITESPACE or value[-1] in _WHITESPACE):
            raise BinaryHttpError(f"{item}.value", "starts or ends with whitespace")

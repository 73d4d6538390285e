"""Binary HTTP (staycheck.client.bhttp) against RFC 9292.

Expected bytes are copied from the RFCs, never from running this code: RFC 9292 Section 5
(Figures 8, 9, 11 and 13, and the values of Figures 7, 10 and 12 they encode), RFC 9000
Appendix A.1 (variable-length integers) and RFC 9458 Appendix A (a request and a response
truncated after their control data). Each rejection rule has a row named after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from staycheck.client.bhttp import (
    MAX_FIELD_LINES,
    MAX_INFORMATIONAL,
    BinaryHttpError,
    Informational,
    Request,
    Response,
    decode_varint,
    encode_varint,
)
from staycheck.geo.errors import InvalidInputError


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 9292 Section 5.1, Figure 8: "Known-Length Binary Encoding of Request".
FIGURE_8 = unhex("""
    00034745 54056874 74707300 0a2f6865
    6c6c6f2e 74787440 6c0a7573 65722d61
    67656e74 34637572 6c2f372e 31362e33
    206c6962 6375726c 2f372e31 362e3320
    4f70656e 53534c2f 302e392e 376c207a
    6c69622f 312e322e 3304686f 73740f77
    77772e65 78616d70 6c652e63 6f6d0f61
    63636570 742d6c61 6e677561 67650665
    6e2c206d 690000
""")

# RFC 9292 Section 5.1, Figure 9: "Indeterminate-Length Binary Encoding of Request"
# (with 10 bytes of padding).
FIGURE_9 = unhex("""
    02034745 54056874 74707300 0a2f6865
    6c6c6f2e 7478740a 75736572 2d616765
    6e743463 75726c2f 372e3136 2e33206c
    69626375 726c2f37 2e31362e 33204f70
    656e5353 4c2f302e 392e376c 207a6c69
    622f312e 322e3304 686f7374 0f777777
    2e657861 6d706c65 2e636f6d 0f616363
    6570742d 6c616e67 75616765 06656e2c
    206d6900 00000000 00000000 00000000
""")

# RFC 9292 Section 5.1, Figure 7 ("Sample HTTP Request"), as Figures 8 and 9 encode it:
# names in lower case, the Host header kept as a field and the authority left empty.
FIGURE_7 = Request(
    method="GET",
    scheme="https",
    authority="",
    path="/hello.txt",
    headers=(
        ("user-agent", b"curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"),
        ("host", b"www.example.com"),
        ("accept-language", b"en, mi"),
    ),
)

# RFC 9292 Section 5.2, Figure 11: "Binary Response, including Informational Responses".
FIGURE_11 = unhex("""
    03406607 72756e6e 696e670a 22736c65
    65702031 35220040 67046c69 6e6b233c
    2f737479 6c652e63 73733e3b 2072656c
    3d707265 6c6f6164 3b206173 3d737479
    6c65046c 696e6b24 3c2f7363 72697074
    2e6a733e 3b207265 6c3d7072 656c6f61
    643b2061 733d7363 72697074 0040c804
    64617465 1d4d6f6e 2c203237 204a756c
    20323030 39203132 3a32383a 35332047
    4d540673 65727665 72064170 61636865
    0d6c6173 742d6d6f 64696669 65641d57
    65642c20 3232204a 756c2032 30303920
    31393a31 353a3536 20474d54 04657461
    67142233 34616133 38372d64 2d313536
    38656230 30220d61 63636570 742d7261
    6e676573 05627974 65730e63 6f6e7465
    6e742d6c 656e6774 68023531 04766172
    790f4163 63657074 2d456e63 6f64696e
    670c636f 6e74656e 742d7479 70650a74
    6578742f 706c6169 6e003348 656c6c6f
    20576f72 6c642120 4d792063 6f6e7465
    6e742069 6e636c75 64657320 61207472
    61696c69 6e672043 524c462e 0d0a0000
""")

# RFC 9292 Section 5.2, Figure 10 ("Sample HTTP Response"), as Figure 11 encodes it.
FIGURE_10 = Response(
    status=200,
    headers=(
        ("date", b"Mon, 27 Jul 2009 12:28:53 GMT"),
        ("server", b"Apache"),
        ("last-modified", b"Wed, 22 Jul 2009 19:15:56 GMT"),
        ("etag", b'"34aa387-d-1568eb00"'),
        ("accept-ranges", b"bytes"),
        ("content-length", b"51"),
        ("vary", b"Accept-Encoding"),
        ("content-type", b"text/plain"),
    ),
    content=b"Hello World! My content includes a trailing CRLF.\r\n",
    informational=(
        Informational(102, (("running", b'"sleep 15"'),)),
        Informational(
            103,
            (
                ("link", b"</style.css>; rel=preload; as=style"),
                ("link", b"</script.js>; rel=preload; as=script"),
            ),
        ),
    ),
)

# RFC 9292 Section 5.2, Figure 13: "Known-Length Encoding of Response" (of Figure 12).
FIGURE_13 = unhex("""
    0140c800 1d546869 7320636f 6e74656e
    7420636f 6e746169 6e732043 524c462e
    0d0a0d07 74726169 6c657204 74657874
""")

# RFC 9292 Section 5.2, Figure 12 ("Chunked Encoding Example"), Transfer-Encoding removed.
FIGURE_12 = Response(
    status=200,
    content=b"This content contains CRLF.\r\n",
    trailers=(("trailer", b"text"),),
)

# RFC 9458 Appendix A: the binary request for GET https://example.com and the minimal
# 200 response, both truncated right after their control data.
RFC9458_REQUEST = unhex("00034745540568747470730b6578616d706c652e636f6d012f")
RFC9458_RESPONSE = unhex("0140c8")


def test_rfc9292_known_length_request_decodes() -> None:
    assert Request.decode(FIGURE_8) == FIGURE_7


def test_rfc9292_known_length_request_encodes_byte_for_byte() -> None:
    assert FIGURE_7.encode() == FIGURE_8


def test_rfc9292_request_without_its_last_two_bytes_means_the_same() -> None:
    # Section 5.1: the last two bytes (content and trailer section) can each be removed.
    assert Request.decode(FIGURE_8[:-1]) == FIGURE_7
    assert Request.decode(FIGURE_8[:-2]) == FIGURE_7


def test_rfc9292_indeterminate_length_request_decodes() -> None:
    assert Request.decode(FIGURE_9) == FIGURE_7


@pytest.mark.parametrize("cut", range(13))
def test_rfc9292_indeterminate_request_loses_up_to_12_bytes(cut: int) -> None:
    # Section 5.1: "anything up to 12 bytes can be removed from this message without
    # affecting its meaning".
    assert Request.decode(FIGURE_9[: len(FIGURE_9) - cut]) == FIGURE_7


def test_rfc9292_indeterminate_request_truncated_inside_headers_is_invalid() -> None:
    # 13 bytes removed cuts into the last header field line.
    with pytest.raises(BinaryHttpError):
        Request.decode(FIGURE_9[:-13])


def test_rfc9292_response_with_informational_responses_decodes() -> None:
    assert Response.decode(FIGURE_11) == FIGURE_10


def test_rfc9292_known_length_response_decodes() -> None:
    assert Response.decode(FIGURE_13) == FIGURE_12


def test_rfc9292_known_length_response_encodes_byte_for_byte() -> None:
    assert FIGURE_12.encode() == FIGURE_13


def test_rfc9458_truncated_request_decodes() -> None:
    assert Request.decode(RFC9458_REQUEST) == Request("GET", "https", "example.com", "/")


def test_rfc9458_truncated_request_encodes_with_truncate() -> None:
    assert Request("GET", "https", "example.com", "/").encode(truncate=True) == RFC9458_REQUEST


def test_rfc9458_truncated_response_round_trips() -> None:
    assert Response.decode(RFC9458_RESPONSE) == Response(200)
    assert Response(200).encode(truncate=True) == RFC9458_RESPONSE


def test_informational_responses_encode_in_known_length_form() -> None:
    # Re-encoding Figure 10 in the known-length form must read back as Figure 10 (the RFC
    # shows only its indeterminate-length form).
    assert Response.decode(FIGURE_10.encode()) == FIGURE_10


# RFC 9000 Appendix A.1: "the eight-byte sequence 0xc2197c5eff14e88c decodes to the decimal
# value 151,288,809,941,952,652; the four-byte sequence 0x9d7f3e7d decodes to 494,878,333;
# the two-byte sequence 0x7bbd decodes to 15,293; and the single byte 0x25 decodes to 37
# (as does the two-byte sequence 0x4025)."
VARINTS = [
    ("c2197c5eff14e88c", 151_288_809_941_952_652),
    ("9d7f3e7d", 494_878_333),
    ("7bbd", 15_293),
    ("25", 37),
]


@pytest.mark.parametrize(("encoded", "value"), [*VARINTS, ("4025", 37)])
def test_rfc9000_varints_decode(encoded: str, value: int) -> None:
    data = bytes.fromhex(encoded)
    assert decode_varint(data) == (value, len(data))


@pytest.mark.parametrize(("encoded", "value"), VARINTS)
def test_rfc9000_varints_encode_on_the_fewest_bytes(encoded: str, value: int) -> None:
    assert encode_varint(value).hex() == encoded


def test_varint_beyond_62_bits_is_refused() -> None:
    with pytest.raises(BinaryHttpError, match="integer"):
        encode_varint(1 << 62)


def test_longer_integer_encodings_are_accepted() -> None:
    # RFC 9292 Section 3: "Integer values do not need to be encoded on the minimum number
    # of bytes necessary": the header length 0 written on two bytes (0x4000).
    message = unhex("00 03474554 05 6874747073 00 01 2f 4000 00 00")
    assert Request.decode(message) == Request("GET", "https", "", "/")


# A known-length request up to its path: GET https "" "/".
PREFIX = unhex("00 03474554 05 6874747073 00 01 2f")

REJECTED = [
    pytest.param(unhex("04"), "framing indicator", id="framing-indicator-not-0-to-3"),
    pytest.param(unhex("01 40c8"), "framing indicator", id="response-framing-for-a-request"),
    pytest.param(unhex(""), "framing indicator: truncated", id="empty-message"),
    pytest.param(unhex("00 0347 45"), "method: truncated", id="method-truncated"),
    pytest.param(unhex("00 00 05") + b"https" + unhex("00 01 2f"), "method", id="empty-method"),
    pytest.param(
        unhex("00 03 47c554 05") + b"https" + unhex("00 01 2f"),
        "method: not ASCII",
        id="method-not-ascii",
    ),
    pytest.param(
        unhex("00 03") + b"G T" + unhex("05") + b"https" + unhex("00 01 2f"),
        "method: not a token",
        id="method-not-a-token",
    ),
    pytest.param(unhex("00 03") + b"GET" + unhex("00 00 01 2f"), "scheme", id="empty-scheme"),
    pytest.param(
        unhex("00 03") + b"GET" + unhex("05") + b"https" + unhex("00 00"),
        "path: must not be empty",
        id="empty-path",
    ),
    pytest.param(
        unhex("00 03") + b"GET" + unhex("05") + b"https" + unhex("00 01") + b"x",
        "path",
        id="path-not-origin-form",
    ),
    pytest.param(
        unhex("00 03") + b"GET" + unhex("05") + b"https" + unhex("03") + b"a/b" + unhex("01 2f"),
        "authority",
        id="authority-with-slash",
    ),
    pytest.param(
        PREFIX + unhex("0a 01"), "header section: truncated", id="header-section-truncated"
    ),
    pytest.param(
        PREFIX + unhex("03 01 61 05"),
        "header[0].value: truncated",
        id="field-line-overruns-section",
    ),
    pytest.param(
        PREFIX + unhex("02 00 00"), "header[0].name: must not be empty", id="empty-field-name"
    ),
    pytest.param(
        PREFIX + unhex("04 02 6120 00"), "header[0].name: not a token", id="field-name-not-a-token"
    ),
    pytest.param(
        PREFIX + unhex("04 02 61c3 00"), "header[0].name: not a token", id="field-name-not-ascii"
    ),
    pytest.param(
        PREFIX + unhex("08 05") + b":path" + unhex("01 2f"),
        "header[0].name: pseudo-fields",
        id="pseudo-field-in-headers",
    ),
    pytest.param(
        PREFIX + unhex("00 00 08 05") + b":path" + unhex("01 2f"),
        "trailer[0].name: pseudo-fields are not accepted in trailers",
        id="pseudo-field-in-trailers",
    ),
    pytest.param(
        PREFIX + unhex("0e 01 61 0b") + b"secret\r\nx-y",
        "header[0].value: contains CR, LF or NUL",
        id="value-with-crlf",
    ),
    pytest.param(
        PREFIX + unhex("05 01 61 02 0061"),
        "header[0].value: contains CR, LF or NUL",
        id="value-with-nul",
    ),
    pytest.param(
        PREFIX + unhex("05 01 61 02 2061"),
        "header[0].value: starts or ends",
        id="value-with-leading-space",
    ),
    pytest.param(
        PREFIX + unhex("05 01 61 02 6109"),
        "header[0].value: starts or ends",
        id="value-with-trailing-tab",
    ),
    pytest.param(PREFIX + unhex("00 05 6162"), "content: truncated", id="content-truncated"),
    pytest.param(
        PREFIX + unhex("00 00 00 00 01 00"), "padding: must be zero bytes", id="non-zero-padding"
    ),
    pytest.param(
        unhex("02 03") + b"GET" + unhex("05") + b"https" + unhex("00 01 2f 01 61 00"),
        "header[1].name length: truncated",
        id="indeterminate-section-unterminated",
    ),
    pytest.param(
        unhex("02 03") + b"GET" + unhex("05") + b"https" + unhex("00 01 2f 00 03 61"),
        "content chunk: truncated",
        id="indeterminate-chunk-truncated",
    ),
]


@pytest.mark.parametrize(("message", "expected"), REJECTED)
def test_request_rejection(message: bytes, expected: str) -> None:
    with pytest.raises(BinaryHttpError, match=re.escape(expected)):
        Request.decode(message)


REJECTED_RESPONSES = [
    pytest.param(unhex("00"), "framing indicator", id="request-framing-for-a-response"),
    pytest.param(unhex("01 4258"), "status: must be 200 to 599", id="final-status-above-599"),
    pytest.param(unhex("01 40 63"), "status: must be 200 to 599", id="status-below-100"),
    pytest.param(unhex("01 4064 00"), "status: truncated", id="informational-without-final"),
    pytest.param(
        unhex("01 4064"),
        "informational[0].header section length: truncated",
        id="informational-without-headers",
    ),
    pytest.param(
        unhex("03 4066 00 40c8 02 61"),
        "header[0].name: truncated",
        id="indeterminate-name-truncated",
    ),
]


@pytest.mark.parametrize(("message", "expected"), REJECTED_RESPONSES)
def test_response_rejection(message: bytes, expected: str) -> None:
    with pytest.raises(BinaryHttpError, match=re.escape(expected)):
        Response.decode(message)


def test_message_over_the_size_bound_is_refused_before_reading() -> None:
    with pytest.raises(BinaryHttpError, match="message: longer than 100 bytes"):
        Request.decode(FIGURE_8, max_size=100)


def test_too_many_field_lines() -> None:
    line = unhex("01 61 00")  # name "a", empty value
    section = line * (MAX_FIELD_LINES + 1)
    message = PREFIX + encode_varint(len(section)) + section
    with pytest.raises(BinaryHttpError, match=f"more than {MAX_FIELD_LINES} field lines"):
        Request.decode(message)
    at_limit = line * MAX_FIELD_LINES
    assert len(Request.decode(PREFIX + encode_varint(len(at_limit)) + at_limit).headers) == (
        MAX_FIELD_LINES
    )


def test_too_many_informational_responses() -> None:
    interim = unhex("4064 00")  # 100 Continue, no fields
    message = unhex("01") + interim * (MAX_INFORMATIONAL + 1) + unhex("40c8")
    with pytest.raises(BinaryHttpError, match="informational"):
        Response.decode(message)
    allowed = unhex("01") + interim * MAX_INFORMATIONAL + unhex("40c8")
    assert len(Response.decode(allowed).informational) == MAX_INFORMATIONAL


def test_errors_never_echo_message_bytes() -> None:
    message = PREFIX + unhex("0e 01 61 0b") + b"secret\r\nx-y"
    with pytest.raises(BinaryHttpError) as caught:
        Request.decode(message)
    assert "secret" not in str(caught.value)
    assert caught.value.field == "header[0].value"


def test_error_is_a_value_error_and_an_input_error() -> None:
    with pytest.raises(BinaryHttpError) as caught:
        Request.decode(b"\x04")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, InvalidInputError)


@pytest.mark.parametrize(
    ("build", "part"),
    [
        pytest.param(lambda: Request("", "https", "", "/"), "method", id="empty-method"),
        pytest.param(lambda: Request("GET", "1http", "", "/"), "scheme", id="bad-scheme"),
        pytest.param(
            lambda: Request("GET", "https", "", "/", headers=(("A B", b""),)),
            "header[0].name",
            id="bad-name",
        ),
        pytest.param(
            lambda: Request("GET", "https", "", "/", trailers=(("a", b"x\n"),)),
            "trailer[0].value",
            id="bad-trailer-value",
        ),
        pytest.param(lambda: Response(199), "status", id="final-status-1xx"),
        pytest.param(
            lambda: Response(200, informational=(Informational(200),)),
            "status",
            id="informational-status-2xx",
        ),
        pytest.param(
            lambda: Response(200, content="text"),  # type: ignore[arg-type]
            "content",
            id="content-not-bytes",
        ),
    ],
)
def test_construction_checks_the_same_rules(build: Callable[[], object], part: str) -> None:
    with pytest.raises(BinaryHttpError) as caught:
        build()
    assert caught.value.field == part


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_VALUE = st.binary(max_size=40).filter(
    lambda v: not (set(v) & {0, 10, 13}) and (not v or (v[0] not in b" \t" and v[-1] not in b" \t"))
)
_FIELDS = st.lists(st.tuples(_TOKEN, _VALUE), max_size=6).map(tuple)


@given(
    method=st.sampled_from(["GET", "POST", "PUT"]),
    authority=st.sampled_from(["", "example.com", "127.0.0.1:8443"]),
    path=st.sampled_from(["/", "/v1/submit", "/a?b=c", "*"]),
    headers=_FIELDS,
    content=st.binary(max_size=200),
    trailers=_FIELDS,
    truncate=st.booleans(),
)
def test_requests_round_trip(
    method: str,
    authority: str,
    path: str,
    headers: tuple[tuple[str, bytes], ...],
    content: bytes,
    trailers: tuple[tuple[str, bytes], ...],
    truncate: bool,
) -> None:
    request = Request(method, "https", authority, path, headers, content, trailers)
    encoded = request.encode(truncate=truncate)
    assert Request.decode(encoded) == request
    assert Request.decode(encoded + bytes(7)) == request  # padding changes nothing


@given(
    status=st.integers(200, 599),
    interim=st.lists(st.tuples(st.integers(100, 199), _FIELDS), max_size=3),
    headers=_FIELDS,
    content=st.binary(max_size=200),
    trailers=_FIELDS,
    truncate=st.booleans(),
)
def test_responses_round_trip(
    status: int,
    interim: list[tuple[int, tuple[tuple[str, bytes], ...]]],
    headers: tuple[tuple[str, bytes], ...],
    content: bytes,
    trailers: tuple[tuple[str, bytes], ...],
    truncate: bool,
) -> None:
    informational = tuple(Informational(s, f) for s, f in interim)
    response = Response(status, headers, content, trailers, informational)
    assert Response.decode(response.encode(truncate=truncate)) == response

"""The presentation (docs/formats.md): ``SCP1:`` + base45(COSE_Sign1 || salt), its QR code,
and reading the QR back from a screenshot or a photo."""

from __future__ import annotations

import io
import pathlib
from xml.etree import ElementTree

import pytest
import segno
from PIL import Image, ImageDraw, ImageFilter
from staycheck.client.qr import (
    MAX_IMAGE_BYTES,
    ImageError,
    draw_qr,
    qr_code,
    read_qr,
    write_qr,
)
from staycheck.geo.errors import MalformedError
from staycheck.geo.itinerary import Status
from staycheck.trust import base45
from staycheck.trust.binding import BindingParameters
from staycheck.trust.keys import Ed25519Signer
from staycheck.trust.presentation import Presentation, present, read_presentation
from staycheck.trust.verdict import TokenSigner, issue_verdict

from tests.helpers import DAY, NOW

ALPHANUMERIC = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")  # ISO/IEC 18004 7.4.4
QR_10_M_ALPHANUMERIC = 311  # ISO/IEC 18004 table 7: version 10, level M, alphanumeric
SALT = bytes(range(100, 116))
BINDING = bytes(range(32))


def token(*, bound: bool, version: int = 7, issuer: str = "110000") -> str:
    verdict = issue_verdict(
        Status.REVIEW_REQUIRED,
        now=NOW,
        issuer=issuer,
        riskset_version=version,
        bundle_expires_at=NOW + DAY,
        binding=BINDING if bound else b"",
        binding_params=BindingParameters() if bound else None,
    )
    return TokenSigner(Ed25519Signer.generate()).sign(verdict)


def cose_of(text: str) -> bytes:
    assert text.startswith("SC1:")
    return base45.b45decode(text[4:])


def test_bound_presentation_is_the_documented_layout():
    t = token(bound=True)
    text = present(t, SALT)
    assert text == "SCP1:" + base45.b45encode(cose_of(t) + SALT)
    p = read_presentation(text)
    assert p == Presentation(cose_of(t), SALT)
    assert p.token_text == t
    assert p.verdict().binding == BINDING


def test_unbound_presentation_carries_no_salt():
    t = token(bound=False)
    text = present(t)
    assert text == "SCP1:" + t[len("SC1:") :]
    assert read_presentation(text) == Presentation(cose_of(t), b"")


def test_a_bare_token_reads_as_a_presentation_without_salt():
    t = token(bound=True)
    assert read_presentation(f" {t}\n") == Presentation(cose_of(t), b"")


@pytest.mark.parametrize("version", [1, 2**32 - 1, 2**63 - 1])
def test_a_bound_presentation_fits_qr_version_10_at_level_m(version):
    """SPEC.md: alphanumeric mode, version 10 or less at level M, for any bundle version a
    token may carry and a six-digit issuer code."""
    text = present(token(bound=True, version=version), SALT)
    assert set(text) <= ALPHANUMERIC
    assert len(text) <= QR_10_M_ALPHANUMERIC
    qr = qr_code(text)
    assert qr.version <= 10
    assert qr.error == "M"
    assert qr.mode == "alphanumeric"


def salt_cases() -> list[tuple[str, bool, bytes]]:
    return [
        ("bound_without_salt", True, b""),
        ("bound_short_salt", True, SALT[:15]),
        ("bound_long_salt", True, SALT + b"\x00"),
        ("unbound_with_salt", False, SALT),
        ("unbound_with_one_byte", False, b"\x00"),
    ]


@pytest.mark.parametrize(
    ("bound", "tail"), [c[1:] for c in salt_cases()], ids=[c[0] for c in salt_cases()]
)
def test_salt_must_be_exactly_what_the_token_needs(bound, tail):
    t = token(bound=bound)
    with pytest.raises(MalformedError):
        read_presentation("SCP1:" + base45.b45encode(cose_of(t) + tail))
    with pytest.raises(MalformedError):
        present(t, tail)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SCP1:",
        "SCP2:" + token(bound=False)[4:],  # another layout version
        "scp1:" + token(bound=False)[4:],
        "SCP1:" + token(bound=False)[4:] + "A",  # length 3n+1 is not base45
        "SCP1:" + base45.b45encode(b"\x00" * 40),  # not a COSE_Sign1
        "SCP1:" + base45.b45encode(b"\xd2\x84"),  # a COSE_Sign1 cut short
        "SCP1:" + "0" * 4000,  # too long
        "HC1:" + token(bound=False)[4:],
    ],
)
def test_malformed_presentations_are_refused(text):
    with pytest.raises(MalformedError):
        read_presentation(text)


def test_a_presentation_hides_its_salt_in_repr():
    p = read_presentation(present(token(bound=True), SALT))
    assert SALT.hex() not in repr(p) and repr(SALT) not in repr(p)


# --- the QR code --------------------------------------------------------------------------


def test_png_round_trip(tmp_path: pathlib.Path):
    text = present(token(bound=True), SALT)
    write_qr(text, tmp_path / "v.png")
    assert read_qr(tmp_path / "v.png") == text


def test_svg_is_a_qr_of_the_documented_size(tmp_path: pathlib.Path):
    text = present(token(bound=True), SALT)
    write_qr(text, tmp_path / "v.svg")
    root = ElementTree.parse(tmp_path / "v.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # ISO/IEC 18004: version v has 4v + 17 modules a side; 4 of quiet zone each side; 6 px.
    side = (4 * qr_code(text).version + 17 + 2 * 4) * 6
    assert (root.get("width"), root.get("height")) == (str(side), str(side))


def test_other_image_types_are_refused(tmp_path: pathlib.Path):
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        write_qr("SCP1:", tmp_path / "v.gif")


def photo_of(png: pathlib.Path, out: pathlib.Path) -> None:
    """What a phone camera gives a hotel: the code small on a grey desk, turned, blurred and
    saved as a JPEG."""
    code = Image.open(png).convert("L")
    desk = Image.new("L", (code.width * 2, code.height * 2), 170)
    ImageDraw.Draw(desk).rectangle((0, 0, desk.width // 3, desk.height), fill=120)
    desk.paste(code, (code.width // 2, code.width // 3))
    turned = desk.rotate(17, resample=Image.Resampling.BICUBIC, fillcolor=170)
    soft = turned.filter(ImageFilter.GaussianBlur(1.2))
    soft.resize((soft.width * 3 // 4, soft.height * 3 // 4)).save(out, quality=60)


def test_a_photo_of_the_code_reads(tmp_path: pathlib.Path):
    text = present(token(bound=True), SALT)
    write_qr(text, tmp_path / "v.png")
    photo_of(tmp_path / "v.png", tmp_path / "photo.jpg")
    assert read_qr(tmp_path / "photo.jpg") == text


def test_an_image_without_a_code_is_refused(tmp_path: pathlib.Path):
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="no readable QR code"):
        read_qr(tmp_path / "blank.png")


def test_a_file_that_is_not_an_image_is_refused(tmp_path: pathlib.Path):
    (tmp_path / "v.png").write_text("SCP1:not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_qr(tmp_path / "v.png")


@pytest.mark.parametrize("side", [7_000, 20_000])
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: pathlib.Path, side: int):
    """A 1-bit PNG of 7 000 or 20 000 pixels a side is a few KB on disk and 49 or 400 million
    pixels decoded: refused from its header (ours above 40 million, Pillow's own above
    twice its limit), before a pixel is decoded."""
    Image.new("1", (side, side), 1).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    with pytest.raises(ImageError, match=r"pixels|DecompressionBomb"):
        read_qr(tmp_path / "bomb.png")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: pathlib.Path):
    with (tmp_path / "huge.png").open("wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(ImageError, match="larger than"):
        read_qr(tmp_path / "huge.png")


def test_a_truncated_png_is_an_image_error(tmp_path: pathlib.Path):
    text = present(token(bound=False))
    write_qr(text, tmp_path / "v.png")
    data = (tmp_path / "v.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not an image that can be read"):
        read_qr(tmp_path / "cut.png")


def test_two_different_codes_in_one_image_are_refused(tmp_path: pathlib.Path):
    a, b = segno.make("SCP1:AAAA", error="M"), segno.make("SCP1:BBBB", error="M")
    a.save(tmp_path / "a.png", scale=6)
    b.save(tmp_path / "b.png", scale=6)
    left, right = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    both = Image.new("L", (left.width + right.width + 40, max(left.height, right.height)), 255)
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 40, 0))
    both.save(tmp_path / "both.png")
    with pytest.raises(ImageError, match="more than one"):
        read_qr(tmp_path / "both.png")


def test_terminal_drawing_is_the_code():
    """``--qr -``: half blocks, two module rows per line, with the quiet zone (light
    modules are drawn as blocks: light text on a dark terminal)."""
    text = present(token(bound=False))
    out = io.StringIO()
    draw_qr(text, out)
    lines = out.getvalue().splitlines()
    side = qr_code(text).symbol_size(border=4)[0]
    assert len(lines) == (side + 1) // 2
    assert all(len(line) == side for line in lines)
    assert set("".join(lines)) <= {" ", "\u2580", "\u2584", "\u2588"}
    assert lines[0] == "\u2588" * side  # the quiet zone's first two rows


@pytest.mark.parametrize("module", ["segno", "zxingcpp", "PIL"])
@pytest.mark.parametrize("default", ["client", "server", None])
def test_a_missing_qr_package_names_the_qr_extra(module: str, default: str | None):
    """``staycheck demo`` (a server command) on an install without the qr extra must say
    ``pip install 'staycheck[qr]'``: the server extra does not bring segno or zxing-cpp."""
    from staycheck.cli.common import missing_extra

    error = ModuleNotFoundError(f"No module named {module!r}", name=module)
    assert missing_extra(error, default=default or "client") == "qr"

"""QR codes of presentations: drawn with segno, read back with zxing-cpp.

Needs the ``qr`` extra (``pip install 'staycheck[qr]'``: segno, a pure-Python encoder;
zxing-cpp and Pillow to read a photo or a screenshot). The code is always alphanumeric mode
at error correction level M (what docs/formats.md promises a scanner); segno picks the
smallest version that holds the text.
"""

from __future__ import annotations

import pathlib
from typing import IO, Any

from staycheck.geo.errors import MalformedError

ERROR_LEVEL = "M"
IMAGE_SUFFIXES = (".png", ".svg")
QUIET_ZONE = 4
"""Modules of white border around the code (ISO/IEC 18004 asks for four)."""


def qr_code(text: str) -> Any:
    """The ``segno.QRCode`` of a presentation: alphanumeric mode, level M exactly."""
    import segno

    return segno.make(text, error=ERROR_LEVEL, mode="alphanumeric", boost_error=False, micro=False)


def write_qr(text: str, path: pathlib.Path, *, scale: int = 6) -> None:
    """Write the QR code of ``text`` to ``path`` as PNG or SVG (by its suffix)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: the QR image must be a .png or .svg file")
    qr_code(text).save(str(path), scale=scale, border=QUIET_ZONE)


def draw_qr(text: str, out: IO[str]) -> None:
    """Draw the QR code on a terminal (two modules per character cell)."""
    qr_code(text).terminal(out=out, border=QUIET_ZONE, compact=True)


def read_qr(path: pathlib.Path) -> str:
    """The text of the one QR code in the image at ``path`` (PNG, JPEG, a photo or a
    screenshot); :class:`MalformedError` when there is none, or more than one."""
    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            gray = image.convert("L")
        only_qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
        results = zxingcpp.read_barcodes(gray, formats=only_qr)
    except UnidentifiedImageError:
        raise MalformedError(f"{path}: not an image Pillow can read") from None
    texts = [r.text for r in results if r.valid]
    if not texts:
        raise MalformedError(f"{path}: no readable QR code in the image")
    if len(set(texts)) > 1:
        raise MalformedError(f"{path}: more than one QR code in the image; show one")
    return texts[0]

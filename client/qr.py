"""QR codes of presentations: drawn with segno, read back with zxing-cpp.

Needs the ``qr`` extra (``pip install 'staycheck[qr]'``: segno, a pure-Python encoder;
zxing-cpp and Pillow to read a photo or a screenshot). The code is always alphanumeric mode
at error correction level M (what docs/formats.md promises a scanner); segno picks the
smallest version that holds the text.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import IO, Any

ERROR_LEVEL = "M"
IMAGE_SUFFIXES = (".png", ".svg")
QUIET_ZONE = 4
"""Modules of white border around the code (ISO/IEC 18004 asks for four)."""
MAX_IMAGE_BYTES = 20 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
"""A 40-megapixel photo is more than any phone takes; beyond, a file is refused before any
pixel is decoded (a 76 KB PNG can declare 20 000 x 20 000 pixels: 400 MB)."""
MAX_SIDE = 4000
"""Images are scaled down to this side before decoding the code (a version-10 code needs a
few hundred pixels)."""


class ImageError(ValueError):
    """The image cannot give a presentation: an input error (exit 2), not a refusal."""


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
    screenshot). :class:`ImageError` (a ``ValueError``) when the file is too large, not an
    image, damaged, or holds no readable code or more than one; ``OSError`` when it cannot
    be read at all."""
    import zxingcpp
    from PIL import Image

    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    with warnings.catch_warnings():
        # Pillow's decompression-bomb warning is an error here, before any pixel is decoded.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{path}: {width} x {height} pixels; at most {MAX_IMAGE_PIXELS:,} "
                        "(a photo of a QR code needs far fewer)"
                    )
                image.draft("L", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size
                gray = image.convert("L")
        except ImageError:
            raise
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except (
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombWarning,
            Image.DecompressionBombError,
        ) as e:
            # Pillow's UnidentifiedImageError, truncated files, bombs: the image's fault.
            raise ImageError(
                f"{path}: not an image that can be read ({type(e).__name__})"
            ) from None
    gray.thumbnail((MAX_SIDE, MAX_SIDE))
    only_qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    texts = [r.text for r in zxingcpp.read_barcodes(gray, formats=only_qr) if r.valid]
    if not texts:
        raise ImageError(f"{path}: no readable QR code in the image")
    if len(set(texts)) > 1:
        raise ImageError(f"{path}: more than one QR code in the image; show one")
    return texts[0]

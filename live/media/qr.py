"""Find QR codes and other 2-D codes in uploaded images (product photos must not carry contacts).

A QR code in a product photo is the classic way to move a buyer off the platform (a WeChat
contact card, a payment code, a shop link), so listings refuse photos that carry one.

Only 2-D (matrix) symbologies are looked for by default: QR, Micro QR, rMQR, Data Matrix,
Aztec, PDF417, MaxiCode. A 1-D retail barcode (EAN/UPC) on a product's box is a product
number, normal in a product photo, and is ignored unless ``include_linear=True``.

Decoding is CPU work (tens of milliseconds on a large photo): call it off the event loop,
e.g. ``await asyncio.to_thread(find_qr_codes, data)``.
"""

from __future__ import annotations

import io
import warnings

import zxingcpp
from PIL import Image, UnidentifiedImageError

from live.core.errors import Invalid

# Larger photos are shrunk before decoding so the cost stays bounded; a QR code big enough
# to be scanned by a buyer's phone from the screen survives this comfortably.
MAX_SIDE = 2000
# Refuse absurd dimensions before decoding pixels (a small file can declare a huge image).
MAX_PIXELS = 50_000_000


def find_qr_codes(image_bytes: bytes, *, include_linear: bool = False) -> list[str]:
    """Decoded texts of every QR code (or other 2-D code) found in the image; empty when none.

    Raises ``live.core.errors.Invalid`` when the bytes are not a readable image.
    """
    image = _open(image_bytes)
    formats = zxingcpp.BarcodeFormats(
        zxingcpp.BarcodeFormat.All if include_linear else zxingcpp.BarcodeFormat.AllMatrix)
    found = zxingcpp.read_barcodes(image, formats=formats)
    texts: list[str] = []
    for code in found:
        # A code whose bytes are not text still counts; report it by its format so the caller
        # refuses it and can log something readable.
        text = code.text or f"<{code.format.name}>"
        if text not in texts:
            texts.append(text)
    return texts


def _open(image_bytes: bytes) -> Image.Image:
    """Decode, check the size, flatten to 8-bit grey and shrink a large photo."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(image_bytes))
            if image.width * image.height > MAX_PIXELS:
                raise Invalid("image too large")
            # JPEG can be decoded straight at a reduced scale (and in grey): several times faster
            # than decoding a phone photo in full and shrinking it afterwards.
            image.draft("L", (MAX_SIDE, MAX_SIDE))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Invalid("not a readable image") from exc
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # A transparent PNG's hidden pixels are often black: paint it on white as a viewer sees it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    grey = image.convert("L")
    if max(grey.size) > MAX_SIDE:
        grey.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return grey

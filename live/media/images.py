"""Product photos: validated, made safe and sized before anyone sees them.

Accepts JPEG, PNG and WebP only, within a byte and a pixel budget (checked from the header,
before decoding, so a decompression bomb is refused without being expanded). The picture is
turned upright from its EXIF orientation, stripped of all metadata (EXIF, GPS, ICC), and
re-encoded as a JPEG at a display size and as a thumbnail.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from live.core.errors import Invalid

ALLOWED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    display: bytes  # JPEG, longest side <= display_px
    thumb: bytes  # JPEG, longest side <= thumb_px
    width: int
    height: int
    source_format: str


class ImagePipeline:
    def __init__(self, *, max_bytes: int, max_pixels: int, display_px: int, thumb_px: int) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.display_px = display_px
        self.thumb_px = thumb_px

    def process(self, data: bytes) -> ProcessedImage:
        """Validate and re-encode; raises ``Invalid`` with a reason a person can act on.

        CPU-bound: call it through ``asyncio.to_thread``.
        """
        if not data:
            raise Invalid("image: empty file")
        if len(data) > self.max_bytes:
            raise Invalid(f"image: larger than {self.max_bytes // (1024 * 1024)} MiB")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img: Image.Image = Image.open(io.BytesIO(data))
                fmt = getattr(img, "format", None) or ""
                if fmt not in ALLOWED:
                    raise Invalid("image: only JPEG, PNG and WebP are accepted")
                if img.width * img.height > self.max_pixels:
                    raise Invalid(f"image: more than {self.max_pixels} pixels")
                if img.width < 16 or img.height < 16:
                    raise Invalid("image: smaller than 16x16 pixels")
                img.load()
        except Invalid:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Invalid(f"image: not a valid picture ({type(e).__name__})") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise Invalid(f"image: damaged or truncated ({e})") from e
        img = ImageOps.exif_transpose(img)
        if img.mode not in ("RGB", "L"):
            background = Image.new("RGB", img.size, (255, 255, 255))
            rgba = img.convert("RGBA")
            background.paste(rgba, mask=rgba.getchannel("A"))
            img = background
        img = img.convert("RGB")
        width, height = img.size
        return ProcessedImage(self._jpeg(img, self.display_px, 85), self._jpeg(img, self.thumb_px, 80),
                              width, height, fmt)

    @staticmethod
    def _jpeg(img: Image.Image, px: int, quality: int) -> bytes:
        copy = img.copy()
        copy.thumbnail((px, px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        # No exif= / icc_profile= arguments: the output carries no metadata at all.
        copy.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
        return out.getvalue()

"""Reading images: one path from a file to RGB pixels, for training data and inference alike.

Every image that enters MIO, whether `mio prepare` reads it into shards or `MIO.chat` reads
it from a user, goes through `open_image` and `to_rgb`, so the same file gives the same
pixels in training and at inference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from mio.media.files import readable

# Images with more pixels than this are refused before decoding (decompression bombs).
DEFAULT_MAX_PIXELS = 64_000_000
_MAX_16BIT = 65535.0
_MAX_8BIT = 255.0


class ImageFileError(ValueError):
    """An image file cannot be used; the message names the file and the problem."""


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Any PIL mode -> 8-bit RGB. Transparency is composited on white; 16-bit and 32-bit
    integer images are scaled to 8 bits (a plain `convert` would clip them to white); float
    images are scaled from their lowest to their highest finite value. An image without
    pixels is refused."""
    if image.width == 0 or image.height == 0:
        raise ImageFileError(f"image is {image.width}x{image.height}, it has no pixels")
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = _MAX_16BIT if values.max(initial=0) <= _MAX_16BIT else values.max()
        gray = np.clip(values / top * _MAX_8BIT, 0, _MAX_8BIT).astype(np.uint8)
        return PILImage.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(values)
        # A NaN or infinite pixel must not set the scale of the others: it draws as black.
        values = np.where(finite, values, values[finite].min(initial=0))
        lo, hi = values.min(initial=0), values.max(initial=1)
        gray = ((values - lo) / max(hi - lo, 1e-12) * _MAX_8BIT).astype(np.uint8)
        return PILImage.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> PILImage.Image:
    """Read an image file (a path, or the file's bytes) as RGB, refusing oversized, truncated
    or corrupt files with an `ImageFileError` naming the file."""
    name, stream = readable(source, "image", lambda path: ImageFileError(f"{path}: image file not found"))
    try:
        with PILImage.open(stream) as image:
            # The header alone gives the size, so a huge image is refused before decoding.
            if image.width * image.height > max_pixels:
                raise ImageFileError(
                    f"{name}: image is {image.width}x{image.height}, more than the {max_pixels} pixel limit"
                )
            if image.width == 0 or image.height == 0:
                raise ImageFileError(f"{name}: image is {image.width}x{image.height}, it has no pixels")
            image.load()
            # Cameras store rotated pixels and an EXIF orientation; apply it as viewers do.
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageFileError:
        raise
    except PILImage.DecompressionBombError as e:
        raise ImageFileError(f"{name}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unreadable / truncated data
        raise ImageFileError(f"{name}: cannot read image ({e})") from None

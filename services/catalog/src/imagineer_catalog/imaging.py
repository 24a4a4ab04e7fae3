"""What the catalog needs to know about image files: format, size, a thumbnail."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imagineer_common.perceptual import perceptual_hash

THUMBNAIL_MAX_SIDE = 256
SUPPORTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
                     "BMP": "image/bmp"}
# Refuse decompression bombs well below Pillow's own warning threshold.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


class NotAnImage(ValueError):
    """The bytes are not an image in a supported format."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    content_type: str
    width: int
    height: int
    perceptual_hash: str = ""  # imagineer_common.perceptual's hash; empty when it could not be computed


def hash_file(path: Path) -> str:
    """The perceptual hash of an image file, or "" when it cannot be read."""
    try:
        with Image.open(path) as image:
            return perceptual_hash(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return ""


def probe(path: Path) -> ImageInfo:
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            fmt = (image.format or "").upper()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise NotAnImage(f"not a readable image: {error}") from None
    if fmt not in SUPPORTED_FORMATS:
        raise NotAnImage(f"unsupported image format {fmt or 'unknown'}; supported: {', '.join(SUPPORTED_FORMATS)}")
    return ImageInfo(format=fmt, content_type=SUPPORTED_FORMATS[fmt], width=width, height=height,
                     perceptual_hash=hash_file(path))


def make_thumbnail(path: Path) -> tuple[bytes, int, int]:
    """A JPEG at most THUMBNAIL_MAX_SIDE pixels on its longer side."""
    with Image.open(path) as image:
        image.seek(0)
        preview = image.convert("RGBA") if image.mode in ("P", "LA", "PA") else image.copy()
    if preview.mode not in ("RGB", "L"):
        background = Image.new("RGB", preview.size, (255, 255, 255))
        if preview.mode == "RGBA":
            background.paste(preview, mask=preview.getchannel("A"))
        else:
            background.paste(preview.convert("RGB"))
        preview = background
    preview.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), preview.width, preview.height


def encoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height

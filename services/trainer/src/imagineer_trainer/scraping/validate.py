"""Whether downloaded bytes are an image worth keeping: decodable, a wanted format, big enough, not too thin.

Returns the skip reason (undecodable, format, too_small, bad_aspect) or the picture's facts, including the
perceptual hash the catalog computes the same way (imagineer_common.perceptual).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from imagineer_common.perceptual import perceptual_hash

FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
MAX_PIXELS = 16384 * 16384  # the catalog's own limit


@dataclass(frozen=True)
class Rules:
    min_width: int
    min_height: int
    max_aspect: float  # longer side / shorter side
    formats: frozenset[str]  # keys of FORMATS


@dataclass(frozen=True)
class Picture:
    format: str  # Pillow's name: PNG, JPEG...
    width: int
    height: int
    perceptual_hash: str


def check(data: bytes, rules: Rules) -> Picture | str:
    """The picture, or why it is skipped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
            with Image.open(io.BytesIO(data)) as image:
                fmt = (image.format or "").upper()
                width, height = image.size
                if width * height > MAX_PIXELS:
                    return "too_large"
                image.load()
                phash = perceptual_hash(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        return "undecodable"
    if fmt not in {FORMATS[name] for name in rules.formats}:
        return "format"
    if width < rules.min_width or height < rules.min_height:
        return "too_small"
    if max(width, height) / max(1, min(width, height)) > rules.max_aspect:
        return "bad_aspect"
    return Picture(format=fmt, width=width, height=height, perceptual_hash=phash)

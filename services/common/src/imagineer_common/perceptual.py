"""A perceptual hash of an image (a 64-bit difference hash), shared by the catalog, which stores one for every
image, and the scraper, which looks for near duplicates before it imports anything: both must compute the very
same value, so both call this.

The image (its first frame, transparency flattened onto white) is reduced to 9x8 grey pixels; each bit says
whether a pixel is brighter than its left neighbour. Re-encoding, mild resizing or recompression flip few of
the 64 bits; different pictures differ in about half of them. The hash is written as 16 lowercase hex digits.
"""

from __future__ import annotations

from PIL import Image

HASH_BITS = 64
HASH_HEX_DIGITS = HASH_BITS // 4
_WIDTH, _HEIGHT = 9, 8


def _grey(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("L")
    return image.convert("L")


def perceptual_hash(image: Image.Image) -> str:
    """The difference hash of an open image, as 16 hex digits."""
    small = _grey(image).resize((_WIDTH, _HEIGHT), Image.Resampling.LANCZOS)
    pixels = small.tobytes()  # one byte a pixel in mode L
    value = 0
    for row in range(_HEIGHT):
        for column in range(_WIDTH - 1):
            left = pixels[row * _WIDTH + column]
            right = pixels[row * _WIDTH + column + 1]
            value = (value << 1) | (1 if right > left else 0)
    return f"{value:0{HASH_HEX_DIGITS}x}"


def is_perceptual_hash(text: str) -> bool:
    """Whether ``text`` is a hash as perceptual_hash writes it."""
    return len(text) == HASH_HEX_DIGITS and all(c in "0123456789abcdef" for c in text)


def distance(first: str, second: str) -> int:
    """How many of the 64 bits differ between two hashes (0 = the same picture as far as the hash can tell)."""
    return (int(first, 16) ^ int(second, 16)).bit_count()

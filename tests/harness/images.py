"""Tiny, distinct test images made on the fly."""

from __future__ import annotations

import io
import random

from PIL import Image


def png_bytes(width: int = 16, height: int = 16, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small noise image; a different seed gives different bytes."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(width * height)])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def picture(width: int = 96, height: int = 96, seed: int = 0) -> Image.Image:
    """A smooth, colourful picture (waves of seed-chosen direction and phase): unlike noise, it keeps its
    perceptual hash when re-encoded or resized, and pictures of different seeds have very different hashes."""
    import math

    rng = random.Random(seed)
    waves = [(rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(0, 6.3)) for _ in range(6)]
    pixels = []
    for y in range(height):
        for x in range(width):
            u, v = x / width, y / height
            values = [math.sin(a * u * 3.1 + b * v * 3.1 + c) for a, b, c in waves]
            pixels.append(tuple(int(127.5 + 63 * (values[i] + values[i + 3])) for i in range(3)))
    image = Image.new("RGB", (width, height))
    image.putdata(pixels)
    return image


def picture_bytes(width: int = 96, height: int = 96, seed: int = 0, fmt: str = "PNG", **save) -> bytes:
    """``picture`` encoded as ``fmt`` (PNG, JPEG, WEBP, GIF...)."""
    buffer = io.BytesIO()
    image = picture(width, height, seed)
    if fmt == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()

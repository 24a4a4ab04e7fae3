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

"""Dataset assembly: catalog images with their labels become (image, caption) training examples.

The catalog hands the trainer each image's bytes, its labels and the prompt that generated it (if any); this module
decides the caption of each image, decodes the image, and says why any image was left out. It knows nothing about
gRPC or the catalog's database; the caller fetches the data.

Caption rules (``caption_source``):

* ``"default"``: the newest ``caption`` label, else the ``manual`` labels joined with ", ", else the ``tag`` labels
  joined with ", " (a multi-word tag such as "golden hour" stays whole), else the generation prompt;
* ``"labels"``: the same, without the prompt fallback;
* ``"prompt"``: only the generation prompt.

``user`` and ``ai_generated`` labels (ratings, notes) never become captions. Labels are given oldest first, so the
newest caption is the last one. A trigger word, when given, is prepended: ``"<trigger>, <caption>"``.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

CAPTION_SOURCES = ("default", "labels", "prompt")
LABEL_TYPES = ("caption", "tag", "manual", "user", "ai_generated")

SKIP_NO_CAPTION = "no caption"
SKIP_UNREADABLE = "not a readable image"


class DatasetError(Exception):
    """The dataset cannot be assembled. ``reason`` is a stable UPPER_SNAKE code for clients (ErrorInfo.reason).

    Codes: ``INVALID_CAPTION_SOURCE`` (bad input), ``NO_USABLE_IMAGES`` (every image was skipped, or there were
    none; ``skipped`` counts the reasons).
    """

    def __init__(self, reason: str, message: str, *, skipped: dict[str, int] | None = None) -> None:
        self.reason = reason
        self.message = message
        self.skipped = dict(skipped or {})
        super().__init__(message)


@dataclass
class SourceImage:
    """One catalog image as the trainer receives it. ``labels`` are (label_type, text) pairs, oldest first."""

    image_id: str
    data: bytes
    labels: list[tuple[str, str]] = field(default_factory=list)
    prompt: str = ""


@dataclass
class TrainingExample:
    image_id: str
    image: Image.Image  # RGB
    caption: str


def choose_caption(source: SourceImage, caption_source: str) -> str:
    """The caption ``source`` gets under ``caption_source`` (without trigger word), or "" when it has none."""
    if caption_source not in CAPTION_SOURCES:
        raise DatasetError(
            "INVALID_CAPTION_SOURCE",
            f"caption source {caption_source!r} is not one of {', '.join(CAPTION_SOURCES)}",
        )
    prompt = (source.prompt or "").strip()
    if caption_source == "prompt":
        return prompt
    by_type: dict[str, list[str]] = {kind: [] for kind in LABEL_TYPES}
    for label_type, text in source.labels:
        text = (text or "").strip()
        if text and label_type in by_type and text not in by_type[label_type]:
            by_type[label_type].append(text)
    if by_type["caption"]:
        return by_type["caption"][-1]
    if by_type["manual"]:
        return ", ".join(by_type["manual"])
    if by_type["tag"]:
        return ", ".join(by_type["tag"])
    return prompt if caption_source == "default" else ""


def caption_for(labels: list[tuple[str, str]], prompt: str, caption_source: str, trigger_word: str = "") -> str:
    """The full caption (trigger word included) of an image with these labels and prompt, or "" when it has none.

    Needs no image data, so a service can count usable images before fetching any."""
    caption = choose_caption(SourceImage(image_id="", data=b"", labels=list(labels), prompt=prompt), caption_source)
    return with_trigger(caption, trigger_word) if caption else ""


def with_trigger(caption: str, trigger_word: str) -> str:
    trigger = (trigger_word or "").strip()
    return f"{trigger}, {caption}" if trigger else caption


def decode_image(data: bytes) -> Image.Image | None:
    """The image in ``data`` as RGB (EXIF orientation applied, transparency on white), or None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except Exception:  # PIL raises many kinds for broken data (OSError, ValueError, SyntaxError, DecompressionBomb)
        return None


def build_examples(
    sources: Iterable[SourceImage], *, caption_source: str = "default", trigger_word: str = "",
    resolution: int | None = None,
) -> tuple[list[TrainingExample], list[tuple[str, str]]]:
    """The usable examples, in input order, and the skipped images as (image_id, reason) pairs.

    ``sources`` is read once, one at a time, so a caller can fetch each image's bytes as it is needed. With
    ``resolution``, an image larger than the training size is shrunk to it as it is decoded (the resize
    ``prepare_image`` would do at every step, done once): a large photo then costs memory for the pixels training
    uses, not for the full picture, and training sees exactly the same pixels.

    Raises DatasetError ``INVALID_CAPTION_SOURCE`` for an unknown rule and ``NO_USABLE_IMAGES`` when nothing is
    left (the message counts the reasons).
    """
    if caption_source not in CAPTION_SOURCES:
        raise DatasetError(
            "INVALID_CAPTION_SOURCE",
            f"caption source {caption_source!r} is not one of {', '.join(CAPTION_SOURCES)}",
        )
    examples: list[TrainingExample] = []
    skipped: list[tuple[str, str]] = []
    for source in sources:
        caption = choose_caption(source, caption_source)
        if not caption:
            skipped.append((source.image_id, SKIP_NO_CAPTION))
            continue
        image = decode_image(source.data)
        if image is None:
            skipped.append((source.image_id, SKIP_UNREADABLE))
            continue
        if resolution is not None:
            image = shrink_to_training_size(image, resolution)
        examples.append(TrainingExample(source.image_id, image, with_trigger(caption, trigger_word)))
    if not examples:
        counts = Counter(reason for _, reason in skipped)
        if not skipped:
            message = "the dataset has no images"
        else:
            details = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
            message = f"none of the {len(skipped)} images is usable (caption source {caption_source!r}): {details}"
        raise DatasetError("NO_USABLE_IMAGES", message, skipped=dict(counts))
    return examples, skipped


def training_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The size an image is resized to before a ``resolution`` square is cut from it: shorter side = resolution."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, not {resolution}")
    scale = resolution / min(width, height)
    return max(resolution, round(width * scale)), max(resolution, round(height * scale))


def shrink_to_training_size(image: Image.Image, resolution: int) -> Image.Image:
    """``image`` resized as ``prepare_image`` would resize it, when that makes it smaller; else ``image`` itself."""
    size = training_size(image.width, image.height, resolution)
    if size[0] * size[1] >= image.width * image.height:
        return image
    return image.resize(size, Image.Resampling.BICUBIC)


def crop_box(width: int, height: int, resolution: int, *, random_crop: bool, rng: random.Random) -> tuple[int, int]:
    """The top-left corner of the ``resolution`` square cut from a ``width`` x ``height`` image."""
    spare_x, spare_y = width - resolution, height - resolution
    if random_crop:
        return rng.randint(0, spare_x), rng.randint(0, spare_y)
    return spare_x // 2, spare_y // 2


def prepare_image(image: Image.Image, resolution: int, *, random_crop: bool, rng: random.Random) -> torch.Tensor:
    """A 3 x resolution x resolution float tensor in [-1, 1]: shorter side resized to ``resolution``, then a centre
    crop or (``random_crop``) a crop placed by ``rng``."""
    import numpy as np
    import torch

    image = image.convert("RGB") if image.mode != "RGB" else image
    size = training_size(image.width, image.height, resolution)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = crop_box(size[0], size[1], resolution, random_crop=random_crop, rng=rng)
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())

"""What a labeler returns, how its output is normalized, and the errors it raises."""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from PIL import Image, UnidentifiedImageError

NSFW_RATINGS = ("safe", "suggestive", "adult", "explicit")
FLAGGING_RATINGS = frozenset({"adult", "explicit"})  # these set the image's NSFW flag; the others leave it alone

MAX_CAPTION_CHARS = 1000
MAX_TAG_CHARS = 100
MAX_TAGS = 50


class LabelingError(Exception):
    """This one image could not be labeled; the message says why. Other images may still work."""


class LabelerUnavailable(Exception):
    """The labeler cannot work at all (bad API key, model folder unreadable): no later image would succeed."""


@dataclass(frozen=True)
class ImageLabels:
    caption: str
    tags: tuple[str, ...]
    nsfw: str | None  # one of NSFW_RATINGS, or None when the labeler does not rate images


class Labeler(Protocol):
    name: str  # "local", "anthropic": what relabeling matches on

    @property
    def source_model(self) -> str:
        """Recorded on every label it writes: ``<name>:<model>``."""

    @property
    def source_prompt(self) -> str:
        """The instruction (or caption prefix) given to the model, recorded on every label it writes."""

    def label(self, image: bytes) -> ImageLabels:
        """Labels one image (the stored file's bytes); raises LabelingError or LabelerUnavailable."""


_SPACE = re.compile(r"\s+")
_TAG_EDGES = " \t\n\r.,;:!?\"'`()[]{}<>#*"


def normalize_caption(text: str) -> str:
    """One line, single spaces, no wrapping quotes; empty when there is nothing to say."""
    caption = _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().strip("\"'` ").strip()
    if len(caption) > MAX_CAPTION_CHARS:
        caption = caption[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0]
    return caption


def normalize_tag(text: str) -> str:
    """Lower case, single spaces (underscores of booru-style tags become spaces), no surrounding punctuation.
    A multi-word tag stays one tag."""
    tag = unicodedata.normalize("NFKC", text).replace("_", " ").lower()
    return _SPACE.sub(" ", tag).strip(_TAG_EDGES).strip()


def normalize_tags(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalized, empty and over-long ones dropped, duplicates removed (first kept), at most MAX_TAGS."""
    seen: dict[str, None] = {}
    for raw in tags:
        tag = normalize_tag(raw)
        if tag and len(tag) <= MAX_TAG_CHARS and tag not in seen:
            seen[tag] = None
    return tuple(seen)[:MAX_TAGS]


def normalize_rating(text: str) -> str:
    rating = text.strip().lower()
    if rating not in NSFW_RATINGS:
        raise LabelingError(f"the nsfw rating {text!r} is not one of {', '.join(NSFW_RATINGS)}")
    return rating


# --- images -----------------------------------------------------------------------------------------------------

MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


def open_image(data: bytes) -> Image.Image:
    """The decoded image (RGB), or LabelingError when the bytes are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise LabelingError(f"the stored file is not a decodable image ({error})") from None


def prepare_for_upload(data: bytes, *, max_side: int, max_bytes: int) -> tuple[bytes, str]:
    """The image as a hosted model accepts it: PNG, JPEG, GIF or WebP as stored when small enough, otherwise
    re-encoded (JPEG, longest side at most ``max_side``). Returns the bytes and their media type."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image_format = opened.format or ""
            size = opened.size
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise LabelingError(f"the stored file is not a decodable image ({error})") from None
    if image_format in MEDIA_TYPES and max(size) <= max_side and len(data) <= max_bytes:
        return data, MEDIA_TYPES[image_format]
    image = open_image(data)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "image/jpeg"

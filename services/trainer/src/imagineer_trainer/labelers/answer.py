"""Strict parsing of a hosted vision model's answer: the Messages API response body, then the JSON object the
instruction asked for ({"caption": str, "tags": [str], "nsfw": one of NSFW_RATINGS}). Anything else fails the image
with a reason a person can act on."""

from __future__ import annotations

import json
import re
from typing import Any

from imagineer_trainer.labelers.base import (
    NSFW_RATINGS,
    ImageLabels,
    LabelingError,
    normalize_caption,
    normalize_rating,
    normalize_tags,
)

INSTRUCTION = (
    "Describe this image for training a Stable Diffusion model. Answer with one JSON object and nothing else, "
    'of the form {"caption": "...", "tags": ["...", ...], "nsfw": "..."} where: caption is one sentence in the '
    "style of a text-to-image prompt naming the subject, setting, style, lighting and colours (no opinions, no "
    '"this image shows"); tags are 5 to 25 short lower-case descriptors, each a word or a phrase such as '
    '"red fox" or "golden hour"; nsfw is exactly one of "safe", "suggestive", "adult" or "explicit".'
)

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def answer_text(body: Any) -> str:
    """The text of a Messages API response; a refusal, a truncated answer or a body of another shape fails."""
    if not isinstance(body, dict):
        raise LabelingError("the labeler's response is not a JSON object")
    stop_reason = body.get("stop_reason")
    if stop_reason == "refusal":
        raise LabelingError("the model refused to describe this image (stop_reason refusal)")
    if stop_reason == "max_tokens":
        raise LabelingError("the model's answer was cut off at max_tokens; raise the labeler's max tokens")
    content = body.get("content")
    if not isinstance(content, list):
        raise LabelingError("the labeler's response has no content list")
    texts = [block.get("text") for block in content if isinstance(block, dict) and block.get("type") == "text"]
    texts = [text for text in texts if isinstance(text, str)]
    if not texts:
        raise LabelingError("the labeler's response has no text content")
    return "".join(texts)


def extract_json_object(text: str) -> dict:
    """The JSON object in ``text``: the whole text, a ```json fenced block, or the span from the first ``{`` to
    the last ``}``. Prose without an object is taken as a refusal."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end <= start:
        snippet = stripped[:120] + ("…" if len(stripped) > 120 else "")
        raise LabelingError(f"the model did not answer with JSON (it may have declined): {snippet!r}")
    try:
        value = json.loads(stripped[start:end + 1])
    except json.JSONDecodeError as error:
        raise LabelingError(f"the model's answer is malformed JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(value, dict):
        raise LabelingError("the model's answer is not a JSON object")
    return value


def labels_from_answer(value: dict) -> ImageLabels:
    """Validates the fields' types and the rating, then normalizes them."""
    missing = [name for name in ("caption", "tags", "nsfw") if name not in value]
    if missing:
        raise LabelingError(f"the model's answer lacks {', '.join(missing)}")
    caption, tags, nsfw = value["caption"], value["tags"], value["nsfw"]
    if not isinstance(caption, str):
        raise LabelingError("the model's caption is not a string")
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise LabelingError("the model's tags are not a list of strings")
    if not isinstance(nsfw, str):
        raise LabelingError(f"the model's nsfw rating is not a string (expected one of {', '.join(NSFW_RATINGS)})")
    caption = normalize_caption(caption)
    if not caption:
        raise LabelingError("the model's caption is empty")
    return ImageLabels(caption=caption, tags=normalize_tags(tags), nsfw=normalize_rating(nsfw))


def parse_response(body: Any) -> ImageLabels:
    return labels_from_answer(extract_json_object(answer_text(body)))

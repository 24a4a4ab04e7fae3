"""Parsing a hosted model's answer and normalizing what any labeler returns."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime

import pytest
from PIL import Image

from imagineer_trainer.labelers.answer import labels_from_answer, parse_response
from imagineer_trainer.labelers.base import (
    MAX_TAGS,
    LabelingError,
    normalize_caption,
    normalize_tags,
    prepare_for_upload,
)
from imagineer_trainer.labelers.retry import RetryPolicy, is_retryable, parse_retry_after


def response(text: str, stop_reason: str = "end_turn") -> dict:
    return {"content": [{"type": "text", "text": text}], "stop_reason": stop_reason}


def test_a_good_answer_is_normalized():
    labels = parse_response(response(json.dumps({
        "caption": '  "A red fox\n in  tall grass"  ',
        "tags": ["Red Fox", "tall_grass", " red fox ", "golden hour.", ""], "nsfw": "Safe"})))
    assert labels.caption == "A red fox in tall grass"
    assert labels.tags == ("red fox", "tall grass", "golden hour")  # multi-word tags whole, deduplicated
    assert labels.nsfw == "safe"


@pytest.mark.parametrize("text", [
    '```json\n{"caption": "a fox", "tags": [], "nsfw": "adult"}\n```',
    'Here is the JSON: {"caption": "a fox", "tags": [], "nsfw": "adult"} Hope it helps.',
])
def test_the_object_is_found_in_fences_and_prose(text):
    assert parse_response(response(text)).nsfw == "adult"


@pytest.mark.parametrize(("body", "reason"), [
    (response('{"caption": "a fox", "tags": ["fox", "nsfw": "safe"}'), "malformed JSON"),
    (response("I'm sorry, I can't describe this image."), "did not answer with JSON"),
    (response('{"caption": "x", "tags": [], "nsfw": "safe"}', stop_reason="refusal"), "refused"),
    (response('{"caption": "x", "tags": [', stop_reason="max_tokens"), "cut off"),
    (response('{"tags": [], "nsfw": "safe"}'), "lacks caption"),
    (response('{"caption": "x", "nsfw": "safe"}'), "lacks tags"),
    (response('{"caption": 3, "tags": [], "nsfw": "safe"}'), "caption is not a string"),
    (response('{"caption": "x", "tags": "fox, grass", "nsfw": "safe"}'), "not a list of strings"),
    (response('{"caption": "x", "tags": [1], "nsfw": "safe"}'), "not a list of strings"),
    (response('{"caption": "x", "tags": [], "nsfw": "nsfw"}'), "not one of safe, suggestive, adult, explicit"),
    (response('{"caption": "x", "tags": [], "nsfw": true}'), "not a string"),
    (response('{"caption": "   ", "tags": [], "nsfw": "safe"}'), "caption is empty"),
    (response('["a fox"]'), "did not answer with JSON"),
    ({"content": [], "stop_reason": "end_turn"}, "no text content"),
    ({"stop_reason": "end_turn"}, "no content list"),
    ([], "not a JSON object"),
])
def test_bad_answers_fail_with_a_reason(body, reason):
    with pytest.raises(LabelingError, match=reason):
        parse_response(body)


def test_normalization_limits():
    tags = normalize_tags([f"tag {n}" for n in range(MAX_TAGS + 10)] + ["x" * 101])
    assert len(tags) == MAX_TAGS and all(len(tag) <= 100 for tag in tags)
    assert normalize_caption("word " * 400).endswith("word") and len(normalize_caption("word " * 400)) <= 1000
    assert labels_from_answer({"caption": "a", "tags": ["#Fox!", "FOX"], "nsfw": "explicit"}).tags == ("fox",)


def png(width: int, height: int, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


def test_images_are_sent_as_stored_or_reencoded():
    small = png(40, 30)
    assert prepare_for_upload(small, max_side=100, max_bytes=10**6) == (small, "image/png")
    data, media_type = prepare_for_upload(png(300, 150), max_side=100, max_bytes=10**6)
    assert media_type == "image/jpeg" and Image.open(io.BytesIO(data)).size == (100, 50)
    data, media_type = prepare_for_upload(png(20, 20, "BMP"), max_side=100, max_bytes=10**6)
    assert media_type == "image/jpeg"
    with pytest.raises(LabelingError, match="not a decodable image"):
        prepare_for_upload(b"not an image", max_side=100, max_bytes=10**6)


# --- the retry policy -----------------------------------------------------------------------------------------------

def test_which_statuses_are_retried():
    assert all(is_retryable(status) for status in (429, 500, 502, 503, 504, 529))
    assert not any(is_retryable(status) for status in (400, 401, 403, 404, 413))


def test_retry_after_in_seconds_and_as_a_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sun, 01 Nov 2026 12:00:07 GMT", now) == 7.0
    assert parse_retry_after("Sun, 01 Nov 2026 11:00:00 GMT", now) == 0.0


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = RetryPolicy(max_attempts=10, base_seconds=1.0, max_seconds=8.0)
    rand = random.Random(1)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        waits = [policy.delay(retry, None, rand) for _ in range(50)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), (retry, waits)
        assert len(set(waits)) > 1  # jittered


def test_retry_after_is_a_floor_and_attempts_are_bounded():
    policy = RetryPolicy(max_attempts=3, base_seconds=0.5, max_seconds=8.0, max_retry_after_seconds=60)
    rand = random.Random(2)
    assert 20.0 <= policy.delay(1, 20.0, rand) <= 20.5
    assert policy.delay(1, 61.0, rand) is None  # the server asks for more than we would wait
    assert policy.delay(2, None, rand) is not None
    assert policy.delay(3, None, rand) is None  # three attempts made: none left
    assert RetryPolicy(max_attempts=1).delay(1, None) is None

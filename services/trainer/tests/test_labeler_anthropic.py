"""The Anthropic-shaped labeler against a local fake server: request shape, answers, retries."""

from __future__ import annotations

import base64
import io
import random
import socket

import pytest
from harness import fake_anthropic as fake
from PIL import Image

from imagineer_trainer.labelers.answer import INSTRUCTION
from imagineer_trainer.labelers.anthropic import AnthropicLabeler, AnthropicSettings
from imagineer_trainer.labelers.base import LabelerUnavailable, LabelingError
from imagineer_trainer.labelers.retry import RetryPolicy

API_KEY = "sk-test-not-a-real-key"


def png(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (seed % 256, 80, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    server = fake.FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def api(server):
    server.reset()
    return server


def make_labeler(base_url: str, *, attempts: int = 3, sleeps: list | None = None, **settings) -> AnthropicLabeler:
    waits = sleeps if sleeps is not None else []
    return AnthropicLabeler(
        AnthropicSettings(api_key=API_KEY, base_url=base_url, model="claude-test", timeout_seconds=5,
                          retry=RetryPolicy(max_attempts=attempts, base_seconds=0.01, max_seconds=0.05), **settings),
        sleep=waits.append, rand=random.Random(0))


def test_request_shape(api):
    labeler = make_labeler(api.base_url)
    image = png()
    labels = labeler.label(image)
    assert labels.caption == "a red fox sitting in tall grass, golden hour"
    assert labels.tags == ("red fox", "tall grass", "golden hour") and labels.nsfw == "safe"
    (request,) = api.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"].startswith("application/json")
    body = request.body
    assert body["model"] == "claude-test" and body["max_tokens"] == 1024
    (message,) = body["messages"]
    assert message["role"] == "user"
    image_block, text_block = message["content"]
    assert image_block == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                       "data": base64.b64encode(image).decode()}}
    assert text_block == {"type": "text", "text": INSTRUCTION}
    assert "JSON" in INSTRUCTION and '"nsfw"' in INSTRUCTION
    assert labeler.source_model == "anthropic:claude-test" and labeler.source_prompt == INSTRUCTION


def test_the_key_is_not_in_the_settings_repr():
    assert API_KEY not in repr(AnthropicSettings(api_key=API_KEY))


@pytest.mark.parametrize(("reply", "reason"), [
    (fake.malformed(), "malformed JSON"),
    (fake.refusal(), "refused"),
    (fake.prose(), "did not answer with JSON"),
    (fake.good(nsfw="spicy"), "not one of safe"),
    (fake.error(400, kind="invalid_request_error"), "rejected the request: HTTP 400"),
])
def test_bad_answers_fail_the_image_without_retrying(api, reply, reason):
    api.default = reply
    sleeps: list[float] = []
    with pytest.raises(LabelingError, match=reason):
        make_labeler(api.base_url, sleeps=sleeps).label(png())
    assert len(api.requests) == 1 and sleeps == []


def test_rate_limit_honours_retry_after_then_succeeds(api):
    api.queue.extend([fake.error(429, retry_after="2", kind="rate_limit_error"), fake.error(529, kind="overloaded")])
    sleeps: list[float] = []
    labels = make_labeler(api.base_url, sleeps=sleeps).label(png())
    assert labels.nsfw == "safe" and len(api.requests) == 3
    assert 2.0 <= sleeps[0] <= 2.05  # the server's Retry-After (plus a little jitter)
    assert 0.005 <= sleeps[1] <= 0.02  # backoff: second retry, base 0.01 doubled, jittered


def test_server_errors_beyond_the_budget_fail_the_image(api):
    api.default = fake.error(500)
    sleeps: list[float] = []
    with pytest.raises(LabelingError, match="failed 3 times; the last: HTTP 500"):
        make_labeler(api.base_url, attempts=3, sleeps=sleeps).label(png())
    assert len(api.requests) == 3 and len(sleeps) == 2


def test_a_bad_key_stops_the_labeler(api):
    api.default = fake.error(401, kind="authentication_error")
    with pytest.raises(LabelerUnavailable, match="credentials") as raised:
        make_labeler(api.base_url).label(png())
    assert API_KEY not in str(raised.value) and len(api.requests) == 1


def test_connection_errors_are_retried():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    with pytest.raises(LabelingError, match="failed 2 times; the last: cannot reach"):
        make_labeler(f"http://127.0.0.1:{port}", attempts=2, sleeps=sleeps).label(png())
    assert len(sleeps) == 1


def test_an_undecodable_image_fails_before_any_call(api):
    with pytest.raises(LabelingError, match="not a decodable image"):
        make_labeler(api.base_url).label(b"GIF89a broken")
    assert api.requests == []

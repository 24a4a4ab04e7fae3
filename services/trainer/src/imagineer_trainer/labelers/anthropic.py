"""A hosted vision model behind the Anthropic Messages API (or anything that speaks its shape).

One POST ``{base_url}/v1/messages`` per image with the image as a base64 block and the instruction asking for a
strict JSON answer; retries on 429, 5xx, 529 and connection errors with backoff (see ``retry``). The API key is
sent in a header and never logged or shown in errors.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from imagineer_trainer.labelers.answer import INSTRUCTION, parse_response
from imagineer_trainer.labelers.base import ImageLabels, LabelerUnavailable, LabelingError, prepare_for_upload
from imagineer_trainer.labelers.retry import RetryPolicy, is_retryable, parse_retry_after

log = logging.getLogger("imagineer.trainer.labeler.anthropic")

API_VERSION = "2023-06-01"
MAX_IMAGE_SIDE = 1568  # larger images are scaled down by the API anyway
MAX_IMAGE_BYTES = 5 * 1024 * 1024
FATAL_STATUS = frozenset({401, 403})  # a wrong key or a forbidden model: no image would succeed


@dataclass(frozen=True)
class AnthropicSettings:
    api_key: str = field(repr=False)
    base_url: str = "https://api.anthropic.com"
    model: str = "claude-sonnet-4-5"
    max_tokens: int = 1024
    timeout_seconds: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def _api_error(response: httpx.Response) -> str:
    """The API's own error message (``{"error": {"type", "message"}}``) or the start of the body."""
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict) and error.get("message"):
            return f"{error.get('type', 'error')}: {error['message']}"
    except (ValueError, AttributeError):
        pass
    return response.text[:200]


class AnthropicLabeler:
    name = "anthropic"

    def __init__(self, settings: AnthropicSettings, *, sleep: Callable[[float], None] = time.sleep,
                 rand: random.Random | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._sleep = sleep
        self._rand = rand or random.Random()
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/"), transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds, connect=min(10.0, settings.timeout_seconds)),
            headers={"x-api-key": settings.api_key, "anthropic-version": API_VERSION,
                     "content-type": "application/json"})

    @property
    def source_model(self) -> str:
        return f"{self.name}:{self.settings.model}"

    @property
    def source_prompt(self) -> str:
        return INSTRUCTION

    def close(self) -> None:
        self._client.close()

    def request_body(self, image: bytes) -> dict:
        data, media_type = prepare_for_upload(image, max_side=MAX_IMAGE_SIDE, max_bytes=MAX_IMAGE_BYTES)
        return {
            "model": self.settings.model,
            "max_tokens": self.settings.max_tokens,
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                             "data": base64.b64encode(data).decode("ascii")}},
                {"type": "text", "text": INSTRUCTION},
            ]}],
        }

    def label(self, image: bytes) -> ImageLabels:
        body = self.request_body(image)
        policy = self.settings.retry
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = self._client.post("/v1/messages", json=body)
            except httpx.TransportError as error:  # connection refused or reset, timeouts
                problem = f"cannot reach {self.settings.base_url}: {type(error).__name__}"
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError:
                        raise LabelingError("the labeler's response is not JSON") from None
                    return parse_response(answer)
                problem = f"HTTP {response.status_code} ({_api_error(response)})"
                if response.status_code in FATAL_STATUS:
                    raise LabelerUnavailable(f"the Anthropic API refused the labeler's credentials: {problem}")
                if not is_retryable(response.status_code):
                    raise LabelingError(f"the Anthropic API rejected the request: {problem}")
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            wait = policy.delay(attempt, retry_after, self._rand)
            if wait is None:
                raise LabelingError(f"the Anthropic API failed {attempt} times; the last: {problem}")
            log.warning("labeling call failed (%s), attempt %d of %d; retrying in %.1f s", problem, attempt,
                        policy.max_attempts, wait)
            self._sleep(wait)

"""When to retry a hosted model's call and how long to wait: exponential backoff with jitter, the server's
Retry-After honoured, a bounded number of attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})  # 529: the Anthropic API is overloaded


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # calls in all, the first included
    base_seconds: float = 1.0  # the first backoff (before jitter)
    max_seconds: float = 30.0  # no backoff is longer
    max_retry_after_seconds: float = 120.0  # a server asking for a longer wait is not retried

    def backoff(self, retry: int, rand: random.Random | None = None) -> float:
        """Seconds before retry number ``retry`` (1 = the first retry) without a Retry-After: base * 2^(retry-1),
        capped, with "equal jitter" (between half and all of it) so that many clients do not retry in step."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (retry - 1))
        return ceiling / 2 + (rand or random).uniform(0, ceiling / 2)

    def delay(self, retry: int, retry_after: float | None, rand: random.Random | None = None) -> float | None:
        """Seconds to wait before retry number ``retry``, or None when no retry is left (or the server asks for
        a wait beyond ``max_retry_after_seconds``). A Retry-After is a floor: the wait is never shorter."""
        if retry >= self.max_attempts:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after_seconds:
                return None
            return retry_after + (rand or random).uniform(0, min(1.0, self.base_seconds))
        return self.backoff(retry, rand)

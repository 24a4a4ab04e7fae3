"""Opaque keyset page tokens.

A token carries the sort key of the last item served and a fingerprint of the
query it belongs to, so a deep page costs the same as the first and a token
reused with other filters is refused instead of silently giving wrong pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from imagineer_common.errors import InvalidArgument


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: list[Any] | None
    fingerprint: str

    def next_token(self, last_key: list[Any] | None) -> str:
        if last_key is None:
            return ""
        payload = json.dumps({"a": last_key, "q": self.fingerprint}, separators=(",", ":"))
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def fingerprint(query: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]


def page_request(page_size: int, page_token: str, query: dict[str, Any], *, default: int = 50,
                 maximum: int = 500) -> PageRequest:
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    size = default if page_size == 0 else min(page_size, maximum)
    digest = fingerprint(query)
    if not page_token:
        return PageRequest(size=size, after=None, fingerprint=digest)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = payload["a"]
        token_query = payload["q"]
        if not isinstance(after, list):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.for_field("page_token", "is not a token returned by this method") from None
    if token_query != digest:
        raise InvalidArgument.for_field("page_token", "belongs to a request with other filters or order")
    return PageRequest(size=size, after=after, fingerprint=digest)

"""Paging over a list held in memory (jobs of a generator or trainer), newest first, by item id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from imagineer_common.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500


def page_of(items: Sequence[T], page_size: int, page_token: str, key: Callable[[T], str]) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next (empty on the last page).

    The token is the id of the last item served, so a page stays correct while new items arrive in front.
    """
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    start = 0
    if page_token:
        ids = [key(item) for item in items]
        if page_token not in ids:
            raise InvalidArgument.for_field("page_token", "is not a token returned by this method")
        start = ids.index(page_token) + 1
    page = list(items[start:start + size])
    more = start + size < len(items)
    return page, key(page[-1]) if more and page else ""

"""Page tokens: opaque, bound to their query, validated."""

from __future__ import annotations

import pytest

from imagineer_catalog.paging import page_request
from imagineer_common.errors import InvalidArgument


def test_defaults_and_cap():
    assert page_request(0, "", {}).size == 50
    assert page_request(10_000, "", {}).size == 500
    assert page_request(7, "", {}).size == 7


def test_token_round_trip_carries_the_last_key():
    first = page_request(2, "", {"album": 1})
    token = first.next_token([42, "x"])
    assert token and "42" not in token  # opaque, not a readable offset
    assert page_request(2, token, {"album": 1}).after == [42, "x"]


def test_no_next_token_on_the_last_page():
    assert page_request(2, "", {}).next_token(None) == ""


@pytest.mark.parametrize("size, token, field", [(-1, "", "page_size"), (1, "%%%", "page_token"),
                                                (1, "eyJ4IjogMX0", "page_token")])
def test_bad_input_names_the_field(size, token, field):
    with pytest.raises(InvalidArgument) as caught:
        page_request(size, token, {})
    assert caught.value.violations[0].field == field


def test_token_of_another_query_is_refused():
    token = page_request(1, "", {"public": True}).next_token([5])
    with pytest.raises(InvalidArgument, match="other filters"):
        page_request(1, token, {"public": False})

"""The job life cycle shared by training runs and scrape jobs."""

from __future__ import annotations

import pytest

from imagineer_catalog.jobs import ALLOWED_TRANSITIONS, STATES, TERMINAL, check_transition
from imagineer_common.errors import FailedPrecondition, InvalidArgument


@pytest.mark.parametrize("current, new", [("pending", "queued"), ("queued", "running"), ("running", "completed"),
                                          ("running", "interrupted"), ("interrupted", "queued"),
                                          ("running", "running"), ("pending", "cancelled")])
def test_allowed_transitions(current, new):
    check_transition(current, new)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_are_final(terminal):
    for new in STATES:
        if new == terminal:
            continue
        with pytest.raises(FailedPrecondition) as caught:
            check_transition(terminal, new)
        assert caught.value.reason == "INVALID_STATE_TRANSITION"


def test_unknown_legacy_state_may_be_repaired():
    check_transition("weird-legacy-value", "failed")
    check_transition(None, "running")


def test_unknown_target_state_is_invalid():
    with pytest.raises(InvalidArgument):
        check_transition("pending", "exploded")


def test_every_state_has_a_rule():
    assert set(ALLOWED_TRANSITIONS) == set(STATES)

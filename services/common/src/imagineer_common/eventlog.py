"""An ordered, append-only log of a job's events that any number of watchers can follow from any point."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

S = TypeVar("S")


@dataclass(frozen=True)
class Event(Generic[S]):
    sequence: int  # 1, 2, 3... per log
    kind: str
    data: dict[str, Any]
    snapshot: S  # the job as it stood right after this event


class EventLog(Generic[S]):
    def __init__(self) -> None:
        self._events: list[Event[S]] = []
        self._ended = False
        self._changed = threading.Condition()

    def append(self, kind: str, data: dict[str, Any], snapshot: S, *, final: bool = False) -> Event[S]:
        with self._changed:
            event = Event(sequence=len(self._events) + 1, kind=kind, data=data, snapshot=snapshot)
            self._events.append(event)
            self._ended = self._ended or final
            self._changed.notify_all()
            return event

    def after(self, sequence: int, timeout: float) -> tuple[list[Event[S]], bool]:
        """Events newer than ``sequence`` (waiting up to ``timeout`` for one), and whether the log has ended."""
        with self._changed:
            if len(self._events) <= sequence and not self._ended:
                self._changed.wait(timeout)
            return self._events[sequence:], self._ended

    def follow(self, after_sequence: int, is_active: Callable[[], bool],
               poll_seconds: float = 0.5) -> Iterator[Event[S]]:
        """Every event after ``after_sequence``, as it comes, until the log ends or ``is_active()`` turns false
        (the watcher went away); polls so that a gone watcher is noticed within ``poll_seconds``."""
        sequence = after_sequence
        while is_active():
            events, ended = self.after(sequence, poll_seconds)
            for event in events:
                yield event
                sequence = event.sequence
            if ended and sequence >= len(self):
                return

    def __len__(self) -> int:
        with self._changed:
            return len(self._events)

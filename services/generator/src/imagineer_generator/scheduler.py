"""The bounded, fair work queue, and how waiting work is grouped into batches.

Jobs wait in arrival order. The worker always serves the oldest job first; when
other waiting jobs have the same render settings (size, steps, scheduler,
guidance, LoRA set) their images join the same pipeline call, one image from
each compatible job in turn, so a big job cannot starve a small one that could
have ridden along.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from imagineer_common.errors import ResourceExhausted
from imagineer_generator.jobs import QUEUED, Job
from imagineer_generator.plan import ImageTask, RenderSettings


@dataclass
class BatchItem:
    job: Job
    task: ImageTask


@dataclass
class Batch:
    settings: RenderSettings
    items: list[BatchItem]

    @property
    def jobs(self) -> list[Job]:
        seen: dict[str, Job] = {}
        for item in self.items:
            seen.setdefault(item.job.id, item.job)
        return list(seen.values())


class WorkQueue:
    def __init__(self, capacity: int, max_batch: int) -> None:
        self.capacity = capacity
        self.max_batch = max_batch
        self._jobs: list[Job] = []  # jobs with images still to make, oldest first
        self._in_flight: set[tuple[str, int]] = set()  # (job id, task index) handed to the worker
        self._changed = threading.Condition()
        self._closed = False
        self.on_positions_changed: Callable[[list[Job]], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _waiting(self) -> list[Job]:
        return [job for job in self._jobs if job.state == QUEUED]

    def __len__(self) -> int:
        """Jobs waiting to start (the running one does not count against the capacity)."""
        with self._changed:
            return len(self._waiting())

    def submit(self, job: Job) -> None:
        with self._changed:
            if self._closed:
                raise ResourceExhausted("the generator is shutting down and takes no new work", reason="SHUTTING_DOWN")
            if len(self._waiting()) >= self.capacity:
                raise ResourceExhausted(
                    f"the generation queue is full ({self.capacity} jobs waiting); retry later",
                    reason="QUEUE_FULL")
            self._jobs.append(job)
            job.mark_queued(self._position(job))
            self._changed.notify_all()

    def _position(self, job: Job) -> int:
        waiting = self._waiting()
        return waiting.index(job) if job in waiting else 0

    def remove(self, job: Job) -> bool:
        with self._changed:
            if job not in self._jobs:
                return False
            self._jobs.remove(job)
            self._announce_positions()
            return True

    def announce_positions(self) -> None:
        """Tells waiting jobs their place after the job ahead of them started."""
        with self._changed:
            self._announce_positions()

    def _announce_positions(self) -> None:
        for position, job in enumerate(j for j in self._jobs if j.state == QUEUED):
            if job.queue_position != position:
                job.mark_queued(position)

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """Blocks until work is available (or the queue closes / the timeout passes)."""
        with self._changed:
            while not self._closed:
                batch = self._take_batch()
                if batch is not None:
                    return batch
                if not self._changed.wait(timeout):
                    return None
            return None

    def _free_tasks(self, job: Job) -> list[ImageTask]:
        return [t for t in job.pending_tasks() if (job.id, t.index) not in self._in_flight]

    def _take_batch(self) -> Batch | None:
        head = next((job for job in self._jobs if not job.finished and self._free_tasks(job)), None)
        if head is None:
            return None
        settings = head.plan.settings
        riders = [job for job in self._jobs
                  if not job.finished and job.plan.settings == settings and self._free_tasks(job)]
        queues = {job.id: self._free_tasks(job) for job in riders}
        items: list[BatchItem] = []
        while len(items) < self.max_batch and any(queues.values()):
            for job in riders:
                if queues[job.id] and len(items) < self.max_batch:
                    items.append(BatchItem(job, queues[job.id].pop(0)))
        for item in items:
            self._in_flight.add((item.job.id, item.task.index))
        return Batch(settings=settings, items=items)

    def done(self, batch: Batch) -> None:
        """The worker finished with a batch: finished jobs leave the queue, the rest wait for their next turn."""
        with self._changed:
            for item in batch.items:
                self._in_flight.discard((item.job.id, item.task.index))
            self._jobs = [job for job in self._jobs if not job.finished and job.pending_tasks()]
            self._announce_positions()
            self._changed.notify_all()

    def close(self) -> list[Job]:
        """Stops handing out work; returns the jobs that were still waiting."""
        with self._changed:
            self._closed = True
            waiting, self._jobs = list(self._jobs), []
            self._changed.notify_all()
            return waiting

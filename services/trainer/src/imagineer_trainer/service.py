"""What the trainer offers, independent of gRPC: start, get, list, cancel and watch trainings."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from imagineer_common.catalog_client import CatalogError, TrainingCatalog
from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from imagineer_common.eventlog import Event
from imagineer_trainer.dataset import caption_for
from imagineer_trainer.request import TrainingRequest, complete
from imagineer_trainer.runs import ENDED, Run, RunRegistry, RunSnapshot, require_cancellable
from imagineer_trainer.supervisor import Supervisor

WATCH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    default_size: int


class Trainer:
    def __init__(self, *, info: ModelInfo, registry: RunRegistry, supervisor: Supervisor,
                 catalog: TrainingCatalog) -> None:
        self.info = info
        self.registry = registry
        self.supervisor = supervisor
        self.catalog = catalog
        self._start_lock = threading.Lock()

    def _check_dataset(self, request: TrainingRequest) -> int:
        """Counts usable images now, so an empty or caption-less data set is refused before anything is queued."""
        usable = 0
        total = 0
        for index, album_id in enumerate(request.album_ids):
            try:
                members = self.catalog.album_images(album_id)
            except CatalogError as error:
                if error.code == "NOT_FOUND":
                    raise NotFound(f"album {album_id} (album_ids[{index}]) not found in the catalog",
                                   reason="ALBUM_NOT_FOUND") from None
                raise Unavailable(f"the catalog cannot be reached: {error}", reason="CATALOG_UNAVAILABLE") from None
            total += len(members)
            usable += sum(1 for m in members
                          if m.has_file and caption_for(m.labels, m.prompt, request.caption_source, ""))
        if not usable:
            raise FailedPrecondition(
                f"the albums hold {total} images but none is usable for training with caption source "
                f"{request.caption_source!r} (each needs a stored file and a caption, label or prompt)",
                reason="NO_USABLE_IMAGES")
        return usable

    def start(self, request: TrainingRequest) -> Run:
        request = complete(request, model_name=self.info.name, default_size=self.info.default_size,
                           random_seed=lambda: secrets.randbelow(2**32))
        with self._start_lock:
            if request.request_id:
                earlier = self.registry.find_request(request.request_id)
                if earlier is not None:
                    return earlier
            self._check_dataset(request)
            if self.supervisor.waiting() >= self.supervisor.capacity:
                raise ResourceExhausted(f"the training queue is full ({self.supervisor.capacity} waiting); retry later",
                                        reason="QUEUE_FULL")
            key = f"trainer-{hashlib.sha256(request.request_id.encode()).hexdigest()}" if request.request_id else ""
            try:
                record = self.catalog.create_training_run(
                    name=request.name, album_ids=request.album_ids, config=request.to_config(),
                    total_steps=request.steps, request_id=key)
            except CatalogError as error:
                raise Unavailable(f"the catalog could not record the run: {error}",
                                  reason="CATALOG_UNAVAILABLE") from None
            known = self.registry.find(record.id)
            if known is not None:  # a retry the catalog recognised (this process may have restarted since)
                return known
            run = self.registry.add(Run(id=record.id, request=request, current_step=record.current_step,
                                        artifact_id=record.artifact_id))
            if record.state in ENDED:
                run.finish(record.state)
                return run
            self.supervisor.submit(run)
            return run

    def get(self, run_id: str) -> Run:
        return self.registry.get(run_id)

    def list(self) -> list[Run]:
        return self.registry.newest_first()

    def cancel(self, run_id: str) -> Run:
        run = self.registry.get(run_id)
        require_cancellable(run)
        self.supervisor.cancel(run)
        return run

    def watch(self, run_id: str, after_sequence: int, is_active: Callable[[], bool]) -> Iterator[Event[RunSnapshot]]:
        if after_sequence < 0:
            raise InvalidArgument.for_field("after_sequence", "must not be negative")
        run = self.registry.get(run_id)
        yield from run.log.follow(after_sequence, is_active, WATCH_POLL_SECONDS)

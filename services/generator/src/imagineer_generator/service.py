"""What the generator offers, independent of gRPC: start, get, list, cancel and watch jobs."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from imagineer_common.catalog_client import CatalogClient, CatalogError
from imagineer_common.errors import InvalidArgument, NotFound, Unavailable
from imagineer_generator.engine import Engine
from imagineer_generator.jobs import Job, JobEvent, JobRegistry, require_cancellable
from imagineer_generator.journal import JobJournal
from imagineer_generator.loras import LoraManager
from imagineer_generator.plan import MAX_SEED, GenerationRequest
from imagineer_generator.scheduler import WorkQueue
from imagineer_generator.validation import plan_generation

WATCH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    is_demo: bool
    device: str
    default_size: int
    schedulers: tuple[str, ...]


def random_seed() -> int:
    return secrets.randbelow(2**32)  # the range other tools show and accept


class Generator:
    def __init__(self, *, info: ModelInfo, registry: JobRegistry, queue: WorkQueue, engine: Engine,
                 catalog: CatalogClient, loras: LoraManager, journal: JobJournal | None = None) -> None:
        self.info = info
        self.journal = journal
        self.registry = registry
        self.queue = queue
        self.engine = engine
        self.catalog = catalog
        self.loras = loras
        self._start_lock = threading.Lock()

    def _check_references(self, request: GenerationRequest) -> None:
        """Unknown albums and LoRAs are the caller's mistake: say so now, not as a failed job later."""
        try:
            if request.album_id:
                self.catalog.check_album(request.album_id)
        except CatalogError as error:
            if error.code == "NOT_FOUND":
                raise NotFound(f"album {request.album_id} not found in the catalog", reason="ALBUM_NOT_FOUND") \
                    from None
            raise Unavailable(f"the catalog cannot be reached: {error}", reason="CATALOG_UNAVAILABLE") from None
        for index, lora in enumerate(request.loras):
            try:
                info = self.catalog.artifact(lora.artifact_id)
            except CatalogError as error:
                if error.code == "NOT_FOUND":
                    raise NotFound(f"LoRA artifact {lora.artifact_id} not found in the catalog",
                                   reason="LORA_NOT_FOUND") from None
                raise Unavailable(f"the catalog cannot be reached: {error}", reason="CATALOG_UNAVAILABLE") from None
            if info.kind != "lora":
                raise InvalidArgument.for_field(
                    f"loras[{index}].artifact_id", f"artifact {info.id} ({info.name}) is a {info.kind} artifact, "
                    "not a LoRA")

    def start(self, request: GenerationRequest) -> Job:
        plan = plan_generation(request, model_name=self.info.name, default_size=self.info.default_size,
                               schedulers=self.info.schedulers, random_seed=random_seed)
        with self._start_lock:
            if request.request_id:
                earlier = self.registry.find_request(request.request_id)
                if earlier is not None:
                    return earlier
            self._check_references(request)
            job = Job(plan=plan, request_id=request.request_id,
                      listener=self.journal.record if self.journal else None)
            self.queue.submit(job)
            return self.registry.add(job, request.request_id)

    def get(self, job_id: str) -> Job:
        return self.registry.get(job_id)

    def list(self) -> list[Job]:
        return self.registry.newest_first()

    def cancel(self, job_id: str) -> Job:
        job = self.registry.get(job_id)
        require_cancellable(job)
        self.engine.cancel(job)
        return job

    def watch(self, job_id: str, after_sequence: int, is_active: Callable[[], bool]) -> Iterator[JobEvent]:
        if after_sequence < 0:
            raise InvalidArgument.for_field("after_sequence", "must not be negative")
        job = self.registry.get(job_id)
        yield from job.log.follow(after_sequence, is_active, WATCH_POLL_SECONDS)


__all__ = ["MAX_SEED", "Generator", "ModelInfo"]

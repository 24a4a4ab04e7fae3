"""What labeling offers, independent of gRPC: start, get, list, cancel and watch labelings, the worker that runs
them one at a time, and the writing of a labeler's output into the catalog.

Writing an image's labels: the new labels are created first, then the labels the same labeler wrote before are
deleted, so a failure half-way never leaves the image with fewer labels than it had (at worst, with both sets
until the next relabeling). Only labels of automatic types (caption, tag, AI-generated) whose ``source_model``
names the same labeler are replaced; manual and user labels and other labelers' labels are never touched.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from imagineer_common.catalog_client import CatalogError
from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from imagineer_common.eventlog import Event
from imagineer_trainer.jobqueue import JobQueue
from imagineer_trainer.labelers.base import FLAGGING_RATINGS, ImageLabels, Labeler, LabelerUnavailable, LabelingError
from imagineer_trainer.labelers.config import KNOWN_LABELERS, LabelingSettings
from imagineer_trainer.labeling_catalog import LabelingCatalog
from imagineer_trainer.labeling_jobs import (
    CANCELLED,
    COMPLETED,
    ENDED,
    FAILED,
    FAILED_IMAGE,
    INTERRUPTED,
    LABELED,
    SKIPPED,
    LabelingJob,
    LabelingRegistry,
    LabelingSnapshot,
    LabelingStore,
    TargetImage,
    require_cancellable,
)

log = logging.getLogger("imagineer.trainer.labeling")

CREATED_BY = "imagineer-labeler"
AUTOMATIC_TYPES = frozenset({"caption", "tag", "ai_generated"})
NSFW_LABEL_PREFIX = "nsfw:"
WATCH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class LabelingRequest:
    target_kind: str  # "image", "album", or "" when the request named none
    target_id: str
    labeler: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class WriteResult:
    replaced: int  # earlier labels of this labeler that were deleted
    flag_set: bool  # the image's NSFW flag was set by this write


def made_by(label_type: str, source_model: str, labeler_name: str) -> bool:
    """Whether a label is one that ``labeler_name`` wrote (and may therefore replace)."""
    return label_type in AUTOMATIC_TYPES and source_model.startswith(f"{labeler_name}:")


def wanted_labels(labels: ImageLabels) -> list[tuple[str, str]]:
    """(type, text) of every label to write: the caption, one per tag, and the rating when there is one."""
    wanted = [("caption", labels.caption), *(("tag", tag) for tag in labels.tags)]
    if labels.nsfw:
        wanted.append(("ai_generated", f"{NSFW_LABEL_PREFIX}{labels.nsfw}"))
    return wanted


def write_labels(catalog: LabelingCatalog, image_id: str, labels: ImageLabels, labeler: Labeler) -> WriteResult:
    """Replaces the labels ``labeler`` wrote on the image with ``labels`` and flags adult or explicit images."""
    before = [label for label in catalog.labels(image_id)
              if made_by(label.label_type, label.source_model, labeler.name)]
    earlier_ids = {label.id for label in before}
    created: list[str] = []
    kept: set[str] = set()
    try:
        for label_type, text in wanted_labels(labels):
            label_id = catalog.create_label(image_id, text=text, label_type=label_type,
                                            source_model=labeler.source_model, source_prompt=labeler.source_prompt,
                                            created_by=CREATED_BY)
            # The catalog answers an identical label with the existing one: that one stays.
            (kept.add if label_id in earlier_ids else created.append)(label_id)
    except CatalogError:
        for label_id in created:  # back to the labels the image had
            try:
                catalog.delete_label(label_id)
            except CatalogError as error:
                log.warning("could not remove the partial label %s of image %s: %s", label_id, image_id, error)
        raise
    stale = [label for label in before if label.id not in kept]
    for label in stale:
        catalog.delete_label(label.id)
    flag_set = False
    if labels.nsfw in FLAGGING_RATINGS:
        _, flagged = catalog.image(image_id)
        if not flagged:
            catalog.flag_nsfw(image_id)
            flag_set = True
    return WriteResult(replaced=len(stale), flag_set=flag_set)


class LabelingService:
    def __init__(self, *, settings: LabelingSettings, catalog: LabelingCatalog, store: LabelingStore,
                 labelers: dict[str, Labeler] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.registry = LabelingRegistry()
        self._labelers: dict[str, Labeler] = dict(labelers or {})
        self._start_lock = threading.Lock()
        self.queue: JobQueue[LabelingJob] = JobQueue(
            name="trainer-labeling", what="labeling", capacity=settings.queue_capacity, run=self._run,
            crashed=lambda job, error: self._end(job, FAILED, f"labeling failed: {type(error).__name__}: {error}"),
            announce=lambda job, ahead: job.emit("queued", queue_position=ahead))

    # --- life cycle --------------------------------------------------------------------------------------------

    def recover(self) -> int:
        """Loads the recorded labelings; those a stop or crash left unfinished go back to the queue, in the order
        they were asked for, and go on after the last image they handled (the image a crash cut short is labeled
        again, which replaces its labels). Returns how many were resumed."""
        resumed = 0
        for job in self.store.load():
            self.registry.add(job)
            if job.state in ENDED and job.state != INTERRUPTED:
                # A late watcher of an old labeling gets its end at once.
                job.log.append("finished", {"state": job.state, "reason": job.error}, job.snapshot(), final=True)
                continue
            job.requeue()
            self.store.save(job)
            self.queue.resume(job)
            log.info("labeling %s resumes after %d of %d images", job.id, job.images_done, len(job.images))
            resumed += 1
        return resumed

    def start_worker(self) -> None:
        self.queue.start()

    def stop(self, grace_seconds: float) -> None:
        """The running labeling stops after its current image and is marked INTERRUPTED, waiting ones too; the next
        start of the trainer resumes them."""
        self.queue.stop(grace_seconds, withdrawn=lambda job: self._end(
            job, INTERRUPTED, "the trainer shut down before this labeling started; it resumes on restart"))

    def close(self) -> None:
        for labeler in self._labelers.values():
            close = getattr(labeler, "close", None)
            if close is not None:
                close()

    # --- requests -------------------------------------------------------------------------------------------------

    def labeler(self, name: str) -> Labeler:
        """The labeler by name ("" = the configured default), built on first use."""
        if name and name not in KNOWN_LABELERS:
            raise InvalidArgument.for_field("labeler", f"{name!r} is not a labeler; known: {', '.join(KNOWN_LABELERS)}")
        name = name or self.settings.default
        if name not in self._labelers:
            if not name:
                raise FailedPrecondition("no labeler is configured on this trainer (set IMAGINEER_TRAINER_LABELER and "
                                         "its settings; see docs/trainer.md)", reason="LABELER_NOT_CONFIGURED")
            if name not in self.settings.available():
                raise FailedPrecondition(f"the {name} labeler is not configured on this trainer (see docs/trainer.md)",
                                         reason="LABELER_NOT_CONFIGURED")
            self._labelers[name] = self.settings.build(name)
        return self._labelers[name]

    def _targets(self, request: LabelingRequest) -> list[TargetImage]:
        field_name = f"{request.target_kind}_id"
        try:
            if request.target_kind == "image":
                return [self.catalog.image(request.target_id)[0]]
            targets = self.catalog.album_targets(request.target_id)
        except CatalogError as error:
            if error.code == "NOT_FOUND":
                raise NotFound(f"{request.target_kind} {request.target_id} ({field_name}) not found in the catalog",
                               reason=f"{request.target_kind.upper()}_NOT_FOUND") from None
            if error.code == "INVALID_ARGUMENT":
                raise InvalidArgument.for_field(field_name, f"the catalog refused it: {error}") from None
            raise Unavailable(f"the catalog cannot be reached: {error}", reason="CATALOG_UNAVAILABLE") from None
        if not targets:
            raise FailedPrecondition(f"album {request.target_id} holds no images", reason="ALBUM_EMPTY")
        return targets

    def start(self, request: LabelingRequest) -> LabelingJob:
        if request.target_kind not in ("image", "album"):
            raise InvalidArgument.for_field("target", "set image_id or album_id")
        if not request.target_id.strip():
            raise InvalidArgument.for_field(f"{request.target_kind}_id", "is required")
        labeler = self.labeler(request.labeler)
        with self._start_lock:
            if request.request_id:
                earlier = self.registry.find_request(request.request_id)
                if earlier is not None:
                    return earlier
            targets = self._targets(request)
            job = LabelingJob(id=uuid.uuid4().hex, target_kind=request.target_kind, target_id=request.target_id,
                              labeler=labeler.name, source_model=labeler.source_model, images=targets,
                              request_id=request.request_id)

            def admit() -> None:  # recorded only once the queue has taken it
                self.registry.add(job)
                self.store.save(job)

            self.queue.submit(job, admit=admit)
            return job

    def get(self, job_id: str) -> LabelingJob:
        return self.registry.get(job_id)

    def list(self) -> list[LabelingJob]:
        return self.registry.newest_first()

    def cancel(self, job_id: str) -> LabelingJob:
        job = self.registry.get(job_id)
        require_cancellable(job)
        job.cancel_requested.set()
        if self.queue.withdraw(job):
            self._end(job, CANCELLED, "cancelled by request before it started")
        return job

    def watch(self, job_id: str, after_sequence: int,
              is_active: Callable[[], bool]) -> Iterator[Event[LabelingSnapshot]]:
        if after_sequence < 0:
            raise InvalidArgument.for_field("after_sequence", "must not be negative")
        job = self.registry.get(job_id)
        yield from job.log.follow(after_sequence, is_active, WATCH_POLL_SECONDS)

    # --- the worker ---------------------------------------------------------------------------------------------

    def _end(self, job: LabelingJob, state: str, reason: str = "") -> None:
        if job.finish(state, reason):
            self.store.save(job)
            log.info("labeling %s ended %s: %d labeled, %d failed, %d skipped%s", job.id, state, job.labeled,
                     job.failed, job.skipped, f" ({reason})" if reason else "")

    def _run(self, job: LabelingJob) -> None:
        labeler = self.labeler(job.labeler)
        job.start()
        self.store.save(job)
        total = len(job.images)
        for index, target in enumerate(job.images[job.images_done:], start=job.images_done + 1):
            if job.cancel_requested.is_set():
                self._end(job, CANCELLED, f"cancelled by request after {index - 1} of {total} images; the labels "
                                          "already written are kept")
                return
            if self.queue.stopping:
                self._end(job, INTERRUPTED, f"the trainer shut down after {index - 1} of {total} images; it "
                                            "resumes on restart")
                return
            try:
                self._label_one(job, index, target, labeler)
            except LabelerUnavailable as error:
                job.record(index, target.image_id, FAILED_IMAGE, str(error))
                self._end(job, FAILED, str(error))
                return
            self.store.save(job)
        self._end(job, COMPLETED)

    def _label_one(self, job: LabelingJob, index: int, target: TargetImage, labeler: Labeler) -> None:
        image_id = target.image_id
        if not target.has_file:
            job.record(index, image_id, SKIPPED, "the image has no stored file")
            return
        try:
            data = self.catalog.image_bytes(image_id)
        except CatalogError as error:
            if error.code == "NOT_FOUND":
                job.record(index, image_id, SKIPPED, "the image was deleted after the labeling started")
            else:
                job.record(index, image_id, FAILED_IMAGE, f"could not read the image from the catalog: {error}")
            return
        try:
            labels = labeler.label(data)
        except LabelingError as error:
            job.record(index, image_id, FAILED_IMAGE, str(error))
            return
        except LabelerUnavailable:
            raise
        except Exception as error:  # a fault of the model for this image; the next may work
            log.exception("labeling image %s failed", image_id)
            job.record(index, image_id, FAILED_IMAGE, f"the labeler failed: {type(error).__name__}: {error}")
            return
        try:
            result = write_labels(self.catalog, image_id, labels, labeler)
        except CatalogError as error:
            job.record(index, image_id, FAILED_IMAGE, f"the catalog could not store the labels: {error}")
            return
        job.record(index, image_id, LABELED, caption=labels.caption, tags=list(labels.tags), nsfw=labels.nsfw or "",
                   nsfw_flag_set=result.flag_set, labels_replaced=result.replaced)

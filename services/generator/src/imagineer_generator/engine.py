"""The worker: takes batches from the queue, renders them on the device, stores each image in the catalog."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict

from imagineer_common.catalog_client import CatalogClient, CatalogError
from imagineer_generator.jobs import CANCELLED, COMPLETED, FAILED, QUEUED, Job
from imagineer_generator.loras import LoraError, LoraManager
from imagineer_generator.plan import ImageTask
from imagineer_generator.pngmeta import encode_png
from imagineer_generator.records import generation_record, png_parameters
from imagineer_generator.render import RenderCancelled, render
from imagineer_generator.scheduler import Batch, WorkQueue
from imagineer_models.loading import LoadedModel

log = logging.getLogger("imagineer.generator.engine")


def image_filename(job_id: str, task_index: int) -> str:
    """The catalog file name of a job's image: how a restarted generator finds what reached the catalog."""
    return f"{job_id}-{task_index:03d}.png"


class Engine:
    """One model on one device, one batch at a time."""

    def __init__(self, *, model: LoadedModel, queue: WorkQueue, catalog: CatalogClient, loras: LoraManager,
                 exact_batches: bool = True) -> None:
        self.model = model
        self.exact_batches = exact_batches
        self.queue = queue
        self.catalog = catalog
        self.loras = loras
        self._lock = threading.Lock()
        self._current: set[str] = set()  # ids of jobs in the batch being rendered
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="generator-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_seconds: float) -> None:
        """Takes no new batches; lets the running one finish within the grace period, else cancels it.
        Jobs still waiting fail with a reason."""
        reason = "the generator shut down before this job finished; start it again"
        waiting = self.queue.close()
        for job in waiting:
            with self._lock:
                running_now = job.id in self._current
            if not running_now:
                job.finish(FAILED, reason)
        self._thread.join(grace_seconds)
        if self._thread.is_alive():
            self._stopping.set()
            self._thread.join(30)
        for job in waiting:  # jobs whose running batch finished but which had more images to make
            job.finish(FAILED, reason)

    def cancel(self, job: Job) -> None:
        job.cancel_requested.set()
        with self._lock:
            rendering = job.id in self._current
        if not rendering:
            # Not on the device now: it leaves the queue at once.
            self.queue.remove(job)
            job.finish(CANCELLED, "cancelled by request")

    def _run(self) -> None:
        while True:
            batch = self.queue.next_batch(timeout=0.5)
            if batch is None:
                if self.queue.closed:
                    return
                continue
            with self._lock:
                self._current = {job.id for job in batch.jobs}
            try:
                self._process(batch)
            except Exception:  # never let one batch kill the worker
                log.exception("batch failed unexpectedly")
                for job in batch.jobs:
                    job.finish(FAILED, "internal error while generating; see the generator log")
            finally:
                with self._lock:
                    self._current = set()
                self.queue.done(batch)

    def _start_job(self, job: Job) -> None:
        plan = job.plan
        album_id = plan.album_id
        if not album_id:
            is_set = plan.template is not None
            album_id = self.catalog.create_album(
                name=plan.album_name, album_type="set" if is_set else "batch",
                prompt=plan.template or plan.tasks[0].prompt,
                config={"model": self.model.name, **asdict(plan.settings),
                        "negative_prompt": plan.tasks[0].negative_prompt, "first_seed": plan.first_seed,
                        "images": len(plan.tasks)},
                request_id=f"generation-{job.id}", is_public=plan.make_public)
        job.mark_started(album_id)

    def _process(self, batch: Batch) -> None:
        for job in batch.jobs:
            if job.state == QUEUED and not job.finished:
                try:
                    self._start_job(job)
                except CatalogError as error:
                    job.finish(FAILED, str(error))
        self.queue.announce_positions()
        items = [item for item in batch.items if not item.job.finished]
        if not items:
            return
        jobs = list({item.job.id: item.job for item in items}.values())
        try:
            self.loras.activate(self.model.pipeline, batch.settings.loras)
        except LoraError as error:
            for job in jobs:
                job.finish(FAILED, str(error))
            return

        first_index = {job.id: min(i.task.index for i in items if i.job is job) for job in jobs}

        def on_step(step: int, total: int) -> None:
            for job in jobs:
                job.emit("step", step=step, total_steps=total, image_index=first_index[job.id], batch_size=len(items))
            if self._stopping.is_set() or any(job.cancel_requested.is_set() for job in jobs):
                raise RenderCancelled()

        try:
            images = render(self.model, prompts=[i.task.prompt for i in items],
                            negative_prompts=[i.task.negative_prompt for i in items],
                            seeds=[i.task.seed for i in items], settings=batch.settings, on_step=on_step,
                            exact=self.exact_batches)
        except RenderCancelled:
            for job in jobs:
                if job.cancel_requested.is_set():
                    job.finish(CANCELLED, "cancelled by request")
                elif self._stopping.is_set():
                    job.finish(FAILED, "the generator shut down while this job was running; start it again")
            return
        except Exception as error:
            log.exception("rendering failed")
            for job in jobs:
                job.finish(FAILED, f"generation failed: {error}")
            return

        for item, image in zip(items, images, strict=True):
            self._store(item.job, item.task, image)
        for job in jobs:
            if not job.finished and not job.pending_tasks():
                job.finish(COMPLETED)

    def _store(self, job: Job, task: ImageTask, image) -> None:
        if job.finished:
            return
        if job.cancel_requested.is_set():
            job.finish(CANCELLED, "cancelled by request")
            return
        settings = job.plan.settings
        names = self.loras.names(settings.loras)
        data = encode_png(image, png_parameters(self.model.name, task, settings, names))
        try:
            image_id = self.catalog.upload_image(
                data=data, filename=image_filename(job.id, task.index),
                generation=generation_record(self.model.name, task, settings, names),
                album_id=job.album_id, is_public=job.plan.make_public)
        except CatalogError as error:
            job.finish(FAILED, str(error))
            return
        job.record_image(task.index, image_id)

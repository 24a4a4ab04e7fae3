"""Runs trainings one at a time on the device, keeps the catalog's training-run records current,
and recovers runs a crash or shutdown interrupted.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from imagineer.common.v1 import common_pb2
from imagineer_common.catalog_client import CatalogError, TrainingCatalog
from imagineer_trainer.dataset import DatasetError, SourceImage, build_examples
from imagineer_trainer.jobqueue import JobQueue
from imagineer_trainer.request import TrainingRequest
from imagineer_trainer.runs import CANCELLED, COMPLETED, FAILED, INTERRUPTED, QUEUED, RUNNING, Run, now
from imagineer_trainer.training import LoraTrainer, StepReport, TrainingConfig

log = logging.getLogger("imagineer.trainer.supervisor")

CATALOG_UPDATE_SECONDS = 2.0  # progress reaches the catalog at most this often (and at every checkpoint)


def training_config(request: TrainingRequest) -> TrainingConfig:
    return TrainingConfig(
        rank=request.rank, alpha=request.alpha, learning_rate=request.learning_rate,
        lr_scheduler=request.lr_scheduler, warmup_steps=request.warmup_steps, steps=request.steps,
        batch_size=request.batch_size, resolution=request.resolution, random_crop=request.random_crop,
        seed=request.seed or 0, train_text_encoder=request.train_text_encoder,
        checkpoint_interval=request.checkpoint_interval)


class Supervisor:
    def __init__(self, *, load_model: Callable[[], object], catalog: TrainingCatalog, runs_dir: Path,
                 capacity: int) -> None:
        self._load_model = load_model
        self.catalog = catalog
        self.runs_dir = runs_dir
        self.capacity = capacity
        self.queue: JobQueue[Run] = JobQueue(
            name="trainer-supervisor", what="training", capacity=capacity, run=self._train,
            crashed=lambda run, error: self._end(run, FAILED, f"training failed: {type(error).__name__}: {error}"),
            announce=lambda run, ahead: run.emit("queued", queue_position=ahead))

    def start(self) -> None:
        self.queue.start()

    def waiting(self) -> int:
        return self.queue.waiting()

    def submit(self, run: Run) -> None:
        self.queue.submit(run)

    def cancel(self, run: Run) -> None:
        run.cancel_requested.set()
        if self.queue.withdraw(run):
            self._end(run, CANCELLED, "cancelled by request")

    def stop(self, grace_seconds: float) -> None:
        """The running training checkpoints and is marked interrupted (the next start resumes it);
        waiting ones are marked interrupted too."""
        self.queue.stop(grace_seconds, withdrawn=lambda run: self._end(
            run, INTERRUPTED, "the trainer shut down before this training started; it resumes on restart"))

    def _sources(self, run: Run) -> Iterator[SourceImage]:
        """The run's images, each fetched when dataset assembly reaches it (only one file's bytes at a time)."""
        seen: set[str] = set()
        for album_id in run.request.album_ids:
            for member in self.catalog.album_images(album_id):
                if member.image_id in seen or not member.has_file:
                    continue
                seen.add(member.image_id)
                yield SourceImage(image_id=member.image_id, data=self.catalog.image_bytes(member.image_id),
                                  labels=list(member.labels), prompt=member.prompt)

    def _train(self, run: Run) -> None:
        request = run.request
        self.catalog.update_training_run(run.id, state=RUNNING)
        try:
            examples, skipped = build_examples(self._sources(run), caption_source=request.caption_source,
                                               trigger_word=request.trigger_word, resolution=request.resolution)
        except DatasetError as error:
            self._end(run, FAILED, str(error))
            return
        if skipped:
            log.info("training %s skips %d images: %s", run.id, len(skipped), skipped[:5])
        model = self._load_model()
        trainer = LoraTrainer(model, examples, training_config(request), self.runs_dir / run.id)
        from_step = trainer.resume_step()
        run.update("started", {"from_step": from_step}, state=RUNNING, started_at=now(), image_count=len(examples),
                   current_step=from_step)
        last_update = [0.0]

        def on_step(report: StepReport) -> None:
            run.update("step", {"step": report.step, "total_steps": report.total_steps, "loss": report.loss,
                                "learning_rate": report.learning_rate, "elapsed_seconds": report.elapsed_seconds,
                                "remaining_seconds": report.remaining_seconds},
                       current_step=report.step, loss=report.average_loss)
            if time.monotonic() - last_update[0] >= CATALOG_UPDATE_SECONDS:
                last_update[0] = time.monotonic()
                self._report_progress(run)

        def on_checkpoint(step: int) -> None:
            run.emit("checkpoint", step=step)
            self._report_progress(run)
            if request.validation_prompts:
                self._validate(run, trainer, step)

        outcome = trainer.run(on_step=on_step, on_checkpoint=on_checkpoint,
                              should_stop=lambda: run.cancel_requested.is_set() or self.queue.stopping)
        if outcome.stopped:
            if run.cancel_requested.is_set():
                self._end(run, CANCELLED, f"cancelled by request at step {outcome.step}; its last checkpoint is kept")
            else:
                self._end(run, INTERRUPTED, f"the trainer shut down at step {outcome.step}; it resumes on restart")
            return
        artifact_id = self._publish(run, trainer, outcome.final_loss)
        run.artifact_id = artifact_id  # shown with the finished event
        # training_loss is the moving average, as in every progress report and in Training.loss.
        self.catalog.update_training_run(run.id, artifact_id=artifact_id, training_loss=run.loss,
                                         progress_percent=100.0, current_step=outcome.step, patient=True)
        self._end(run, COMPLETED)
        shutil.rmtree(self.runs_dir / run.id, ignore_errors=True)  # the weights are in the catalog now

    def _publish(self, run: Run, trainer: LoraTrainer, final_loss: float) -> str:
        request = run.request
        with tempfile.TemporaryDirectory(prefix="lora-") as folder:
            weights = trainer.save_lora(Path(folder))
            return self.catalog.upload_artifact(
                path=weights, name=request.name, kind="lora", base_model=request.base_model, rank=request.rank,
                training_run_id=run.id,
                metadata={"steps": str(request.steps), "final_loss": f"{final_loss:.6f}", "alpha": str(request.alpha),
                          "learning_rate": str(request.learning_rate), "resolution": str(request.resolution),
                          "images": str(run.image_count), "trigger_word": request.trigger_word})

    def _validate(self, run: Run, trainer: LoraTrainer, step: int) -> None:
        request = run.request
        images = trainer.render_validation(request.validation_prompts, seed=request.seed or 0)
        if not run.validation_album_id:
            album_id = self.catalog.create_album(
                name=f"Validation: {request.name}", album_type="collection",
                prompt="\n".join(request.validation_prompts), config={"training_run_id": run.id},
                request_id=f"training-{run.id}-validation", is_public=False)
            run.validation_album_id = album_id
        ids = []
        for index, (prompt, image) in enumerate(zip(request.validation_prompts, images, strict=True)):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            ids.append(self.catalog.upload_image(
                data=buffer.getvalue(), filename=f"training-{run.id}-step{step:06d}-{index}.png",
                generation=common_pb2.GenerationParameters(prompt=prompt, seed=request.seed or 0,
                                                           base_model=request.base_model,
                                                           width=image.width, height=image.height),
                album_id=run.validation_album_id, is_public=False))
        run.emit("validation", step=step, image_ids=ids)

    def _report_progress(self, run: Run) -> None:
        try:
            self.catalog.update_training_run(
                run.id, current_step=run.current_step, training_loss=run.loss,
                progress_percent=min(100.0, 100.0 * run.current_step / max(1, run.request.steps)))
        except CatalogError as error:  # progress is best effort; the final state is not
            log.warning("could not report progress of %s: %s", run.id, error)

    def _end(self, run: Run, state: str, reason: str = "") -> None:
        # The catalog first: a watcher who sees the end and then asks the catalog must find it there too.
        if run.ended:
            return
        try:
            self.catalog.update_training_run(run.id, state=state, error_message=reason, patient=True)
        except CatalogError as error:
            log.error("could not record the end of training %s in the catalog: %s", run.id, error)
        run.finish(state, reason)

    # --- recovery -------------------------------------------------------------------------------------------------

    def recover(self) -> list[Run]:
        """Runs the catalog shows as unfinished (a crash or shutdown stopped them): resumed from their last
        checkpoint, or failed with the reason when they cannot be."""
        recovered = []
        for info in self.catalog.training_runs(["pending", "queued", "running", "interrupted"]):
            try:
                request = TrainingRequest.from_config({**info.config, "album_ids": list(info.album_ids)})
                if not request.album_ids or not request.steps:
                    raise ValueError("no training settings recorded")
            except (TypeError, ValueError) as error:
                self.catalog.update_training_run(
                    info.id, state="failed", error_message=f"cannot resume: {error} (not started by this trainer)")
                continue
            run = Run(id=info.id, request=request, state=QUEUED, current_step=info.current_step)
            if info.state == RUNNING:
                self.catalog.update_training_run(info.id, state=INTERRUPTED,
                                                 error_message="the trainer stopped while this ran; resuming")
            self.catalog.update_training_run(info.id, state=QUEUED, error_message="")
            recovered.append(run)
        return recovered

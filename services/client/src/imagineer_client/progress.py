"""Live progress bars for generation jobs and trainings, shared by the command line and the demo."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imagineer.trainer.v1 import labeling_service_pb2 as labeling_api
from imagineer_client.client import Imagineer


def follow_generation(client: Imagineer, job, console: Console, *, quiet: bool):
    """Watches a job with a live bar: steps of the current batch and images stored."""
    total_images = len(job.images)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        images = progress.add_task("images", total=total_images)
        steps = progress.add_task("steps", total=None)
        for event in client.watch(job.id):
            job = event.job
            kind = event.WhichOneof("event")
            if kind == "queued":
                progress.update(steps, description=f"queued (position {event.queued.queue_position})")
            elif kind == "step":
                progress.update(steps, description="steps", completed=event.step.step, total=event.step.total_steps)
            elif kind == "image":
                progress.update(images, completed=job.images_done)
    return job


def follow_training(client: Imagineer, training, console: Console, *, quiet: bool):
    """A live bar: step of total, loss and the estimate to the end."""
    with _counting_bar(console, quiet, "training", training.total_steps) as (progress, task):
        for event in client.watch_training(training.id):
            training = event.training
            kind = event.WhichOneof("event")
            if kind == "queued":
                progress.update(task, description=f"queued (position {event.queued.queue_position})")
            elif kind == "started":
                progress.update(task, description="training", completed=event.started.from_step)
            elif kind == "step":
                step = event.step
                progress.update(task, completed=step.step, total=step.total_steps,
                                info=f"loss {step.loss:.4f}  ~{step.remaining_seconds:.0f}s left")
    return training


def follow_labeling(client: Imagineer, labeling: labeling_api.Labeling, console: Console, *,
                    quiet: bool) -> labeling_api.Labeling:
    """A live bar: images handled of total, with the counts so far."""
    with _counting_bar(console, quiet, "labeling", labeling.total_images) as (progress, task):
        for event in client.watch_labeling(labeling.id):
            labeling = event.labeling
            kind = event.WhichOneof("event")
            if kind == "queued":
                progress.update(task, description=f"queued (position {event.queued.queue_position})")
            elif kind in ("started", "image"):
                summary = labeling.summary
                progress.update(task, description="labeling", completed=labeling.images_done,
                                total=labeling.total_images,
                                info=f"{summary.labeled} labeled, {summary.failed} failed, {summary.skipped} skipped")
    return labeling


@contextmanager
def _counting_bar(console: Console, quiet: bool, description: str, total: int):
    """One bar of done-of-total with a free ``info`` text beside it; yields the Progress and its task."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        yield progress, progress.add_task(description, total=total or None, info="")

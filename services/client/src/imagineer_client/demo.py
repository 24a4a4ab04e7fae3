"""The whole Imagineer story against running services, step by step, through the public API only.

1. generate a batch of images from a prompt template into a new album;
2. label every image: a caption from the trainer's AI labeler, and one tag per template value;
3. mark the album as a training source;
4. train a LoRA on it, with a live progress bar;
5. generate the first picture again with the LoRA (same prompt and seed);
6. list what landed where.

`make demo` runs it with printing; the end-to-end tests run it and check every step.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import grpc
from PIL import Image
from rich.console import Console
from rich.table import Table

from imagineer.catalog.v1 import resources_pb2 as catalog_pb2
from imagineer.common.v1 import common_pb2
from imagineer_client.client import Imagineer, ImagineerError, Lora
from imagineer_client.progress import follow_generation, follow_labeling, follow_training

TEMPLATE = "a {colour} {thing} on a plain background, flat illustration"
ROWS = [{"colour": "red", "thing": "kite"}, {"colour": "blue", "thing": "boat"},
        {"colour": "green", "thing": "tree"}, {"colour": "yellow", "thing": "house"}]
LABELER = "imagineer-demo"


@dataclass(frozen=True)
class DemoSettings:
    images_per_row: int = 2
    generation_steps: int = 12
    training_steps: int = 40
    rank: int = 4
    seed: int = 1234
    lora_weight: float = 1.0
    album_name: str = "Demo: flat illustrations"
    labeler: str = "local"  # `make run` gives the trainer the demo captioner; "anthropic" with an API key


@dataclass
class DemoReport:
    album_id: str = ""
    image_ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    label_ids: list[str] = field(default_factory=list)  # the tags the demo added
    labeling_id: str = ""
    labeler_model: str = ""
    training_id: str = ""
    artifact_id: str = ""
    validation_album_id: str = ""
    final_step: int = 0
    final_loss: float = 0.0
    lora_album_id: str = ""
    lora_image_id: str = ""
    lora_changed_image: bool = False


def same_pixels(client: Imagineer, first_id: str, second_id: str) -> bool:
    """Whether two catalog images show exactly the same picture (their files differ anyway: each PNG carries
    its own generation record)."""
    pictures = []
    for image_id in (first_id, second_id):
        with Image.open(io.BytesIO(client.download_image(image_id)[1])) as opened:
            pictures.append((opened.size, opened.convert("RGB").tobytes()))
    return pictures[0] == pictures[1]


class DemoFailed(Exception):
    """A step of the story did not end as it should."""


def run_demo(client: Imagineer, console: Console, settings: DemoSettings = DemoSettings(), *,
             quiet: bool = False) -> DemoReport:
    report = DemoReport()
    say = (lambda *_args: None) if quiet else console.print

    say(f"[bold]1. Generating[/bold] {len(ROWS)} prompts x {settings.images_per_row} images from the template "
        f"[italic]{TEMPLATE}[/italic]")
    job = client.generate(template=TEMPLATE, rows=ROWS, images=settings.images_per_row,
                          steps=settings.generation_steps, seed=settings.seed, album_name=settings.album_name)
    job = follow_generation(client, job, console, quiet=quiet)
    _expect_completed(job.state, f"generation job {job.id}", job.error_message)
    report.album_id = job.album_id
    report.image_ids = [image.image_id for image in job.images]
    report.prompts = [image.prompt for image in job.images]
    report.seeds = [image.seed for image in job.images]
    say(f"   {len(report.image_ids)} images stored in album {report.album_id}")

    say("[bold]2. Labeling[/bold] the album with the trainer's AI labeler, then with the template's values as tags")
    try:
        labeling = client.label(album_id=report.album_id, labeler=settings.labeler)
    except ImagineerError as error:
        if error.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        # A trainer started without a labeler (make run gives it the demo captioner): captions from the prompts.
        say(f"   no AI labeler on this trainer ({error}); the prompts become the captions")
        labeling = None
    if labeling is not None:
        labeling = follow_labeling(client, labeling, console, quiet=quiet)
        _expect_completed(labeling.state, f"labeling {labeling.id}", labeling.error_message)
        report.labeling_id, report.labeler_model = labeling.id, labeling.source_model
    else:
        report.labeler_model = LABELER
        for image_id, prompt in zip(report.image_ids, report.prompts, strict=True):
            client.add_label(image_id, prompt, catalog_pb2.LABEL_TYPE_CAPTION, source_model=LABELER)
    for index, image_id in enumerate(report.image_ids):
        row = ROWS[index // settings.images_per_row]
        for value in row.values():
            report.label_ids.append(client.add_label(image_id, value, catalog_pb2.LABEL_TYPE_TAG,
                                                     source_model=LABELER).id)
    say(f"   {len(report.image_ids)} images captioned by {report.labeler_model}, {len(report.label_ids)} tags added")

    say("[bold]3. Marking[/bold] the album as a training source")
    client.update_album(report.album_id, is_training_source=True)

    say(f"[bold]4. Training[/bold] a rank-{settings.rank} LoRA for {settings.training_steps} steps")
    training = client.train([report.album_id], name="demo LoRA", steps=settings.training_steps, rank=settings.rank,
                            batch_size=4, seed=settings.seed, checkpoint_interval=settings.training_steps,
                            validation_prompts=[report.prompts[0]])
    training = follow_training(client, training, console, quiet=quiet)
    _expect_completed(training.state, f"training {training.id}", training.error_message)
    report.training_id, report.artifact_id = training.id, training.artifact_id
    report.validation_album_id = training.validation_album_id
    report.final_step, report.final_loss = training.current_step, training.loss
    say(f"   LoRA artifact {report.artifact_id} (final loss {training.loss:.4f})")

    say("[bold]5. Generating again[/bold] with the LoRA: the first prompt and seed")
    again = client.generate(report.prompts[0], seed=report.seeds[0], steps=settings.generation_steps,
                            loras=[Lora(report.artifact_id, settings.lora_weight)], album_name="Demo: with the LoRA")
    again = follow_generation(client, again, console, quiet=quiet)
    _expect_completed(again.state, f"generation job {again.id}", again.error_message)
    report.lora_album_id, report.lora_image_id = again.album_id, again.images[0].image_id
    report.lora_changed_image = not same_pixels(client, report.image_ids[0], report.lora_image_id)
    say(f"   image {report.lora_image_id}: " + ("differs from" if report.lora_changed_image else "SAME AS")
        + f" image {report.image_ids[0]} made without the LoRA")

    if not quiet:
        _print_results(client, console, report)
    return report


def _expect_completed(state: int, what: str, error: str) -> None:
    if state != common_pb2.JOB_STATE_COMPLETED:
        raise DemoFailed(f"{what} ended {common_pb2.JobState.Name(state)}: {error or 'no reason given'}")


def _print_results(client: Imagineer, console: Console, report: DemoReport) -> None:
    console.print("[bold]6. Results[/bold]")
    table = Table("what", "where", "look at it with")
    table.add_row("generated images", f"album {report.album_id} ({len(report.image_ids)} images)",
                  f"imagineer albums show {report.album_id}")
    table.add_row("labels", f"captions by {report.labeler_model}, {len(report.label_ids)} tags",
                  f"imagineer labels list {report.image_ids[0]}")
    table.add_row("training run", f"training {report.training_id}, step {report.final_step}",
                  "imagineer runs list")
    table.add_row("LoRA weights", f"artifact {report.artifact_id}",
                  f"imagineer generate PROMPT --lora {report.artifact_id}:0.8")
    if report.validation_album_id:
        table.add_row("validation images", f"album {report.validation_album_id}",
                      f"imagineer albums show {report.validation_album_id}")
    table.add_row("image with the LoRA", f"album {report.lora_album_id}",
                  f"imagineer images download {report.lora_image_id} --out out/")
    console.print(table)
    try:
        albums = client.list_albums(limit=10)
    except ImagineerError:
        return
    console.print(f"{len(albums)} most recent albums: " + ", ".join(f"{a.id} {a.name!r}" for a in albums))

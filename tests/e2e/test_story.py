"""The demo story end to end (what `make demo` does), checked at every step through the public API."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness.processes import ADMIN_TOKEN
from rich.console import Console

from imagineer.catalog.v1 import catalog_service_pb2 as catalog_api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer_client import cli
from imagineer_client.client import Lora
from imagineer_client.demo import ROWS, DemoSettings, run_demo, same_pixels

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = DemoSettings(images_per_row=2, generation_steps=8, training_steps=24, rank=4, seed=77)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def story(platform):
    with platform.client() as client:
        report = run_demo(client, Console(file=io.StringIO()), SETTINGS, quiet=True)
    return report


@pytest.fixture(scope="module")
def client(platform):
    with platform.client() as connection:
        yield connection


def test_every_planned_image_is_stored_in_album_order(story, client):
    assert len(story.image_ids) == len(ROWS) * SETTINGS.images_per_row
    assert all(story.image_ids) and len(set(story.image_ids)) == len(story.image_ids)
    members = client.album_images(story.album_id)
    assert [m.image.id for m in members] == story.image_ids
    assert [m.position for m in members] == list(range(len(story.image_ids)))
    album = client.get_album(story.album_id)
    assert album.album_type == res.ALBUM_TYPE_SET and album.name == SETTINGS.album_name


def test_each_image_carries_its_generation_record(story, client):
    for index, image_id in enumerate(story.image_ids):
        image = client.get_image(image_id)
        row = ROWS[index // SETTINGS.images_per_row]
        assert row["colour"] in image.generation.prompt and row["thing"] in image.generation.prompt
        assert image.generation.prompt == story.prompts[index]
        assert image.generation.seed == story.seeds[index] == SETTINGS.seed + index
        assert image.generation.steps == SETTINGS.generation_steps
        assert image.content_type == "image/png" and image.has_file and image.has_thumbnail


def test_labels_are_an_ai_caption_and_the_template_values(story, client):
    labeling = client.get_labeling(story.labeling_id)
    assert labeling.summary.labeled == len(story.image_ids) and labeling.summary.failed == 0
    assert story.labeler_model == labeling.source_model == "local:imagineer-tiny-blip"
    for index, image_id in enumerate(story.image_ids):
        labels = client.list_labels(image_id)
        captions = [label for label in labels if label.label_type == res.LABEL_TYPE_CAPTION]
        tags = sorted(label.text for label in labels if label.label_type == res.LABEL_TYPE_TAG)
        assert len(captions) == 1 and captions[0].text.strip()
        assert captions[0].source_model == story.labeler_model and captions[0].source_prompt
        assert tags == sorted(ROWS[index // SETTINGS.images_per_row].values())
    assert len(story.label_ids) == 2 * len(story.image_ids)


def test_the_album_became_a_training_source(story, client):
    assert client.get_album(story.album_id).is_training_source
    listed = client.list_images(in_training_source_album=True, limit=100)
    assert set(story.image_ids) <= {image.id for image in listed}


def test_the_catalog_record_of_the_training_matches_the_trainer(story, client):
    training = client.get_training(story.training_id)
    run = client.catalog.GetTrainingRun(catalog_api.GetTrainingRunRequest(id=story.training_id),
                                        metadata=client.metadata)
    assert training.state == run.state == common_pb2.JOB_STATE_COMPLETED
    assert training.current_step == run.current_step == SETTINGS.training_steps
    assert run.artifact_id == training.artifact_id == story.artifact_id
    assert list(run.album_ids) == [story.album_id]
    assert run.training_loss == pytest.approx(training.loss, rel=1e-5)
    assert run.progress_percent == pytest.approx(100.0)


def test_the_lora_is_published_and_changes_the_image(story, client):
    artifact = client.catalog.GetArtifact(catalog_api.GetArtifactRequest(id=story.artifact_id),
                                          metadata=client.metadata)
    assert artifact.kind == res.ARTIFACT_KIND_LORA and artifact.size_bytes > 0
    assert artifact.training_run_id == story.training_id
    assert story.lora_changed_image
    with_lora = client.get_image(story.lora_image_id)
    without = client.get_image(story.image_ids[0])
    assert with_lora.generation.prompt == without.generation.prompt
    assert with_lora.generation.seed == without.generation.seed
    assert with_lora.sha256 != without.sha256
    assert [lora.artifact_id for lora in with_lora.generation.loras] == [story.artifact_id]


def test_a_lora_downloaded_and_uploaded_again_paints_the_same_picture(platform, story, client, tmp_path, capsys):
    """The way out to other tools and back in: `imagineer artifacts download`, then `upload` as a LoRA made
    elsewhere, then generate with it exactly as the demo did with the trained one."""
    common = ["--catalog", platform.catalog.address, "--token", ADMIN_TOKEN, "--json", "artifacts"]
    assert cli.main([*common, "download", story.artifact_id, "--out", str(tmp_path)]) == 0
    downloaded = Path(json.loads(capsys.readouterr().out)["path"])
    trained = client.get_artifact(story.artifact_id)
    assert downloaded.parent == tmp_path and downloaded.stat().st_size == trained.size_bytes

    assert cli.main([*common, "upload", str(downloaded), "--name", "from elsewhere"]) == 0
    uploaded = json.loads(capsys.readouterr().out)
    assert not uploaded.get("already_existed"), "no training run made this one: it is an artifact of its own"
    copy = client.get_artifact(uploaded["artifact"]["id"])
    assert copy.id != trained.id and copy.sha256 == trained.sha256 and not copy.training_run_id

    original = client.get_image(story.lora_image_id).generation
    (lora,) = original.loras
    job = client.generate_and_wait(original.prompt, negative_prompt=original.negative_prompt, seed=original.seed,
                                   steps=original.steps, guidance_scale=original.guidance_scale,
                                   scheduler=original.scheduler, width=original.width, height=original.height,
                                   loras=[Lora(copy.id, lora.weight)])
    assert job.state == common_pb2.JOB_STATE_COMPLETED, job.error_message
    assert same_pixels(client, job.images[0].image_id, story.lora_image_id)


def test_validation_images_landed_in_their_album(story, client):
    members = client.album_images(story.validation_album_id)
    assert members, "the checkpoint's validation image is missing"
    assert all(m.image.generation.prompt == story.prompts[0] for m in members)


def test_make_demo_uses_the_running_services(platform, story):
    # `make demo` against services that already run (as under `make run`): it must not start its own.
    env = {**os.environ, "IMAGINEER_CATALOG_ADDRESS": platform.catalog.address,
           "IMAGINEER_GENERATOR_ADDRESS": platform.generator.address,
           "IMAGINEER_TRAINER_ADDRESS": platform.trainer.address, "IMAGINEER_TOKEN": ADMIN_TOKEN,
           "COLUMNS": "200"}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], env=env, capture_output=True,
                            text=True, timeout=900, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the services that are already running" in result.stdout
    assert "demo finished" in result.stdout and "differs from" in result.stdout
    assert "starting the services" not in result.stdout


def test_status_reports_every_service_serving(platform, capsys):
    code = cli.main(["--catalog", platform.catalog.address, "--generator", platform.generator.address,
                     "--trainer", platform.trainer.address, "--token", ADMIN_TOKEN, "status", "--json"])
    statuses = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert code == 0
    assert set(statuses) == {"catalog", "generator", "trainer", "labeling", "scraping"}
    assert all(entry["state"] == "SERVING" for entry in statuses.values())
    assert "imagineer/tiny-sd" in statuses["generator"]["detail"] and "(demo)" in statuses["generator"]["detail"]


def test_without_an_ai_labeler_the_demo_captions_with_the_prompts(platform, story):
    # The platform's trainer has no hosted labeler: the demo says so and goes on with the prompts as captions.
    quick = DemoSettings(images_per_row=1, generation_steps=4, training_steps=4, rank=2, seed=99,
                         labeler="anthropic", album_name="Demo without a labeler")
    out = io.StringIO()
    with platform.client() as client:
        report = run_demo(client, Console(file=out, width=200), quick)
        assert "no AI labeler on this trainer" in out.getvalue()
        assert report.labeling_id == "" and report.artifact_id
        for image_id, prompt in zip(report.image_ids, report.prompts, strict=True):
            captions = [label.text for label in client.list_labels(image_id)
                        if label.label_type == res.LABEL_TYPE_CAPTION]
            assert captions == [prompt]

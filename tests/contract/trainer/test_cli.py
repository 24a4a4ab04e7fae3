"""`imagineer train` and `imagineer runs` against a running trainer and catalog."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.processes import ADMIN_TOKEN


def imagineer(catalog, trainer, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "imagineer_client.cli", "--catalog", catalog.address, "--trainer",
               trainer.address, "--token", ADMIN_TOKEN, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_train_waits_and_reports_the_artifact(catalog, trainer, album):
    result = imagineer(catalog, trainer, "--json", "train", "--album", album.id, "--steps", "6", "--rank", "4",
                       "--batch-size", "2", "--seed", "5", "--checkpoint-every", "3")
    assert result.returncode == 0, result.stderr
    training = json.loads(result.stdout)
    assert training["state"] == "JOB_STATE_COMPLETED" and training["current_step"] == 6
    assert training["artifact_id"] and training["request"]["seed"] == "5"
    listing = imagineer(catalog, trainer, "--json", "runs", "list")
    assert listing.returncode == 0
    assert training["id"] in [run["id"] for run in json.loads(listing.stdout)]


def test_table_output_names_the_lora_to_use(catalog, trainer, album):
    result = imagineer(catalog, trainer, "train", "--album", album.id, "--steps", "3", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and "--lora" in result.stdout


def test_refused_training_exits_2(catalog, trainer):
    result = imagineer(catalog, trainer, "train", "--album", "987654", "--steps", "3")
    assert result.returncode == 2 and "NOT_FOUND" in result.stdout
    bad = imagineer(catalog, trainer, "train", "--album", "1", "--rank", "999")
    assert bad.returncode == 2 and "rank" in bad.stdout

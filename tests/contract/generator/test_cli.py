"""The `imagineer` command line against running services: generate, save, list, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.processes import ADMIN_TOKEN
from PIL import Image


def imagineer(catalog, generator, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "imagineer_client.cli", "--catalog", catalog.address,
               "--generator", generator.address, "--token", ADMIN_TOKEN, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_generate_saves_files_and_prints_catalog_ids(catalog, generator, tmp_path):
    out = tmp_path / "out"
    result = imagineer(catalog, generator, "--json", "generate", "a castle at dusk", "--steps", "3", "--seed", "7",
                       "-n", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["state"] == "JOB_STATE_COMPLETED"
    assert [image["seed"] for image in job["images"]] == ["7", "8"]
    assert all(image["image_id"] for image in job["images"])
    files = sorted(out.iterdir())
    assert len(files) == 2 and [str(path) for path in files] == sorted(job["saved_files"])
    with Image.open(files[0]) as picture:
        assert picture.size == (64, 64) and "a castle at dusk" in picture.text["parameters"]


def test_table_output_and_jobs_list(catalog, generator):
    result = imagineer(catalog, generator, "generate", "a quiet harbour", "--steps", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and "a quiet harbour" in result.stdout
    listing = imagineer(catalog, generator, "--json", "jobs", "list", "--limit", "5")
    assert listing.returncode == 0
    assert any(job["parameters"]["prompt"] == "a quiet harbour" for job in json.loads(listing.stdout))


def test_bad_input_exits_2_with_the_reason(catalog, generator):
    result = imagineer(catalog, generator, "generate", "a fox", "--width", "65")
    assert result.returncode == 2
    assert "INVALID_ARGUMENT" in result.stdout and "width" in result.stdout


def test_wrong_token_exits_2(catalog, generator):
    command = [sys.executable, "-m", "imagineer_client.cli", "--generator", generator.address, "--token", "nope",
               "generate", "a fox"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "UNAUTHENTICATED" in result.stdout

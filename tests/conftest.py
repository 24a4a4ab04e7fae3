"""Fixtures of every test under tests/: the demo model folder, built once per session in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO_MODEL_FOLDER = "imagineer-tiny-sd"


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The demo model folder, built once in a subprocess (torch stays out of the test process); the generators
    and trainers of the tests load it (``IMAGINEER_GENERATOR_MODEL`` / ``IMAGINEER_TRAINER_MODEL``)."""
    models_dir = tmp_path_factory.mktemp("demo-models")
    code = "import sys; from pathlib import Path; from imagineer_models.tiny_model import ensure_tiny_model; " \
           "print(ensure_tiny_model(Path(sys.argv[1])))"
    result = subprocess.run([sys.executable, "-c", code, str(models_dir)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"building the demo model failed ({result.returncode}):\n{result.stderr}")
    folder = models_dir / DEMO_MODEL_FOLDER
    assert (folder / "model_index.json").is_file(), result.stdout
    return folder

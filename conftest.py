"""Fixtures shared by every test session: the tiny demo model, built once per session when a test asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models folder holding the demo model (``imagineer-tiny-sd``), built once for the whole session (~3 s)."""
    from imagineer_models.tiny_model import ensure_tiny_model

    models_dir = tmp_path_factory.mktemp("models")
    ensure_tiny_model(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_models_dir) -> Path:
    from imagineer_models.tiny_model import DEMO_MODEL_FOLDER

    return tiny_models_dir / DEMO_MODEL_FOLDER


@pytest.fixture(scope="session")
def tiny_model(tiny_models_dir):
    """The demo model loaded on the CPU, shared by the session: tests must leave the pipeline as they found it."""
    from imagineer_models.loading import load_model

    return load_model(None, models_dir=tiny_models_dir, device="cpu")

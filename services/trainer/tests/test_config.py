"""Trainer settings."""

from __future__ import annotations

import pytest

from imagineer_common.env import SettingError
from imagineer_trainer.config import TrainerSettings


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGINEER_TRAINER_DATA_DIR", str(tmp_path))
    settings = TrainerSettings.from_env()
    assert settings.port == 50053 and settings.queue_capacity == 16 and settings.model is None
    assert settings.runs_dir == tmp_path / "trainer" / "runs"


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("IMAGINEER_TRAINER_QUEUE_CAPACITY", "0")
    with pytest.raises(SettingError, match="IMAGINEER_TRAINER_QUEUE_CAPACITY"):
        TrainerSettings.from_env()

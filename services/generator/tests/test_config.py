"""Generator settings: defaults, and bad values named clearly."""

from __future__ import annotations

import pytest

from imagineer_common.env import SettingError
from imagineer_generator.config import GeneratorSettings


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGINEER_GENERATOR_DATA_DIR", str(tmp_path))
    settings = GeneratorSettings.from_env()
    assert settings.model is None  # the demo model
    assert settings.port == 50052 and settings.catalog_address == "127.0.0.1:50051"
    assert settings.exact_batches and settings.max_batch == 4 and settings.queue_capacity == 32
    assert settings.models_dir == tmp_path / "models"


@pytest.mark.parametrize("name, value", [("IMAGINEER_GENERATOR_BATCH_MODE", "turbo"),
                                         ("IMAGINEER_GENERATOR_DEVICE", "tpu"),
                                         ("IMAGINEER_GENERATOR_MAX_BATCH", "0"),
                                         ("IMAGINEER_GENERATOR_QUEUE_CAPACITY", "many")])
def test_bad_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match=name):
        GeneratorSettings.from_env()


def test_production_needs_tokens(monkeypatch):
    monkeypatch.setenv("IMAGINEER_GENERATOR_MODE", "production")
    monkeypatch.delenv("IMAGINEER_GENERATOR_ADMIN_TOKENS", raising=False)
    with pytest.raises(SettingError, match="ADMIN_TOKENS"):
        GeneratorSettings.from_env()


def test_fast_batches_can_be_chosen(monkeypatch):
    monkeypatch.setenv("IMAGINEER_GENERATOR_BATCH_MODE", "fast")
    assert not GeneratorSettings.from_env().exact_batches

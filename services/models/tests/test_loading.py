"""Loading models from local folders and files, and the errors that name what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from imagineer_models.loading import ModelLoadError, load_model, model_name, resolve_device
from imagineer_models.tiny_model import DEMO_MODEL_NAME


def test_a_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model") as caught:
        load_model(missing, models_dir=tmp_path)
    assert caught.value.source == str(missing)
    assert "no such file or folder" in str(caught.value)


def test_a_folder_without_model_index_is_not_a_pipeline(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"photos.*no model_index\.json"):
        load_model(folder, models_dir=tmp_path)


def test_a_pipeline_of_another_kind_is_refused(tmp_path):
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline", "unet": ["x", "y"]}))
    with pytest.raises(ModelLoadError, match=r"not a Stable Diffusion pipeline.*KandinskyPipeline"):
        load_model(folder, models_dir=tmp_path)


def test_broken_weights_are_a_model_load_error(tmp_path, tiny_model_dir):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="broken"):
        load_model(folder, models_dir=tmp_path)


def test_a_missing_component_folder_is_named(tmp_path, tiny_model_dir):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelLoadError, match=r"partial.*missing sub-folder.*vae"):
        load_model(folder, models_dir=tmp_path)


def test_an_unknown_file_type_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match=r"model\.bin.*\.safetensors"):
        load_model(path, models_dir=tmp_path)


def test_a_single_file_without_config_explains_what_to_do(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "dreamshaper.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(ModelLoadError) as caught:
        load_model(path, models_dir=tmp_path)
    message = str(caught.value)
    assert "dreamshaper.safetensors" in message
    assert "single_file_config" in message and "hub" in message


def test_a_single_file_config_must_be_a_pipeline_folder(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match=r"single_file_config .* is not a diffusers pipeline folder"):
        load_model(path, models_dir=tmp_path, single_file_config=tmp_path / "nothing")


def test_model_names(tmp_path, tiny_model_dir):
    assert model_name(tiny_model_dir) == DEMO_MODEL_NAME
    folder = tmp_path / "realistic-vision-v6"
    folder.mkdir()
    assert model_name(folder) == "realistic-vision-v6"
    assert model_name(tmp_path / "dreamshaper_8.safetensors") == "dreamshaper_8"
    assert model_name(tmp_path / "v1-5-pruned-emaonly.ckpt") == "v1-5-pruned-emaonly"


def test_a_real_folder_is_named_after_itself(tmp_path, tiny_model_dir):
    folder = tmp_path / "my-sd15"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "imagineer-demo-model.json").unlink()
    model = load_model(folder, models_dir=tmp_path, device="cpu")
    assert model.name == "my-sd15" and not model.is_demo
    assert model.default_size == 64 and model.dtype == torch.float32


def test_devices_and_dtypes():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_loading_sets_offline_mode(tmp_path, tiny_models_dir):
    import os

    import huggingface_hub.constants

    load_model(None, models_dir=tiny_models_dir, device="cpu")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_a_demo_model_that_cannot_be_built_is_a_model_load_error(tmp_path, monkeypatch):
    from imagineer_models import tiny_model

    def crash(seed):
        raise OSError("No space left on device")

    monkeypatch.setattr(tiny_model, "_make_pipeline", crash)
    with pytest.raises(ModelLoadError, match="cannot build the demo model there: OSError: No space left"):
        load_model(None, models_dir=tmp_path / "models")

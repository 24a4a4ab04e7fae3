"""The tiny demo model: deterministic build, crash-safe install, a real vocabulary, loaded like a real model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagineer_models import tiny_model
from imagineer_models.loading import load_model, model_name
from imagineer_models.tiny_model import (
    DEFAULT_SIZE,
    DEMO_MODEL_FOLDER,
    DEMO_MODEL_NAME,
    MARKER_FILE,
    PROMPT_WORDS,
    build_tiny_pipeline,
    build_vocabulary,
    ensure_tiny_model,
    is_complete,
    is_demo_model,
)

PROMPT = "a painting of a cat in the forest, highly detailed, golden hour"


def _files(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


@pytest.mark.slow
def test_two_builds_with_the_same_seed_are_byte_identical(tmp_path):
    first = build_tiny_pipeline(tmp_path / "one", seed=0)
    second = build_tiny_pipeline(tmp_path / "two", seed=0)
    files_one, files_two = _files(first), _files(second)
    assert files_one.keys() == files_two.keys()
    weights = [name for name in files_one if name.endswith(".safetensors")]
    assert sorted(weights) == ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                               "vae/diffusion_pytorch_model.safetensors"]
    assert files_one == files_two
    other = build_tiny_pipeline(tmp_path / "three", seed=1)
    assert _files(other)["unet/diffusion_pytorch_model.safetensors"] != files_one[
        "unet/diffusion_pytorch_model.safetensors"]


def test_the_build_is_small_and_marked(tiny_model_dir):
    files = _files(tiny_model_dir)
    assert sum(len(data) for data in files.values()) < 10_000_000
    marker = json.loads(files[MARKER_FILE])
    assert marker == {"name": DEMO_MODEL_NAME, "version": tiny_model.DEMO_MODEL_VERSION, "seed": 0,
                      "default_size": DEFAULT_SIZE}
    assert is_demo_model(tiny_model_dir) and is_complete(tiny_model_dir)
    assert model_name(tiny_model_dir) == DEMO_MODEL_NAME
    scheduler = json.loads(files["scheduler/scheduler_config.json"])
    assert scheduler["steps_offset"] == 1 and scheduler["_class_name"] == "PNDMScheduler"


def test_loads_like_a_real_model(tiny_model, tiny_model_dir):
    assert tiny_model.name == DEMO_MODEL_NAME
    assert tiny_model.is_demo
    assert tiny_model.source == tiny_model_dir
    assert tiny_model.device == "cpu"
    assert tiny_model.default_size == DEFAULT_SIZE == 64
    pipeline = tiny_model.pipeline
    assert pipeline.unet.config.sample_size * pipeline.vae_scale_factor == 64
    assert pipeline.safety_checker is None
    assert sum(p.numel() for p in pipeline.unet.parameters()) < 1_500_000
    assert sum(p.numel() for p in pipeline.vae.parameters()) < 1_000_000


def test_the_pipeline_default_size_is_64(tiny_model):
    image = tiny_model.pipeline("a cat", num_inference_steps=2, output_type="pil").images[0]
    assert image.size == (64, 64)


def test_prompt_words_are_whole_tokens_of_the_saved_tokenizer(tiny_model):
    tokenizer = tiny_model.pipeline.tokenizer
    assert len(tokenizer) > 1000
    ids = tokenizer(PROMPT).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    inner = ids[1:-1]
    assert tokenizer.unk_token_id not in inner
    assert tokenizer.convert_ids_to_tokens(inner) == [
        "a</w>", "painting</w>", "of</w>", "a</w>", "cat</w>", "in</w>", "the</w>", "forest</w>", ",</w>",
        "highly</w>", "detailed</w>", ",</w>", "golden</w>", "hour</w>"]
    for word in PROMPT_WORDS:
        assert tokenizer.convert_ids_to_tokens(tokenizer(word).input_ids[1:-1]) == [word.lower() + "</w>"], word


def test_unknown_words_fall_back_to_bytes_not_unk(tiny_model):
    tokenizer = tiny_model.pipeline.tokenizer
    inner = tokenizer("zyxqv über 42").input_ids[1:-1]
    assert inner and tokenizer.unk_token_id not in inner
    assert tokenizer.decode(inner) == "zyxqv über 4 2"


def test_vocabulary_is_deterministic_and_clip_shaped():
    vocab, merges = build_vocabulary()
    assert (vocab, merges) == build_vocabulary()
    assert len(vocab) == 512 + len({"".join(pair) for pair in merges}) + 2
    assert vocab["<|endoftext|>"] == len(vocab) - 1 and vocab["<|startoftext|>"] == len(vocab) - 2
    assert vocab["!"] == 0 and vocab["!</w>"] == 256


def test_text_changes_the_conditioning(tiny_model):
    import torch

    pipeline = tiny_model.pipeline
    ids = pipeline.tokenizer(["a red cat", "a blue house"], padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
    with torch.no_grad():
        embeddings = pipeline.text_encoder(ids)[0]
    assert not torch.equal(embeddings[0], embeddings[1])


def test_images_are_colourful_not_flat_grey(tiny_model):
    import torch

    image = tiny_model.pipeline(prompt="a cat", num_inference_steps=10, width=64, height=64,
                                generator=torch.Generator(device="cpu").manual_seed(3)).images[0]
    pixels = np.asarray(image).astype(float)
    assert pixels.std(axis=(0, 1)).min() > 30  # every channel varies a lot
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert saturation.mean() > 60


def test_ensure_builds_once(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copytree(tiny_model_dir, models_dir / DEMO_MODEL_FOLDER)

    def must_not_build(*args, **kwargs):
        raise AssertionError("rebuilt a complete model")

    monkeypatch.setattr(tiny_model, "build_tiny_pipeline", must_not_build)
    assert ensure_tiny_model(models_dir) == models_dir / DEMO_MODEL_FOLDER


def test_ensure_replaces_an_incomplete_copy(tmp_path, tiny_model_dir):
    import shutil

    target = tmp_path / DEMO_MODEL_FOLDER
    shutil.copytree(tiny_model_dir, target)
    (target / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert not is_complete(target)
    assert ensure_tiny_model(tmp_path) == target
    assert is_complete(target)
    assert _files(target) == _files(tiny_model_dir)
    assert [path.name for path in tmp_path.iterdir()] == [DEMO_MODEL_FOLDER]  # no leftovers


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def crash(seed):
        raise RuntimeError("out of disk")

    monkeypatch.setattr(tiny_model, "_make_pipeline", crash)
    with pytest.raises(RuntimeError, match="out of disk"):
        ensure_tiny_model(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_build_never_overwrites(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        build_tiny_pipeline(tmp_path / "taken")


def test_a_folder_without_the_marker_is_not_the_demo_model(tmp_path):
    assert not is_demo_model(tmp_path)
    (tmp_path / MARKER_FILE).write_text(json.dumps({"name": "someone/else"}))
    assert not is_demo_model(tmp_path)
    (tmp_path / MARKER_FILE).write_text("not json")
    assert not is_demo_model(tmp_path)


def test_demo_model_loads_through_from_pretrained(tiny_models_dir, tiny_model_dir):
    explicit = load_model(tiny_model_dir, models_dir=tiny_models_dir, device="cpu")
    assert explicit.is_demo and explicit.name == DEMO_MODEL_NAME


def test_the_tokenizer_folder_also_has_vocab_and_merges(tiny_model_dir, tiny_model):
    from transformers import CLIPTokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    folder = tiny_model_dir / "tokenizer"
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= {path.name for path in folder.iterdir()}
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 77
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]]
    from_files = CLIPTokenizer(vocab=vocab, merges=merges)
    assert isinstance(from_files, TokenizersBackend)
    assert from_files(PROMPT).input_ids == tiny_model.pipeline.tokenizer(PROMPT).input_ids

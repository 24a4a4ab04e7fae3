"""The LoRA training loop on the tiny demo model: real diffusers + peft steps, saving, loading and resuming.

Every test that trains loads its own copy of the model (training adds adapters to the pipeline's UNet).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagineer_models.loading import load_model
from imagineer_trainer.dataset import SourceImage, TrainingExample, build_examples
from imagineer_trainer.training import (
    LORA_WEIGHTS_FILE,
    LoraTrainer,
    StepReport,
    TrainingConfig,
    TrainingError,
)

PROMPT = "a red cat"


def fresh_model(models_dir: Path):
    return load_model(None, models_dir=models_dir, device="cpu")


def make_examples(count: int = 5) -> list[TrainingExample]:
    rng = np.random.default_rng(1234)
    sources = []
    for index in range(count):
        width, height = 64 + 16 * (index % 3), 64 + 8 * (index % 2)
        base = rng.integers(0, 255, size=3)
        pixels = np.clip(base + rng.normal(0, 40, size=(height, width, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        sources.append(SourceImage(f"img-{index}", buffer.getvalue(), [("tag", "red cat"), ("tag", "oil painting")]))
    examples, skipped = build_examples(sources, caption_source="default", trigger_word="sks")
    assert not skipped
    return examples


@pytest.fixture(scope="module")
def examples() -> list[TrainingExample]:
    return make_examples()


def small_config(**overrides) -> TrainingConfig:
    settings = {"rank": 4, "alpha": 4.0, "learning_rate": 1e-3, "steps": 4, "batch_size": 2, "resolution": 64,
                "seed": 3, "checkpoint_interval": 50}
    settings.update(overrides)
    return TrainingConfig(**settings)


def never() -> bool:
    return False


def lora_tensors(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    state = {f"unet.{k}": v.clone() for k, v in get_peft_model_state_dict(model.pipeline.unet).items()}
    if getattr(model.pipeline.text_encoder, "peft_config", None):
        state.update({f"te.{k}": v.clone()
                      for k, v in get_peft_model_state_dict(model.pipeline.text_encoder).items()})
    return state


def render(model, seed: int = 7) -> np.ndarray:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    image = model.pipeline(prompt=PROMPT, num_inference_steps=10, guidance_scale=7.5, generator=generator,
                           height=64, width=64, output_type="pil").images[0]
    return np.asarray(image, dtype=np.int16)


# ------------------------------------------------------------------------------------------------ training


def test_steps_train_only_the_lora_parameters(tiny_models_dir, tmp_path, examples):
    model = fresh_model(tiny_models_dir)
    pipeline = model.pipeline
    base_before = {f"{name}.{key}": value.detach().clone()
                   for name, module in (("unet", pipeline.unet), ("vae", pipeline.vae), ("te", pipeline.text_encoder))
                   for key, value in module.state_dict().items()}
    trainer = LoraTrainer(model, examples, small_config(steps=4), tmp_path / "ckpt")
    lora_before = lora_tensors(model)
    assert lora_before and all("lora" in key for key in lora_before)
    reports: list[StepReport] = []
    outcome = trainer.run(on_step=reports.append, should_stop=never)

    assert not outcome.stopped and outcome.step == 4
    assert [report.step for report in reports] == [1, 2, 3, 4]
    assert all(report.total_steps == 4 and report.learning_rate == pytest.approx(1e-3) for report in reports)
    assert all(np.isfinite(loss) and loss > 0 for loss in outcome.loss_history)
    assert outcome.loss_history == [report.loss for report in reports]
    assert outcome.final_loss == reports[-1].loss
    elapsed = [report.elapsed_seconds for report in reports]
    assert elapsed == sorted(elapsed) and reports[-1].remaining_seconds == 0.0

    lora_after = lora_tensors(model)
    changed = [key for key in lora_before if not torch.equal(lora_before[key], lora_after[key])]
    assert len(changed) == len(lora_before)  # A and B matrices of every adapted layer moved
    for name, module in (("unet", pipeline.unet), ("vae", pipeline.vae), ("te", pipeline.text_encoder)):
        for key, value in module.state_dict().items():
            if "lora_" in key:
                continue
            before = base_before.get(f"{name}.{key}")
            if before is None:  # peft renames a wrapped layer's weight to <layer>.base_layer.weight
                before = base_before[f"{name}.{key.replace('.base_layer', '')}"]
            assert torch.equal(before, value), f"{name}.{key} changed"


def test_text_encoder_training_and_v_prediction(tiny_models_dir, tmp_path, examples):
    from diffusers import PNDMScheduler

    model = fresh_model(tiny_models_dir)
    model.pipeline.scheduler = PNDMScheduler.from_config(model.pipeline.scheduler.config,
                                                         prediction_type="v_prediction")
    trainer = LoraTrainer(model, examples, small_config(steps=2, train_text_encoder=True, random_crop=True,
                                                        lr_scheduler="linear", warmup_steps=1), tmp_path / "ckpt")
    assert trainer.prediction_type == "v_prediction"
    text_lora = [key for key in lora_tensors(model) if key.startswith("te.")]
    assert text_lora
    reports: list[StepReport] = []
    outcome = trainer.run(on_step=reports.append, should_stop=never)
    assert all(np.isfinite(outcome.loss_history))
    assert [report.learning_rate for report in reports] == [0.0, pytest.approx(1e-3)]  # warm-up, then linear
    after = lora_tensors(model)
    assert any(after[key].abs().sum() > 0 for key in text_lora if "lora_B" in key)  # B starts at zero


def test_batches_walk_through_seeded_epoch_permutations(tiny_models_dir, tmp_path, examples):
    trainer = LoraTrainer(fresh_model(tiny_models_dir), examples, small_config(batch_size=3), tmp_path)
    drawn = [index for step in range(1, 6) for index in trainer._batch_indices(step)]  # 15 draws = 3 epochs of 5
    epochs = [drawn[i:i + 5] for i in range(0, 15, 5)]
    assert all(sorted(epoch) == list(range(5)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1
    assert drawn == [index for step in range(1, 6) for index in trainer._batch_indices(step)]


# ------------------------------------------------------------------------------------------------ saving and loading


@pytest.mark.parametrize("train_text_encoder", [False, True], ids=["unet", "unet+text-encoder"])
def test_saved_lora_loads_into_a_fresh_model(tiny_models_dir, tmp_path, examples, train_text_encoder):
    model = fresh_model(tiny_models_dir)
    # alpha != rank: the file's metadata must carry alpha, else a loader would scale the LoRA differently
    config = small_config(steps=4, learning_rate=5e-2, rank=4, alpha=8.0, train_text_encoder=train_text_encoder)
    trainer = LoraTrainer(model, examples, config, tmp_path / "ckpt")
    trainer.run(on_step=lambda report: None, should_stop=never)
    path = trainer.save_lora(tmp_path / "out")
    assert path == tmp_path / "out" / LORA_WEIGHTS_FILE and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [LORA_WEIGHTS_FILE]  # no scratch left behind
    validation = np.asarray(trainer.render_validation([PROMPT], seed=7)[0], dtype=np.int16)
    assert trainer.unet.training  # back in the mode training left it in

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    assert any(key.startswith("unet.") for key in keys)
    assert any(key.startswith("text_encoder.") for key in keys) == train_text_encoder

    fresh = fresh_model(tiny_models_dir)
    base = render(fresh)
    fresh.pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="trained")
    with_lora = render(fresh)
    assert np.abs(with_lora - base).max() > 10  # the LoRA visibly changes the image
    assert np.abs(with_lora - validation).max() <= 1  # and it is the LoRA as trained, with the same scale
    fresh.pipeline.unload_lora_weights()
    assert np.array_equal(render(fresh), base)


def test_saved_lora_metadata_is_sorted_and_names_the_base_model(tiny_models_dir, tmp_path, examples):
    """peft keeps target_modules in a set, whose order follows the process's hash seed; the file must not, so
    that identical trainings in different processes write byte-identical weights."""
    import json

    from safetensors import safe_open

    model = fresh_model(tiny_models_dir)
    trainer = LoraTrainer(model, examples, small_config(steps=1, train_text_encoder=True), tmp_path / "ckpt")
    trainer.run(on_step=lambda report: None, should_stop=never)
    with safe_open(str(trainer.save_lora(tmp_path / "out")), framework="pt") as handle:
        metadata = handle.metadata()
    adapters = json.loads(metadata["lora_adapter_metadata"])
    modules = {key: value for key, value in adapters.items() if key.endswith(".target_modules")}
    assert set(modules) == {"unet.target_modules", "text_encoder.target_modules"}, sorted(adapters)
    for listed in modules.values():
        assert len(listed) > 1 and listed == sorted(listed)
    # The base model by name: the file does not carry this machine's folders.
    assert str(tiny_models_dir) not in metadata["lora_adapter_metadata"]
    assert adapters["text_encoder.base_model_name_or_path"] == model.name


def test_release_restores_the_base_model(tiny_models_dir, tmp_path, examples):
    model = fresh_model(tiny_models_dir)
    base = render(model)
    trainer = LoraTrainer(model, examples, small_config(steps=2, learning_rate=5e-2), tmp_path)
    trainer.run(on_step=lambda report: None, should_stop=never)
    assert not np.array_equal(render(model), base)
    trainer.release()
    assert np.array_equal(render(model), base)
    assert not any(p.requires_grad for p in model.pipeline.unet.parameters())
    LoraTrainer(model, examples, small_config(steps=1), tmp_path / "again")  # the model can be trained again


# ------------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(
    "overrides",
    [{}, {"train_text_encoder": True, "random_crop": True, "lr_scheduler": "cosine", "warmup_steps": 2}],
    ids=["unet", "text-encoder+random-crop+cosine"],
)
def test_stop_and_resume_equals_an_uninterrupted_run(tiny_models_dir, tmp_path, examples, overrides):
    config = small_config(steps=6, checkpoint_interval=2, **overrides)

    model = fresh_model(tiny_models_dir)
    whole = LoraTrainer(model, examples, config, tmp_path / "whole").run(on_step=lambda r: None, should_stop=never)
    whole_weights = lora_tensors(model)

    first: list[StepReport] = []
    interrupted_model = fresh_model(tiny_models_dir)
    interrupted = LoraTrainer(interrupted_model, examples, config, tmp_path / "resumed")
    assert interrupted.resume_step() == 0
    stopped = interrupted.run(on_step=first.append, should_stop=lambda: len(first) >= 3)
    assert stopped.stopped and stopped.step == 3 and len(first) == 3
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["step-000002", "step-000003"]

    second: list[StepReport] = []
    resumed_model = fresh_model(tiny_models_dir)
    resumed = LoraTrainer(resumed_model, examples, config, tmp_path / "resumed")
    assert resumed.resume_step() == 3
    outcome = resumed.run(on_step=second.append, should_stop=never)

    assert not outcome.stopped and outcome.step == 6
    assert [report.step for report in second] == [4, 5, 6]
    assert outcome.loss_history == whole.loss_history  # bit-exact, step by step
    assert outcome.loss_history[:3] == stopped.loss_history
    resumed_weights = lora_tensors(resumed_model)
    assert resumed_weights.keys() == whole_weights.keys()
    for key, value in whole_weights.items():
        assert torch.equal(resumed_weights[key], value), key
    # elapsed time carries over from the first session
    assert second[0].elapsed_seconds > stopped.elapsed_seconds >= first[-1].elapsed_seconds
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["step-000004", "step-000006"]


def test_should_stop_is_honoured_within_one_step(tiny_models_dir, tmp_path, examples):
    model = fresh_model(tiny_models_dir)
    reports: list[StepReport] = []
    trainer = LoraTrainer(model, examples, small_config(steps=8), tmp_path)
    outcome = trainer.run(on_step=reports.append, should_stop=lambda: True)
    assert outcome.stopped and outcome.step == 0 and not reports and np.isnan(outcome.final_loss)
    assert not list(tmp_path.iterdir())  # nothing done, nothing saved

    stop_after = {"step": 2}
    saved: list[int] = []
    outcome = trainer.run(on_step=reports.append, should_stop=lambda: bool(reports) and
                          reports[-1].step >= stop_after["step"], on_checkpoint=saved.append)
    assert outcome.stopped and outcome.step == 2 and [r.step for r in reports] == [1, 2]
    assert saved == [2] and (tmp_path / "step-000002").is_dir()

    # the same trainer carries on from memory
    outcome = trainer.run(on_step=reports.append, should_stop=never, on_checkpoint=saved.append)
    assert not outcome.stopped and outcome.step == 8 and [r.step for r in reports] == list(range(1, 9))
    assert saved == [2, 8]


def test_checkpoints_are_pruned_to_the_last_two(tiny_models_dir, tmp_path, examples):
    saved: list[int] = []
    model = fresh_model(tiny_models_dir)
    trainer = LoraTrainer(model, examples, small_config(steps=7, checkpoint_interval=2), tmp_path)
    outcome = trainer.run(on_step=lambda r: None, should_stop=never, on_checkpoint=saved.append)
    assert saved == [2, 4, 6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000006", "step-000007"]
    assert sorted(p.name for p in (tmp_path / "step-000007").iterdir()) == ["lora.safetensors", "optimizer.pt",
                                                                              "state.json"]
    # a finished run resumes to "already done"
    again = LoraTrainer(fresh_model(tiny_models_dir), examples, small_config(steps=7, checkpoint_interval=2), tmp_path)
    assert again.resume_step() == 7
    calls: list[StepReport] = []
    repeat = again.run(on_step=calls.append, should_stop=never, on_checkpoint=saved.append)
    assert not calls and not repeat.stopped and repeat.step == 7 and saved == [2, 4, 6, 7]
    assert repeat.loss_history == outcome.loss_history


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tiny_models_dir, tmp_path, examples):
    config = small_config(steps=6, checkpoint_interval=2)
    whole = LoraTrainer(fresh_model(tiny_models_dir), examples, config, tmp_path / "whole").run(
        on_step=lambda r: None, should_stop=never)
    reports: list[StepReport] = []
    LoraTrainer(fresh_model(tiny_models_dir), examples, config, tmp_path / "run").run(
        on_step=reports.append, should_stop=lambda: len(reports) >= 5)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step-000004", "step-000005"]
    (tmp_path / "run" / "step-000005" / "lora.safetensors").write_bytes(b"garbage")

    resumed_model = fresh_model(tiny_models_dir)
    resumed = LoraTrainer(resumed_model, examples, config, tmp_path / "run")
    steps: list[int] = []
    outcome = resumed.run(on_step=lambda r: steps.append(r.step), should_stop=never)
    assert steps == [5, 6] and outcome.loss_history == whole.loss_history
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step-000005", "step-000006"]

    for folder in (tmp_path / "run").iterdir():
        (folder / "optimizer.pt").write_bytes(b"garbage")
    broken = LoraTrainer(fresh_model(tiny_models_dir), examples, config, tmp_path / "run")
    with pytest.raises(TrainingError) as raised:
        broken.run(on_step=lambda r: None, should_stop=never)
    assert raised.value.reason == "CHECKPOINT_UNREADABLE"


def test_a_checkpoint_of_other_settings_or_data_is_refused(tiny_models_dir, tmp_path, examples):
    model = fresh_model(tiny_models_dir)
    LoraTrainer(model, examples, small_config(steps=2), tmp_path).run(on_step=lambda r: None, should_stop=never)
    other_rank = LoraTrainer(fresh_model(tiny_models_dir), examples, small_config(steps=2, rank=8), tmp_path)
    with pytest.raises(TrainingError) as raised:
        other_rank.run(on_step=lambda r: None, should_stop=never)
    assert raised.value.reason == "CHECKPOINT_MISMATCH"
    other_data = LoraTrainer(fresh_model(tiny_models_dir), examples[:3], small_config(steps=2), tmp_path)
    with pytest.raises(TrainingError) as raised:
        other_data.run(on_step=lambda r: None, should_stop=never)
    assert raised.value.reason == "CHECKPOINT_MISMATCH"


def test_bad_input_is_refused(tiny_models_dir, tmp_path, examples):
    model = fresh_model(tiny_models_dir)
    with pytest.raises(TrainingError) as raised:
        LoraTrainer(model, examples, small_config(rank=0, resolution=60, lr_scheduler="bogus"), tmp_path)
    assert raised.value.reason == "INVALID_CONFIG"
    assert "rank" in raised.value.message and "resolution" in raised.value.message
    with pytest.raises(TrainingError) as raised:
        LoraTrainer(model, [], small_config(), tmp_path)
    assert raised.value.reason == "NO_EXAMPLES"
    LoraTrainer(model, examples, small_config(), tmp_path)
    with pytest.raises(TrainingError) as raised:
        LoraTrainer(model, examples, small_config(), tmp_path)
    assert raised.value.reason == "MODEL_HAS_ADAPTERS"

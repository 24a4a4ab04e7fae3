"""The LoRA training loop: diffusers + peft on a Stable Diffusion pipeline, resumable bit for bit.

``LoraTrainer`` adds LoRA adapters to the UNet (and, if asked, to the CLIP text encoder) of a loaded model, freezes
everything else and trains the adapters with the noise-prediction objective of Stable Diffusion. The model is the
trainer's own from then on (its UNet carries the adapters): load one per training run, or call ``release()``.

Reproducibility: all randomness of a step (which examples, crops, the VAE latent sample, noise, timesteps) comes from
generators seeded by ``(config.seed, step)``, and a checkpoint holds everything else that changes (LoRA weights,
optimizer and learning-rate scheduler state), so a run stopped and resumed from a checkpoint computes the same steps as
an uninterrupted one (bit-exact on the CPU).

Checkpoints are folders ``step-000050`` in the checkpoint directory, written under a temporary name and renamed into
place (a crash leaves either a whole checkpoint or none); the last ``KEEP_CHECKPOINTS`` are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagineer_trainer.dataset import TrainingExample, prepare_image

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from imagineer_models.loading import LoadedModel

log = logging.getLogger("imagineer.trainer.training")

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
UNET_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER_NAME = "default"  # the name diffusers' own training scripts use
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
KEEP_CHECKPOINTS = 2
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_FORMAT = 1
MAX_GRAD_NORM = 1.0
ADAM_WEIGHT_DECAY = 1e-2
RUNNING_LOSS_WINDOW = 20
VALIDATION_GUIDANCE = 7.5

_LORA_FILE = "lora.safetensors"
_OPTIMIZER_FILE = "optimizer.pt"
_STATE_FILE = "state.json"
# Config fields that may differ between a run and its resumption (everything else changes what the steps compute).
_RESUME_FREE_FIELDS = ("checkpoint_interval",)


class TrainingError(Exception):
    """Training cannot start or go on. ``reason`` is a stable UPPER_SNAKE code for clients (ErrorInfo.reason).

    Codes: ``INVALID_CONFIG`` and ``NO_EXAMPLES`` (bad input), ``MODEL_HAS_ADAPTERS`` (the model is already in use),
    ``CHECKPOINT_MISMATCH`` (the checkpoint directory belongs to a run with other settings or data),
    ``CHECKPOINT_UNREADABLE``, ``NON_FINITE_LOSS`` (training diverged).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


@dataclass
class TrainingConfig:
    rank: int = 8
    alpha: float = 8.0
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    steps: int = 200
    batch_size: int = 4
    resolution: int = 64
    random_crop: bool = False
    seed: int = 0
    train_text_encoder: bool = False
    checkpoint_interval: int = 50

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every invalid field; empty when the configuration is valid."""
        found: list[tuple[str, str]] = []

        def check(ok: bool, name: str, problem: str) -> None:
            if not ok:
                found.append((name, problem))

        check(1 <= self.rank <= 1024, "rank", "must be between 1 and 1024")
        check(math.isfinite(self.alpha) and self.alpha > 0, "alpha", "must be a positive number")
        check(
            math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1, "learning_rate", "must be in (0, 1]"
        )
        check(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"must be one of {', '.join(LR_SCHEDULERS)}")
        check(0 <= self.warmup_steps <= self.steps, "warmup_steps", "must be between 0 and steps")
        check(self.steps >= 1, "steps", "must be at least 1")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        check(self.resolution >= 8 and self.resolution % 8 == 0, "resolution", "must be a positive multiple of 8")
        check(self.seed >= 0, "seed", "must not be negative")
        check(self.checkpoint_interval >= 1, "checkpoint_interval", "must be at least 1")
        return found


@dataclass
class StepReport:
    step: int  # 1-based number of the step just done
    total_steps: int
    loss: float
    learning_rate: float  # the rate this step used
    elapsed_seconds: float  # training time of the whole run, across resumptions
    remaining_seconds: float  # estimate, from this session's pace
    average_loss: float = 0.0  # mean loss of the last RUNNING_LOSS_WINDOW steps


@dataclass
class TrainingOutcome:
    step: int  # steps done so far (config.steps when finished)
    stopped: bool  # True when should_stop ended the run early
    final_loss: float  # loss of the last step done (nan if none)
    loss_history: list[float] = field(default_factory=list)  # loss of each step 1..step, across resumptions
    elapsed_seconds: float = 0.0


@dataclass
class _Checkpoint:
    path: Path
    step: int


def _step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s generators: distinct for every (seed, step) pair of realistic size."""
    return (seed * 1_000_003 + step) % (2**63)


def list_checkpoints(checkpoint_dir: Path) -> list[_Checkpoint]:
    """The complete checkpoints in ``checkpoint_dir``, oldest first (temporary folders are ignored)."""
    found: list[_Checkpoint] = []
    if not checkpoint_dir.is_dir():
        return found
    for entry in checkpoint_dir.iterdir():
        name = entry.name
        if entry.is_dir() and name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit():
            if (entry / _STATE_FILE).is_file():
                found.append(_Checkpoint(entry, int(name[len(CHECKPOINT_PREFIX) :])))
    return sorted(found, key=lambda checkpoint: checkpoint.step)


class LoraTrainer:
    def __init__(
        self, model: LoadedModel, examples: list[TrainingExample], config: TrainingConfig, checkpoint_dir: Path
    ) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        problems = config.problems()
        if problems:
            raise TrainingError(
                "INVALID_CONFIG", "invalid training settings: " + "; ".join(f"{name} {why}" for name, why in problems)
            )
        if not examples:
            raise TrainingError("NO_EXAMPLES", "there is nothing to train on (no examples)")
        self.model = model
        self.examples = list(examples)
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir)
        pipeline = model.pipeline
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.tokenizer = pipeline.tokenizer
        for module in (self.unet, self.text_encoder):
            if getattr(module, "peft_config", None):
                raise TrainingError(
                    "MODEL_HAS_ADAPTERS", f"{model.name} already carries LoRA adapters; train on a freshly loaded model"
                )
        self.device = torch.device(model.device)
        self._cuda = self.device.type == "cuda"
        self._autocast_dtype = model.dtype if self._cuda and model.dtype in (torch.float16, torch.bfloat16) else None

        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
        self.vae.eval()
        self.text_encoder.eval()
        with torch.random.fork_rng(devices=[]):  # LoRA A matrices start from a seeded draw; B starts at zero
            torch.manual_seed(config.seed)
            self.unet.add_adapter(
                LoraConfig(
                    r=config.rank,
                    lora_alpha=config.alpha,
                    init_lora_weights="gaussian",
                    target_modules=list(UNET_TARGET_MODULES),
                ),
                adapter_name=ADAPTER_NAME,
            )
            if config.train_text_encoder:
                self.text_encoder.add_adapter(
                    LoraConfig(
                        r=config.rank,
                        lora_alpha=config.alpha,
                        init_lora_weights="gaussian",
                        target_modules=list(TEXT_ENCODER_TARGET_MODULES),
                    ),
                    adapter_name=ADAPTER_NAME,
                )
        self._trained = [self.unet] + ([self.text_encoder] if config.train_text_encoder else [])
        cast_training_params(self._trained, dtype=torch.float32)  # train adapters in float32 even on fp16 models
        self.parameters = [p for module in self._trained for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.learning_rate, weight_decay=ADAM_WEIGHT_DECAY, foreach=False
        )
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            self.optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.steps,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self._autocast_dtype == torch.float16 else None
        self.noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type

        self.step = 0
        self.loss_history: list[float] = []
        self._elapsed_before = 0.0  # training time before this run() call (earlier sessions and calls)
        self._restored = False
        self._saved_step = -1
        self._moments: dict[int, torch.Tensor] = {}  # example index -> VAE latent distribution parameters
        self._embeddings: dict[int, torch.Tensor] = {}  # example index -> text embeddings (frozen text encoder)
        self._fingerprint = self._dataset_fingerprint()

    # ----------------------------------------------------------------------------------------------- public API

    def resume_step(self) -> int:
        """The step training would continue after: that of the latest checkpoint whose state can be read (0 when there
        is none). Once ``run`` has started, the step reached."""
        if self._restored:
            return self.step
        for checkpoint in reversed(list_checkpoints(self.checkpoint_dir)):
            try:
                state = json.loads((checkpoint.path / _STATE_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(state, dict) and state.get("step") == checkpoint.step:
                return checkpoint.step
        return 0

    def run(
        self,
        *,
        on_step: Callable[[StepReport], None],
        should_stop: Callable[[], bool],
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> TrainingOutcome:
        """Trains from the latest checkpoint (or from scratch) up to ``config.steps``.

        ``on_step`` gets a StepReport after every step. ``should_stop`` is asked before the first step and after every
        step; when it answers True a checkpoint is saved and the outcome says ``stopped``. A checkpoint is saved every
        ``checkpoint_interval`` steps and at the end; ``on_checkpoint(step)`` follows each save.
        """
        session_start = time.monotonic()
        if not self._restored:
            self._restore()
        total = self.config.steps
        session_steps = 0

        def elapsed() -> float:
            return self._elapsed_before + (time.monotonic() - session_start)

        def checkpoint() -> None:
            if self._saved_step != self.step:
                self._save_checkpoint(elapsed())
                if on_checkpoint is not None:
                    on_checkpoint(self.step)

        try:
            if self.step < total and should_stop():
                return self._outcome(stopped=True, elapsed=elapsed())
            while self.step < total:
                loss, learning_rate = self._train_step(self.step + 1)
                self.step += 1
                session_steps += 1
                self.loss_history.append(loss)
                done = elapsed()
                pace = (time.monotonic() - session_start) / session_steps
                window = self.loss_history[-RUNNING_LOSS_WINDOW:]
                on_step(
                    StepReport(
                        step=self.step,
                        total_steps=total,
                        loss=loss,
                        learning_rate=learning_rate,
                        elapsed_seconds=done,
                        remaining_seconds=pace * (total - self.step),
                        average_loss=sum(window) / len(window),
                    )
                )
                if self.step == total:
                    break
                if self.step % self.config.checkpoint_interval == 0:
                    checkpoint()
                if should_stop():
                    checkpoint()
                    return self._outcome(stopped=True, elapsed=elapsed())
            checkpoint()
            return self._outcome(stopped=False, elapsed=elapsed())
        finally:
            self._elapsed_before = elapsed()

    def save_lora(self, target_dir: Path) -> Path:
        """Writes ``pytorch_lora_weights.safetensors`` into ``target_dir`` in the layout that
        ``StableDiffusionPipeline.load_lora_weights`` reads (with rank and alpha in its metadata); returns its path.
        The file appears whole or not at all."""
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import get_peft_model_state_dict

        target_dir = Path(target_dir)
        target_dir.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {
            "unet_lora_layers": convert_state_dict_to_diffusers(
                get_peft_model_state_dict(self.unet, adapter_name=ADAPTER_NAME)
            ),
            "unet_lora_adapter_metadata": _stable_metadata(self.unet.peft_config[ADAPTER_NAME].to_dict(),
                                                           self.model.name),
        }
        if self.config.train_text_encoder:
            options["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(
                get_peft_model_state_dict(self.text_encoder, adapter_name=ADAPTER_NAME)
            )
            options["text_encoder_lora_adapter_metadata"] = _stable_metadata(
                self.text_encoder.peft_config[ADAPTER_NAME].to_dict(), self.model.name)
        scratch = Path(tempfile.mkdtemp(prefix=".lora-", dir=target_dir))
        try:
            StableDiffusionPipeline.save_lora_weights(
                scratch, weight_name=LORA_WEIGHTS_FILE, safe_serialization=True, **options
            )
            os.chmod(scratch / LORA_WEIGHTS_FILE, 0o644)
            os.replace(scratch / LORA_WEIGHTS_FILE, target_dir / LORA_WEIGHTS_FILE)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target_dir / LORA_WEIGHTS_FILE

    def render_validation(
        self, prompts: list[str], seed: int, steps: int = 10, *, guidance_scale: float = VALIDATION_GUIDANCE
    ) -> list[Image.Image]:
        """Renders each prompt (alone, image i with seed ``seed + i``) at the training resolution with the LoRA as
        trained so far, through the model's own pipeline and scheduler."""
        import torch

        pipeline = self.model.pipeline
        modes = [(module, module.training) for module in (self.unet, self.text_encoder)]
        images: list[Image.Image] = []
        try:
            self.unet.eval()
            self.text_encoder.eval()
            for index, prompt in enumerate(prompts):
                generator = torch.Generator(device="cpu").manual_seed(seed + index)
                result = pipeline(
                    prompt=prompt,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    generator=generator,
                    height=self.config.resolution,
                    width=self.config.resolution,
                    output_type="pil",
                )
                images.append(result.images[0])
        finally:
            for module, training in modes:
                module.train(training)
        return images

    def release(self) -> None:
        """Removes the adapters again, leaving the model as it was loaded (frozen, in eval mode)."""
        for module in self._trained:
            if getattr(module, "peft_config", None):
                if module is self.unet:
                    module.delete_adapters(ADAPTER_NAME)
                else:
                    module.delete_adapter(ADAPTER_NAME)
            module.requires_grad_(False)
            module.eval()
        self.optimizer.state.clear()

    # ----------------------------------------------------------------------------------------------- one step

    def _batch_indices(self, step: int) -> list[int]:
        """The examples of ``step`` (1-based): consecutive slices of per-epoch permutations seeded by (seed, epoch)."""
        count = len(self.examples)
        first = (step - 1) * self.config.batch_size
        indices: list[int] = []
        permutation: list[int] = []
        epoch = -1
        for position in range(first, first + self.config.batch_size):
            if position // count != epoch:
                epoch = position // count
                permutation = list(range(count))
                random.Random(_step_seed(self.config.seed, epoch) ^ 0x5EED).shuffle(permutation)
            indices.append(permutation[position % count])
        return indices

    def _encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            pixels = pixels.to(self.device, dtype=self.vae.dtype)
            return self.vae.encode(pixels).latent_dist.parameters.float()

    def _latent_moments(self, indices: list[int], step: int) -> torch.Tensor:
        """The VAE's latent distribution parameters of the batch. Centre crops are encoded once per example (alone, so
        the values never depend on the batch); random crops differ per step and are encoded per step."""
        import torch

        if self.config.random_crop:
            rng = random.Random(_step_seed(self.config.seed, step))
            pixels = [
                prepare_image(self.examples[index].image, self.config.resolution, random_crop=True, rng=rng)
                for index in indices
            ]
            return self._encode_images(torch.stack(pixels))
        for index in indices:
            if index not in self._moments:
                pixels = prepare_image(
                    self.examples[index].image, self.config.resolution, random_crop=False, rng=random.Random(0)
                )
                self._moments[index] = self._encode_images(pixels[None])
        return torch.cat([self._moments[index] for index in indices])

    def _tokens(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)

    def _text_embeddings(self, indices: list[int]) -> torch.Tensor:
        import torch

        if self.config.train_text_encoder:
            self.text_encoder.train()
            captions = [self.examples[index].caption for index in indices]
            return self.text_encoder(self._tokens(captions), return_dict=False)[0]
        for index in indices:
            if index not in self._embeddings:
                with torch.no_grad():
                    self._embeddings[index] = self.text_encoder(
                        self._tokens([self.examples[index].caption]), return_dict=False
                    )[0]
        return torch.cat([self._embeddings[index] for index in indices])

    def _train_step(self, step: int) -> tuple[float, float]:
        """Runs step ``step`` (1-based); returns its loss and learning rate."""
        import torch
        import torch.nn.functional as F
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.utils.torch_utils import randn_tensor

        generator = torch.Generator(device="cpu").manual_seed(_step_seed(self.config.seed, step))
        indices = self._batch_indices(step)
        moments = self._latent_moments(indices, step)
        latents = DiagonalGaussianDistribution(moments).sample(generator=generator)
        vae_config = self.vae.config
        shift = getattr(vae_config, "shift_factor", None) or 0.0
        latents = (latents - shift) * vae_config.scaling_factor
        unet_dtype = self.unet.dtype
        latents = latents.to(self.device, dtype=unet_dtype)
        noise = randn_tensor(latents.shape, generator=generator, device=self.device, dtype=unet_dtype)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator
        ).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        elif self.prediction_type == "epsilon":
            target = noise
        else:
            raise TrainingError("INVALID_CONFIG", f"cannot train a model predicting {self.prediction_type!r}")

        self.unet.train()
        autocast = (
            torch.autocast("cuda", dtype=self._autocast_dtype) if self._autocast_dtype is not None else nullcontext()
        )
        with autocast:
            embeddings = self._text_embeddings(indices)
            prediction = self.unet(noisy, timesteps, embeddings, return_dict=False)[0]
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError("NON_FINITE_LOSS", f"the loss became {value} at step {step}; try a lower learning rate")
        learning_rate = float(self.lr_scheduler.get_last_lr()[0])
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRAD_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRAD_NORM)
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, learning_rate

    # ----------------------------------------------------------------------------------------------- checkpoints

    def _dataset_fingerprint(self) -> str:
        digest = hashlib.sha256()
        for example in self.examples:
            for part in (example.image_id, example.caption, f"{example.image.size}"):
                digest.update(part.encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(example.image.tobytes()).digest())
        return digest.hexdigest()

    def _resume_settings(self) -> dict[str, Any]:
        settings = asdict(self.config)
        for name in _RESUME_FREE_FIELDS:
            settings.pop(name)
        return settings

    def _lora_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state: dict[str, torch.Tensor] = {}
        for prefix, module in (("unet.", self.unet), ("text_encoder.", self.text_encoder)):
            if module in self._trained:
                for key, tensor in get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME).items():
                    state[prefix + key] = tensor.detach().to("cpu").contiguous()
        return state

    def _save_checkpoint(self, elapsed: float) -> Path:
        import torch
        from safetensors.torch import save_file

        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        name = f"{CHECKPOINT_PREFIX}{self.step:06d}"
        final = self.checkpoint_dir / name
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.writing-", dir=self.checkpoint_dir))
        try:
            save_file(self._lora_state(), str(scratch / _LORA_FILE))
            training_state = {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict()}
            if self.scaler is not None:
                training_state["scaler"] = self.scaler.state_dict()
            torch.save(training_state, scratch / _OPTIMIZER_FILE)
            window = self.loss_history[-RUNNING_LOSS_WINDOW:]
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "elapsed_seconds": elapsed,
                "running_loss": sum(window) / len(window) if window else None,
                "loss_history": self.loss_history,
                "settings": self._resume_settings(),
                "dataset": self._fingerprint,
            }
            (scratch / _STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
            for path in scratch.iterdir():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            os.chmod(scratch, 0o755)
            if final.exists():  # a leftover from an earlier run that was not resumed from (replaced, not mixed)
                shutil.rmtree(final)
            os.rename(scratch, final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self._saved_step = self.step
        self._prune()
        return final

    def _prune(self) -> None:
        for checkpoint in list_checkpoints(self.checkpoint_dir)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
        for entry in self.checkpoint_dir.iterdir():  # temporary folders of a crashed writer
            if entry.is_dir() and entry.name.startswith(f".{CHECKPOINT_PREFIX}") and ".writing-" in entry.name:
                shutil.rmtree(entry, ignore_errors=True)

    def _restore(self) -> None:
        """Loads the latest readable checkpoint, if any, into the adapters, optimizer and scheduler.

        A checkpoint that cannot be read (a damaged disk, say) is skipped for the one before it (two are kept); one of
        other settings or other data is refused (CHECKPOINT_MISMATCH), as resuming it would train something else.
        """
        self._restored = True
        problems: list[str] = []
        for checkpoint in reversed(list_checkpoints(self.checkpoint_dir)):
            try:
                self._load_checkpoint(checkpoint)
                return
            except TrainingError as error:
                if error.reason != "CHECKPOINT_UNREADABLE":
                    raise
                log.warning("%s; trying an earlier checkpoint", error.message)
                problems.append(error.message)
        if problems:
            raise TrainingError("CHECKPOINT_UNREADABLE", "no checkpoint can be resumed: " + "; ".join(problems))

    def _load_checkpoint(self, checkpoint: _Checkpoint) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        name = checkpoint.path.name
        try:
            state = json.loads((checkpoint.path / _STATE_FILE).read_text(encoding="utf-8"))
            lora = load_file(str(checkpoint.path / _LORA_FILE))
            training_state = torch.load(checkpoint.path / _OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
            raise TrainingError("CHECKPOINT_UNREADABLE", f"checkpoint {name} cannot be read: {problem}") from error
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError("CHECKPOINT_UNREADABLE", f"checkpoint {name} has an unknown format")
        if state.get("settings") != self._resume_settings():
            raise TrainingError(
                "CHECKPOINT_MISMATCH",
                f"checkpoint {name} was made with other training settings ({state.get('settings')}); "
                "resume with the same settings or start over in an empty checkpoint directory",
            )
        if state.get("dataset") != self._fingerprint:
            raise TrainingError(
                "CHECKPOINT_MISMATCH",
                f"checkpoint {name} was made from other images or captions; "
                "resume with the same dataset or start over in an empty checkpoint directory",
            )
        try:
            for prefix, module in (("unet.", self.unet), ("text_encoder.", self.text_encoder)):
                if module not in self._trained:
                    continue
                weights = {key[len(prefix) :]: tensor for key, tensor in lora.items() if key.startswith(prefix)}
                if set(weights) != get_adapter_keys(module):
                    raise ValueError("it does not hold this model's LoRA layers")
                result = set_peft_model_state_dict(module, weights, adapter_name=ADAPTER_NAME)
                if getattr(result, "unexpected_keys", None):
                    raise ValueError("its LoRA layers do not fit this model")
            self.optimizer.load_state_dict(training_state["optimizer"])
            self.lr_scheduler.load_state_dict(training_state["lr_scheduler"])
            if self.scaler is not None and "scaler" in training_state:
                self.scaler.load_state_dict(training_state["scaler"])
            step = int(state["step"])
            loss_history = [float(value) for value in state.get("loss_history", [])]
            elapsed = float(state.get("elapsed_seconds", 0.0))
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
            raise TrainingError("CHECKPOINT_UNREADABLE", f"checkpoint {name} cannot be loaded: {problem}") from error
        self.step = step
        self.loss_history = loss_history
        self._elapsed_before = elapsed
        self._saved_step = step

    def _outcome(self, *, stopped: bool, elapsed: float) -> TrainingOutcome:
        return TrainingOutcome(
            step=self.step,
            stopped=stopped,
            final_loss=self.loss_history[-1] if self.loss_history else math.nan,
            loss_history=list(self.loss_history),
            elapsed_seconds=elapsed,
        )


def get_adapter_keys(module: Any) -> set[str]:
    from peft import get_peft_model_state_dict

    return set(get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME))


def _stable_metadata(config: dict[str, Any], base_model: str) -> dict[str, Any]:
    """The adapter config as the file keeps it: sets (peft's target_modules) as sorted lists, because a set's order
    changes with each process's hash seed and identical trainings should write byte-identical files; and the base
    model by its name, not the folder it was loaded from on this machine."""
    stable = {key: sorted(value) if isinstance(value, (set, frozenset)) else value for key, value in config.items()}
    if stable.get("base_model_name_or_path"):
        stable["base_model_name_or_path"] = base_model
    return stable

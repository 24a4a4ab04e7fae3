"""A training request, validated and with defaults applied (no gRPC, no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from imagineer_common.errors import ViolationCollector

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
CAPTION_SOURCES = ("default", "labels", "prompt")
MAX_ALBUMS = 16
MAX_VALIDATION_PROMPTS = 8


@dataclass
class TrainingRequest:
    album_ids: list[str] = field(default_factory=list)
    name: str = ""
    base_model: str = ""
    rank: int = 0
    alpha: float = 0.0
    learning_rate: float = 0.0
    lr_scheduler: str = ""
    warmup_steps: int = 0
    steps: int = 0
    batch_size: int = 0
    resolution: int = 0
    random_crop: bool = False
    seed: int | None = None
    caption_source: str = "default"
    trigger_word: str = ""
    checkpoint_interval: int = 0
    validation_prompts: list[str] = field(default_factory=list)
    train_text_encoder: bool = False
    request_id: str = ""

    def to_config(self) -> dict[str, Any]:
        """What the catalog's training-run record keeps, enough to resume after a restart."""
        data = asdict(self)
        data.pop("request_id")
        if data["seed"] is not None:
            data["seed"] = str(data["seed"])  # the catalog keeps numbers as doubles: 64-bit seeds go as text
        return data

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> TrainingRequest:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        request = cls(**known)
        for name in ("rank", "steps", "batch_size", "resolution", "warmup_steps", "checkpoint_interval"):
            setattr(request, name, int(getattr(request, name)))  # JSON numbers come back as floats
        if request.seed is not None:
            request.seed = int(request.seed)
        return request


def _is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and not value.startswith("0") and len(value) <= 18


def complete(request: TrainingRequest, *, model_name: str, default_size: int, random_seed) -> TrainingRequest:
    """Checks every field (all problems at once) and fills in the defaults."""
    errors = ViolationCollector()
    errors.check(0 < len(request.album_ids) <= MAX_ALBUMS, "album_ids", f"must list 1 to {MAX_ALBUMS} albums")
    for index, album_id in enumerate(request.album_ids):
        errors.check(_is_id(album_id), f"album_ids[{index}]", f"{album_id!r} is not a valid id")
    errors.check(len(set(request.album_ids)) == len(request.album_ids), "album_ids", "must not repeat an album")
    errors.check(len(request.name) <= 255, "name", "must be at most 255 characters")
    errors.check(request.base_model in ("", model_name), "base_model",
                 f"this trainer serves {model_name!r}; leave empty or name it")
    errors.check(request.rank == 0 or 1 <= request.rank <= 128, "rank", "must be between 1 and 128")
    errors.check(request.alpha == 0 or 0 < request.alpha <= 1024, "alpha", "must be between 0 and 1024")
    rate = request.learning_rate
    errors.check(rate == 0 or (math.isfinite(rate) and 0 < rate <= 1), "learning_rate", "must be above 0 and at most 1")
    errors.check(request.lr_scheduler in ("", *LR_SCHEDULERS), "lr_scheduler",
                 f"must be one of {', '.join(LR_SCHEDULERS)}")
    errors.check(request.steps == 0 or 1 <= request.steps <= 100_000, "steps", "must be between 1 and 100000")
    errors.check(request.warmup_steps >= 0, "warmup_steps", "must not be negative")
    errors.check(request.batch_size == 0 or 1 <= request.batch_size <= 64, "batch_size", "must be between 1 and 64")
    errors.check(request.resolution == 0 or (request.resolution % 8 == 0 and 64 <= request.resolution <= 2048),
                 "resolution", "must be a multiple of 8 from 64 to 2048")
    errors.check(request.seed is None or 0 <= request.seed < 2**63, "seed", "must be between 0 and 2^63-1")
    errors.check(request.caption_source in CAPTION_SOURCES, "caption_source", "is not a known caption source")
    errors.check(len(request.trigger_word) <= 100, "trigger_word", "must be at most 100 characters")
    errors.check(request.checkpoint_interval >= 0, "checkpoint_interval", "must not be negative")
    errors.check(len(request.validation_prompts) <= MAX_VALIDATION_PROMPTS, "validation_prompts",
                 f"must list at most {MAX_VALIDATION_PROMPTS} prompts")
    for index, prompt in enumerate(request.validation_prompts):
        errors.check(0 < len(prompt.strip()) <= 2000, f"validation_prompts[{index}]", "must be 1 to 2000 characters")
    errors.check(len(request.request_id) <= 128, "request_id", "must be at most 128 characters")
    errors.raise_if_any()
    steps = request.steps or 200
    rank = request.rank or 8
    return TrainingRequest(
        album_ids=list(request.album_ids), name=request.name.strip() or f"LoRA from album {request.album_ids[0]}",
        base_model=model_name, rank=rank, alpha=request.alpha or float(rank), learning_rate=rate or 1e-4,
        lr_scheduler=request.lr_scheduler or "constant", warmup_steps=request.warmup_steps, steps=steps,
        batch_size=request.batch_size or 4, resolution=request.resolution or default_size,
        random_crop=request.random_crop, seed=random_seed() if request.seed is None else request.seed,
        caption_source=request.caption_source, trigger_word=request.trigger_word.strip(),
        checkpoint_interval=request.checkpoint_interval or min(50, steps),
        validation_prompts=[p.strip() for p in request.validation_prompts],
        train_text_encoder=request.train_text_encoder, request_id=request.request_id)

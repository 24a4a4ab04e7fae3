"""Generator settings, read once at start-up from IMAGINEER_GENERATOR_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagineer_common import env

PREFIX = "IMAGINEER_GENERATOR_"


@dataclass(frozen=True)
class GeneratorSettings(env.ModelServiceSettings):
    queue_capacity: int
    max_batch: int
    exact_batches: bool

    @property
    def lora_cache_dir(self) -> Path:
        return self.data_dir / "generator" / "lora-cache"

    @classmethod
    def from_env(cls) -> GeneratorSettings:
        batch_mode = env.read_str(PREFIX + "BATCH_MODE", "exact").lower()
        if batch_mode not in ("exact", "fast"):
            raise env.SettingError(f"{PREFIX}BATCH_MODE must be exact or fast, got {batch_mode!r}")
        return cls(
            **env.read_model_service_basics(PREFIX, default_port=50052),
            queue_capacity=env.read_int(PREFIX + "QUEUE_CAPACITY", 32, minimum=1, maximum=10_000),
            max_batch=env.read_int(PREFIX + "MAX_BATCH", 4, minimum=1, maximum=64),
            # exact: an image never depends on its batch-mates; fast: true batched kernels (GPU throughput).
            exact_batches=batch_mode == "exact",
        )

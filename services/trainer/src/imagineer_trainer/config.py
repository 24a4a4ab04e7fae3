"""Trainer settings, read once at start-up from IMAGINEER_TRAINER_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagineer_common import env
from imagineer_trainer.labelers.config import LabelingSettings
from imagineer_trainer.scraping.settings import ScrapeSettings

PREFIX = "IMAGINEER_TRAINER_"


@dataclass(frozen=True)
class TrainerSettings(env.ModelServiceSettings):
    queue_capacity: int
    labeling: LabelingSettings = field(default_factory=LabelingSettings)
    scraping: ScrapeSettings = field(default_factory=ScrapeSettings)

    @property
    def runs_dir(self) -> Path:
        """Checkpoints of each run, under its catalog id."""
        return self.data_dir / "trainer" / "runs"

    @property
    def labelings_dir(self) -> Path:
        """One JSON record per labeling job."""
        return self.data_dir / "trainer" / "labelings"

    @classmethod
    def from_env(cls) -> TrainerSettings:
        basics = env.read_model_service_basics(PREFIX, default_port=50053)
        return cls(
            **basics,
            queue_capacity=env.read_int(PREFIX + "QUEUE_CAPACITY", 16, minimum=1, maximum=1000),
            labeling=LabelingSettings.from_env(models_dir=basics["data_dir"] / "models"),
            scraping=ScrapeSettings.from_env(PREFIX),
        )

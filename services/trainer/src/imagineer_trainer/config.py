"""Trainer settings, read once at start-up from IMAGINEER_TRAINER_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagineer_common import env

PREFIX = "IMAGINEER_TRAINER_"
DEVELOPMENT_ADMIN_TOKEN = "imagineer-dev-token"


@dataclass(frozen=True)
class TrainerSettings:
    data_dir: Path
    model: Path | None
    model_config: Path | None
    device: str
    host: str
    port: int
    admin_tokens: tuple[str, ...]
    catalog_address: str
    catalog_token: str
    queue_capacity: int
    production: bool
    log_level: str
    log_json: bool | None

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        """Checkpoints of each run, under its catalog id."""
        return self.data_dir / "trainer" / "runs"

    @classmethod
    def from_env(cls) -> TrainerSettings:
        data_dir = Path(env.read_str(PREFIX + "DATA_DIR", "instance")).resolve()
        production = env.read_str(PREFIX + "MODE", "development").lower() == "production"
        tokens = tuple(env.read_list(PREFIX + "ADMIN_TOKENS"))
        catalog_token = env.read_str(PREFIX + "CATALOG_TOKEN", "")
        if production and (not tokens or not catalog_token):
            raise env.SettingError(f"{PREFIX}ADMIN_TOKENS and {PREFIX}CATALOG_TOKEN must be set in production mode")
        model = env.read_str(PREFIX + "MODEL", "")
        model_config = env.read_str(PREFIX + "MODEL_CONFIG", "")
        device = env.read_str(PREFIX + "DEVICE", "auto").lower()
        if device not in ("auto", "cpu", "cuda"):
            raise env.SettingError(f"{PREFIX}DEVICE must be auto, cpu or cuda, got {device!r}")
        log_format = env.read_str(PREFIX + "LOG_FORMAT", "auto").lower()
        if log_format not in ("auto", "json", "text"):
            raise env.SettingError(f"{PREFIX}LOG_FORMAT must be auto, json or text")
        return cls(
            data_dir=data_dir,
            model=Path(model).expanduser().resolve() if model else None,
            model_config=Path(model_config).expanduser().resolve() if model_config else None,
            device=device,
            host=env.read_str(PREFIX + "HOST", "127.0.0.1"),
            port=env.read_int(PREFIX + "PORT", 50053, minimum=0, maximum=65535),
            admin_tokens=tokens or (DEVELOPMENT_ADMIN_TOKEN,),
            catalog_address=env.read_str(PREFIX + "CATALOG_ADDRESS", "127.0.0.1:50051"),
            catalog_token=catalog_token or DEVELOPMENT_ADMIN_TOKEN,
            queue_capacity=env.read_int(PREFIX + "QUEUE_CAPACITY", 16, minimum=1, maximum=1000),
            production=production,
            log_level=env.read_str(PREFIX + "LOG_LEVEL", "INFO"),
            log_json=None if log_format == "auto" else log_format == "json",
        )

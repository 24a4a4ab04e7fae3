"""Labeling settings, read once at start-up from IMAGINEER_TRAINER_LABELER* variables, and the labelers they make.

A labeler is available when its settings are present (a model folder for ``local``, an API key for
``anthropic``); ``IMAGINEER_TRAINER_LABELER`` names the default, and must then be available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from imagineer_common import env
from imagineer_trainer.labelers.anthropic import AnthropicLabeler, AnthropicSettings
from imagineer_trainer.labelers.base import Labeler
from imagineer_trainer.labelers.local import LocalCaptioner, LocalSettings, check_model_dir
from imagineer_trainer.labelers.retry import RetryPolicy

PREFIX = "IMAGINEER_TRAINER_LABELER"
KNOWN_LABELERS = ("local", "anthropic")
DEMO_MODEL = "demo"
DEMO_CAPTIONER_FOLDER = "imagineer-tiny-blip"


@dataclass(frozen=True)
class LabelingSettings:
    default: str = ""  # "" = none configured
    local: LocalSettings | None = None
    anthropic: AnthropicSettings | None = field(default=None, repr=False)
    queue_capacity: int = 16

    def available(self) -> tuple[str, ...]:
        return tuple(name for name, settings in (("local", self.local), ("anthropic", self.anthropic)) if settings)

    def build(self, name: str) -> Labeler:
        if name == "local" and self.local is not None:
            return LocalCaptioner(self.local)
        if name == "anthropic" and self.anthropic is not None:
            return AnthropicLabeler(self.anthropic)
        raise KeyError(name)

    @classmethod
    def from_env(cls, models_dir: Path | None = None) -> LabelingSettings:
        """``IMAGINEER_TRAINER_LABELER_LOCAL_MODEL=demo`` names the demo captioner, built offline under
        ``models_dir`` on first use (word-salad captions from random weights: it shows the plumbing)."""
        local = anthropic = None
        model = env.read_str(f"{PREFIX}_LOCAL_MODEL", "")
        build_demo = model.lower() == DEMO_MODEL
        if build_demo:
            if models_dir is None:
                raise env.SettingError(f"{PREFIX}_LOCAL_MODEL=demo needs a models folder")
            model_dir = models_dir / DEMO_CAPTIONER_FOLDER
        elif model:
            model_dir = Path(model).expanduser().resolve()
            try:
                check_model_dir(model_dir)
            except ValueError as error:
                raise env.SettingError(f"{PREFIX}_LOCAL_MODEL: {error}") from None
        if model:
            device = env.read_str(f"{PREFIX}_LOCAL_DEVICE", "auto").lower()
            if device not in ("auto", "cpu", "cuda"):
                raise env.SettingError(f"{PREFIX}_LOCAL_DEVICE must be auto, cpu or cuda, got {device!r}")
            prompt = os.environ.get(f"{PREFIX}_LOCAL_PROMPT")  # set but empty: unconditional captions
            local = LocalSettings(
                model_dir=model_dir, device=device, build_demo=build_demo,
                prompt=LocalSettings.prompt if prompt is None else prompt.strip(),
                max_new_tokens=env.read_int(f"{PREFIX}_LOCAL_MAX_TOKENS", 40, minimum=1, maximum=512),
                num_beams=env.read_int(f"{PREFIX}_LOCAL_BEAMS", 3, minimum=1, maximum=16))
        api_key = env.read_str(f"{PREFIX}_ANTHROPIC_API_KEY", "")
        if api_key:
            base_url = env.read_str(f"{PREFIX}_ANTHROPIC_BASE_URL", "https://api.anthropic.com")
            if not base_url.startswith(("http://", "https://")):
                raise env.SettingError(f"{PREFIX}_ANTHROPIC_BASE_URL must be an http(s) URL, got {base_url!r}")
            anthropic = AnthropicSettings(
                api_key=api_key, base_url=base_url,
                model=env.read_str(f"{PREFIX}_ANTHROPIC_MODEL", AnthropicSettings.model),
                max_tokens=env.read_int(f"{PREFIX}_ANTHROPIC_MAX_TOKENS", 1024, minimum=64, maximum=8192),
                timeout_seconds=env.read_float(f"{PREFIX}_ANTHROPIC_TIMEOUT_SECONDS", 60.0, minimum=1, maximum=600),
                retry=RetryPolicy(
                    max_attempts=env.read_int(f"{PREFIX}_ANTHROPIC_MAX_ATTEMPTS", 4, minimum=1, maximum=10),
                    base_seconds=env.read_float(f"{PREFIX}_ANTHROPIC_BACKOFF_SECONDS", 1.0, minimum=0.001, maximum=60)))
        settings = cls(local=local, anthropic=anthropic,
                       queue_capacity=env.read_int("IMAGINEER_TRAINER_LABELING_QUEUE_CAPACITY", 16, minimum=1,
                                                   maximum=1000))
        default = env.read_str(PREFIX, "").lower()
        if default and default not in KNOWN_LABELERS:
            raise env.SettingError(f"{PREFIX} must be one of {', '.join(KNOWN_LABELERS)}, got {default!r}")
        if default and default not in settings.available():
            needs = f"{PREFIX}_LOCAL_MODEL" if default == "local" else f"{PREFIX}_ANTHROPIC_API_KEY"
            raise env.SettingError(f"{PREFIX} is {default!r} but {needs} is not set")
        if not default and settings.available():
            default = settings.available()[0]
        return cls(default=default, local=local, anthropic=anthropic, queue_capacity=settings.queue_capacity)

"""A local image-to-text model (BLIP, ``BlipForConditionalGeneration`` + ``BlipProcessor``) loaded from a folder.

It writes a caption only: it produces no tags and no NSFW rating (the image's rating stays unset and its flag
untouched). The model is loaded on the first image, not at start-up, and stays resident. It runs on its own
(the trainer's device lock is not taken): inference of a captioner is small next to a training step, so on
one device both proceed side by side; set the labeler's device to ``cpu`` to keep a small GPU for training.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from imagineer_trainer.labelers.base import (
    ImageLabels,
    LabelerUnavailable,
    LabelingError,
    normalize_caption,
    open_image,
)

log = logging.getLogger("imagineer.trainer.labeler.local")

SUPPORTED_TYPES = ("blip",)


@dataclass(frozen=True)
class LocalSettings:
    model_dir: Path
    device: str = "auto"  # auto, cpu or cuda
    prompt: str = "a picture of"  # BLIP's conditional captioning prefix; empty for unconditional captions
    max_new_tokens: int = 40
    min_new_tokens: int = 3  # a caption of a word or two says nothing; the end token waits for these
    num_beams: int = 3
    build_demo: bool = False  # the folder is the demo captioner, built offline on first use when missing


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_dir(model_dir: Path) -> None:
    """Refuses a folder that is not a saved captioner of a supported kind (read at start-up, without torch)."""
    config_file = model_dir / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{config_file} cannot be read as a model configuration: {error}") from None
    model_type = config.get("model_type", "")
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(f"{model_dir} holds a {model_type or 'unknown'!s} model; supported: "
                         f"{', '.join(SUPPORTED_TYPES)}")


class LocalCaptioner:
    name = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self._loaded: tuple | None = None  # (model, processor, device)
        self._lock = threading.Lock()

    @property
    def source_model(self) -> str:
        return f"{self.name}:{self.settings.model_dir.name}"

    @property
    def source_prompt(self) -> str:
        return self.settings.prompt

    def _load(self) -> tuple:
        with self._lock:
            if self._loaded is None:
                try:
                    from transformers import BlipForConditionalGeneration, BlipProcessor

                    if self.settings.build_demo and not (self.settings.model_dir / "config.json").exists():
                        from imagineer_trainer.labelers.tiny_captioner import build_tiny_captioner

                        log.info("building the demo captioner in %s", self.settings.model_dir)
                        build_tiny_captioner(self.settings.model_dir)
                    device = resolve_device(self.settings.device)
                    folder = str(self.settings.model_dir)
                    processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
                    model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)
                    model.to(device).eval()
                except Exception as error:
                    raise LabelerUnavailable(f"the local labeling model in {self.settings.model_dir} could not be "
                                             f"loaded: {type(error).__name__}: {error}") from None
                log.info("loaded the labeling model from %s on %s", folder, device)
                self._loaded = (model, processor, device)
            return self._loaded

    def label(self, image: bytes) -> ImageLabels:
        picture = open_image(image)
        model, processor, device = self._load()
        import torch

        arguments = {"images": picture, "return_tensors": "pt"}
        if self.settings.prompt:
            arguments["text"] = self.settings.prompt
        inputs = processor(**arguments).to(device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens,
                                    min_new_tokens=min(self.settings.min_new_tokens, self.settings.max_new_tokens),
                                    num_beams=self.settings.num_beams)
        caption = normalize_caption(processor.decode(output[0], skip_special_tokens=True))
        if not caption:
            raise LabelingError("the local model produced an empty caption")
        return ImageLabels(caption=caption, tags=(), nsfw=None)

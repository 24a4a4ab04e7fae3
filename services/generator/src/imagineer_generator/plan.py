"""What a generation request becomes once validated: settings shared by its images, and one task per image.

Plain dataclasses, no gRPC and no torch, so validation, templates and scheduling are tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SCHEDULER = "euler"
MAX_IMAGES_PER_PROMPT = 16
MAX_IMAGES_PER_JOB = 256
MAX_LORAS = 8
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_STEPS = 150
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class LoraChoice:
    artifact_id: str
    weight: float


@dataclass(frozen=True)
class RenderSettings:
    """Everything that must match for images to be denoised together in one pipeline call."""

    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str
    loras: tuple[LoraChoice, ...] = ()


@dataclass
class ImageTask:
    index: int
    prompt: str
    negative_prompt: str
    seed: int
    image_id: str = ""


@dataclass
class TemplateSpec:
    template: str
    csv: str | None = None
    rows: list[dict[str, str]] | None = None


@dataclass
class GenerationRequest:
    """A request as a client sent it (zero values mean "use the default")."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 0
    guidance_scale: float = 0.0
    scheduler: str = ""
    width: int = 0
    height: int = 0
    base_model: str = ""
    loras: list[LoraChoice] = field(default_factory=list)
    image_count: int = 0
    album_id: str = ""
    album_name: str = ""
    template: TemplateSpec | None = None
    make_public: bool = False
    request_id: str = ""


@dataclass
class GenerationPlan:
    """A validated request with every default filled in."""

    settings: RenderSettings
    tasks: list[ImageTask]
    base_model: str
    album_id: str = ""
    album_name: str = ""
    template: str | None = None
    make_public: bool = False

    @property
    def first_seed(self) -> int:
        return self.tasks[0].seed

"""Validation of a generation request: ``GenerationRequest`` in, ``GenerationPlan`` (every default filled) out.

Every broken rule becomes a ``FieldViolation`` whose path is the field of ``StartGenerationRequest``
(``parameters.width``, ``loras[1].weight``, ``template.csv`` ...), and all of them are raised together as
one ``InvalidArgument``, so a client fixes its request in one round trip.

Choices made here (the proto comments say the same to clients):

- ``parameters.prompt`` is required unless ``template`` is set; a request with both a non-empty prompt and
  a template is refused (on ``parameters.prompt``) rather than silently dropping the prompt.
- ``guidance_scale``: 0 means ``DEFAULT_GUIDANCE``; otherwise ``MIN_GUIDANCE`` to ``MAX_GUIDANCE``. 1 turns
  classifier-free guidance off (one UNet pass per step, faster, weaker prompt adherence); values between 0
  and 1 are refused since they only make images worse.
- ``scheduler`` is matched ignoring case and surrounding spaces, and the plan holds the generator's own
  spelling of it.
- Seeds: image ``k`` of the job (counting across all prompts of a template) uses ``seed + k``, wrapped
  modulo 2**63, so every image has its own seed and the job is reproducible from its first seed.
- LoRAs keep the request's order (it is recorded with every image). Adapters are added up, so a scheduler
  that wants to batch requests naming the same set in another order can compare sorted tuples itself.
- ``album_name`` names a new album only: setting it together with ``album_id`` is refused rather than
  ignored, so nobody expects a rename.
- Numeric ids (``album_id``, ``loras[i].artifact_id``) are decimal strings of positive 64-bit integers,
  without sign, spaces or leading zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection

from imagineer_common.errors import ViolationCollector
from imagineer_generator.plan import (
    DEFAULT_GUIDANCE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    MAX_IMAGES_PER_JOB,
    MAX_IMAGES_PER_PROMPT,
    MAX_LORAS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    GenerationPlan,
    GenerationRequest,
    ImageTask,
    LoraChoice,
    RenderSettings,
)
from imagineer_generator.templates import MAX_PROMPT_CHARS, expand_template_into

MIN_GUIDANCE, MAX_GUIDANCE = 1.0, 30.0
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -4.0, 4.0
SIDE_MULTIPLE = 8
MAX_ALBUM_NAME_CHARS = 255
ALBUM_NAME_PREFIX_CHARS = 60

_SEED_MODULUS = MAX_SEED + 1  # 2**63
_POSITIVE_ID = re.compile(r"[1-9][0-9]*")


def plan_generation(request: GenerationRequest, *, model_name: str, default_size: int,
                    schedulers: Collection[str], random_seed: Callable[[], int]) -> GenerationPlan:
    """Validates ``request`` against the loaded model and returns its plan, or raises ``InvalidArgument``.

    ``model_name`` is the loaded model (what ``base_model`` must be when set), ``default_size`` its native
    side in pixels, ``schedulers`` the scheduler names it accepts, ``random_seed`` the source of the first
    seed when the request has none (called only for a valid request).
    """
    v = ViolationCollector()
    prompts = _prompts(request, v)
    _check_length(request.negative_prompt, "parameters.negative_prompt", v)
    width = _side(request.width, "parameters.width", default_size, v)
    height = _side(request.height, "parameters.height", default_size, v)
    steps = _steps(request.steps, v)
    guidance = _guidance(request.guidance_scale, v)
    scheduler = _scheduler(request.scheduler, schedulers, v)
    if request.base_model and request.base_model != model_name:
        v.add("parameters.base_model", f"this generator has {model_name!r} loaded; leave base_model empty "
                                       f"or set it to {model_name!r}")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        v.add("parameters.seed", f"must be from 0 to {MAX_SEED}; leave it unset for a random seed")
    image_count = _image_count(request.image_count, v)
    loras = _loras(request.loras, v)
    _album(request, v)
    if prompts is not None and image_count is not None and len(prompts) * image_count > MAX_IMAGES_PER_JOB:
        what = f"{len(prompts)} template rows x {image_count} images" if request.template is not None \
            else f"{image_count} images"
        v.add("image_count", f"{what} = {len(prompts) * image_count} images; a job makes at most "
                             f"{MAX_IMAGES_PER_JOB}")
    v.raise_if_any()
    assert prompts is not None and image_count is not None and loras is not None

    first_seed = (request.seed if request.seed is not None else random_seed()) % _SEED_MODULUS
    tasks: list[ImageTask] = []
    for prompt in prompts:
        for _ in range(image_count):
            index = len(tasks)
            tasks.append(ImageTask(index=index, prompt=prompt, negative_prompt=request.negative_prompt,
                                   seed=(first_seed + index) % _SEED_MODULUS))

    return GenerationPlan(
        settings=RenderSettings(width=width, height=height, steps=steps, guidance_scale=guidance,
                                scheduler=scheduler, loras=tuple(loras)),
        tasks=tasks,
        base_model=model_name,
        album_id=request.album_id,
        album_name=_album_name(request),
        template=request.template.template if request.template is not None else None,
        make_public=request.make_public,
    )


def _check_length(text: str, field_path: str, v: ViolationCollector) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        v.add(field_path, f"{len(text)} characters; at most {MAX_PROMPT_CHARS}")


def _prompts(request: GenerationRequest, v: ViolationCollector) -> list[str] | None:
    if request.template is not None:
        if request.prompt.strip():
            v.add("parameters.prompt", "must be empty when template is set: the template's rows give the prompts")
        return expand_template_into(request.template, v)
    if not request.prompt.strip():
        v.add("parameters.prompt", "required (or set template to expand a batch set)")
        return None
    if len(request.prompt) > MAX_PROMPT_CHARS:
        _check_length(request.prompt, "parameters.prompt", v)
        return None
    return [request.prompt]


def _side(value: int, field_path: str, default_size: int, v: ViolationCollector) -> int:
    if value == 0:
        return default_size
    if not (MIN_SIDE <= value <= MAX_SIDE and value % SIDE_MULTIPLE == 0):
        v.add(field_path, f"must be a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE} pixels "
                          f"(0 = the model's default, {default_size})")
    return value


def _steps(value: int, v: ViolationCollector) -> int:
    if value == 0:
        return DEFAULT_STEPS
    v.check(1 <= value <= MAX_STEPS, "parameters.steps", f"must be from 1 to {MAX_STEPS} (0 = {DEFAULT_STEPS})")
    return value


def _guidance(value: float, v: ViolationCollector) -> float:
    if value == 0:
        return DEFAULT_GUIDANCE
    v.check(math.isfinite(value) and MIN_GUIDANCE <= value <= MAX_GUIDANCE, "parameters.guidance_scale",
            f"must be from {MIN_GUIDANCE:g} to {MAX_GUIDANCE:g} (0 = {DEFAULT_GUIDANCE:g}; 1 turns guidance off)")
    return value


def _scheduler(value: str, schedulers: Collection[str], v: ViolationCollector) -> str:
    wanted = value.strip().lower()
    if not wanted:
        return DEFAULT_SCHEDULER
    for name in schedulers:
        if name.lower() == wanted:
            return name
    v.add("parameters.scheduler", f"unknown scheduler {value!r}; choose one of: {', '.join(sorted(schedulers))} "
                                  f"(empty = {DEFAULT_SCHEDULER})")
    return value


def _image_count(value: int, v: ViolationCollector) -> int | None:
    if value == 0:
        return 1
    if not 1 <= value <= MAX_IMAGES_PER_PROMPT:
        v.add("image_count", f"must be from 1 to {MAX_IMAGES_PER_PROMPT} images per prompt (0 = 1)")
        return None
    return value


def _is_positive_id(value: str) -> bool:
    return _POSITIVE_ID.fullmatch(value) is not None and int(value) <= MAX_SEED


def _loras(loras: list[LoraChoice], v: ViolationCollector) -> list[LoraChoice] | None:
    before = len(v.violations)
    if len(loras) > MAX_LORAS:
        v.add("loras", f"{len(loras)} adapters; at most {MAX_LORAS}")
    chosen: list[LoraChoice] = []
    first_index: dict[str, int] = {}
    for i, lora in enumerate(loras):
        path = f"loras[{i}]"
        if not lora.artifact_id:
            v.add(f"{path}.artifact_id", "required: the catalog id of a LORA artifact")
        elif not _is_positive_id(lora.artifact_id):
            v.add(f"{path}.artifact_id", f"{lora.artifact_id!r} is not a catalog id (a positive integer like '12')")
        elif lora.artifact_id in first_index:
            first = first_index[lora.artifact_id]
            v.add(f"{path}.artifact_id", f"artifact {lora.artifact_id} is already loras[{first}]; apply an adapter "
                                         "once and set its weight")
        else:
            first_index[lora.artifact_id] = i
        weight = lora.weight
        if weight == 0:
            weight = 1.0
        elif not (math.isfinite(weight) and MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT):
            v.add(f"{path}.weight", f"must be from {MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g} (0 = 1)")
        chosen.append(LoraChoice(artifact_id=lora.artifact_id, weight=weight))
    return None if len(v.violations) > before else chosen


def _album(request: GenerationRequest, v: ViolationCollector) -> None:
    if request.album_id and not _is_positive_id(request.album_id):
        v.add("album_id", f"{request.album_id!r} is not a catalog id (a positive integer like '12'); "
                          "leave it empty for a new album")
    if len(request.album_name) > MAX_ALBUM_NAME_CHARS:
        v.add("album_name", f"{len(request.album_name)} characters; at most {MAX_ALBUM_NAME_CHARS}")
    if request.album_id and request.album_name.strip():
        v.add("album_name", "names a new album only; leave it empty when album_id is set")


def _album_name(request: GenerationRequest) -> str:
    """The name of the new album: the request's, else one made from the template or prompt."""
    if request.album_id:
        return ""
    if request.album_name.strip():
        return request.album_name.strip()
    if request.template is not None:
        return f"Set: {request.template.template.strip()[:ALBUM_NAME_PREFIX_CHARS]}"
    return f"Batch: {request.prompt.strip()[:ALBUM_NAME_PREFIX_CHARS]}"

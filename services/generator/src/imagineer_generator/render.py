"""One pipeline call: a batch of prompts that share their RenderSettings, denoised together.

Reproducibility: every image has its own CPU ``torch.Generator`` seeded with its seed, and a fresh scheduler is
built per call, so no state leaks from one call to the next. Batching itself changes the arithmetic, though: the
CPU kernels round differently for another batch size, and an image rendered in a batch differs from the same image
rendered alone by one level (of 255) in some pixels (measured for every scheduler, see test_render.py). With
``exact=True`` (the default) the call computes each image exactly as if it were alone (text encoding, UNet and VAE
run per image inside the one call, the scheduler step is element-wise), so an image's bytes depend only on its
prompt, negative prompt, seed, settings and model, never on which other images share its batch. On a CPU this costs
next to nothing, because batching saves little there; on a GPU, ``exact=False`` gives the batched throughput.

Cancellation: ``on_step`` runs after every denoising step; whatever it raises (the engine raises
``RenderCancelled``) aborts the call before the VAE decodes anything, and no image is returned.

The caller must not run two calls on the same pipeline at once (the scheduler is assigned to the pipeline, and the
exact mode wraps the UNet for the duration of the call). LoRA adapters are set on the pipeline by the caller;
``settings.loras`` is ignored here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from imagineer_generator.plan import RenderSettings
from imagineer_models.schedulers import make_scheduler

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from imagineer_models.loading import LoadedModel

StepCallback = Callable[[int, int], None]


class RenderCancelled(Exception):
    """Raised from an ``on_step`` callback to stop a render between two steps."""


def render(
    model: LoadedModel,
    *,
    prompts: list[str],
    negative_prompts: list[str],
    seeds: list[int],
    settings: RenderSettings,
    on_step: StepCallback | None = None,
    exact: bool = True,
) -> list[Image.Image]:
    """Renders ``len(prompts)`` images in one pipeline call and returns them in order as RGB PIL images.

    ``on_step(done, total)`` is called after each step with 1-based ``done``; ``total`` is the number of denoising
    iterations, which is ``settings.steps`` for most schedulers but not all (Heun: 2 * steps - 1, PNDM: steps + 1).
    ``exact``: see the module's documentation.
    """
    import torch

    if not len(prompts) == len(negative_prompts) == len(seeds):
        raise ValueError(
            f"prompts, negative_prompts and seeds differ in length ({len(prompts)}, {len(negative_prompts)}, "
            f"{len(seeds)})"
        )
    if not prompts:
        return []
    pipeline = model.pipeline
    scheduler = make_scheduler(settings.scheduler, pipeline.scheduler.config)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]

    def step_end(pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            on_step(step_index + 1, int(getattr(pipe, "num_timesteps", None) or settings.steps))
        return callback_kwargs

    options: dict[str, Any] = {
        "width": settings.width,
        "height": settings.height,
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance_scale,
        "generator": generators,
        "output_type": "pil",
        "callback_on_step_end": step_end,
    }
    pipeline.scheduler = scheduler
    if not exact or len(prompts) == 1:
        result = pipeline(prompt=list(prompts), negative_prompt=list(negative_prompts), **options)
        return list(result.images)
    guided = settings.guidance_scale > 1 and pipeline.unet.config.time_cond_proj_dim is None
    prompt_embeds, negative_embeds = _encode_one_by_one(pipeline, prompts, negative_prompts, guided)
    with _one_image_at_a_time(pipeline, len(prompts)):
        result = pipeline(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, **options)
    return list(result.images)


def _encode_one_by_one(
    pipeline: Any, prompts: list[str], negative_prompts: list[str], guided: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text embeddings of each image, computed as a batch of one (what the pipeline does for a lone image)."""
    import torch

    positives: list[torch.Tensor] = []
    negatives: list[torch.Tensor] = []
    with torch.no_grad():
        for prompt, negative in zip(prompts, negative_prompts, strict=True):
            positive, negative_embeds = pipeline.encode_prompt(
                [prompt], pipeline._execution_device, 1, guided, negative_prompt=[negative]
            )
            positives.append(positive)
            if negative_embeds is not None:
                negatives.append(negative_embeds)
    return torch.cat(positives), (torch.cat(negatives) if guided else None)


@contextmanager
def _one_image_at_a_time(pipeline: Any, count: int) -> Iterator[None]:
    """Makes the UNet and the VAE of ``pipeline`` process each image of the batch separately, for this call.

    With guidance the pipeline gives the UNet ``[negative_1..n, positive_1..n]``; a lone image is run as
    ``[negative_i, positive_i]``, so that is the slice each image gets here. The VAE decodes one latent at a time
    (its own "slicing" mode). Anything unexpected (another batch size, extra tensor inputs) runs unchanged.
    """
    import torch

    unet, vae = pipeline.unet, pipeline.vae
    had_own_forward = "forward" in vars(unet)
    original = unet.forward

    def forward(sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                **kwargs: Any) -> Any:
        total = sample.shape[0]
        if args or total not in (count, 2 * count) or any(torch.is_tensor(value) for value in kwargs.values()):
            return original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        per_image = total // count
        outputs: list[torch.Tensor] = [sample] * total
        for image in range(count):
            rows = [image + copy * count for copy in range(per_image)]
            step = timestep[rows] if torch.is_tensor(timestep) and timestep.ndim == 1 else timestep
            result = original(sample[rows], step, encoder_hidden_states[rows], **{**kwargs, "return_dict": False})
            for position, row in enumerate(rows):
                outputs[row] = result[0][position : position + 1]
        predicted = torch.cat(outputs)
        if kwargs.get("return_dict", True):
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=predicted)
        return (predicted,)

    was_slicing = getattr(vae, "use_slicing", False)
    unet.forward = forward
    vae.enable_slicing()
    try:
        yield
    finally:
        if had_own_forward:
            unet.forward = original
        else:
            del unet.forward
        if not was_slicing:
            vae.disable_slicing()

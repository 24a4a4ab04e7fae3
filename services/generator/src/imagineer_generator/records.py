"""The generation record of one image, as the catalog stores it and as its PNG embeds it."""

from __future__ import annotations

from typing import Any

from imagineer.common.v1 import common_pb2
from imagineer_generator.plan import ImageTask, RenderSettings


def generation_record(model: str, task: ImageTask, settings: RenderSettings,
                      lora_names: dict[str, str]) -> common_pb2.GenerationParameters:
    return common_pb2.GenerationParameters(
        prompt=task.prompt, negative_prompt=task.negative_prompt, seed=task.seed, steps=settings.steps,
        guidance_scale=settings.guidance_scale, scheduler=settings.scheduler, width=settings.width,
        height=settings.height, base_model=model,
        loras=[common_pb2.LoraWeight(artifact_id=lora.artifact_id, name=lora_names.get(lora.artifact_id, ""),
                                     weight=lora.weight) for lora in settings.loras])


def png_parameters(model: str, task: ImageTask, settings: RenderSettings,
                   lora_names: dict[str, str]) -> dict[str, Any]:
    """Only what determines the pixels: identical requests give identical files (and one catalog image)."""
    return {
        "prompt": task.prompt, "negative_prompt": task.negative_prompt, "seed": task.seed, "steps": settings.steps,
        "guidance_scale": settings.guidance_scale, "scheduler": settings.scheduler, "width": settings.width,
        "height": settings.height, "model": model,
        "loras": [{"artifact_id": lora.artifact_id, "name": lora_names.get(lora.artifact_id, ""),
                   "weight": lora.weight} for lora in settings.loras],
    }

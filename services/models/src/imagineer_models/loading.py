"""Loading Stable Diffusion pipelines from local folders and files, never from the network.

* no source: the tiny demo model (built once under ``models_dir``), loaded exactly like a real model;
* a diffusers folder (``model_index.json``, ``unet/``, ``vae/``...): ``StableDiffusionPipeline.from_pretrained``;
* a single-file checkpoint (``.safetensors`` / ``.ckpt``, the A1111/Civitai format):
  ``StableDiffusionPipeline.from_single_file``, which needs the pipeline's configuration as a local diffusers folder
  (``single_file_config``: a copy of an SD 1.5 folder, weights optional), since the hub is not reachable.

Torch and diffusers are imported inside the functions, so importing this module (say, for ``ModelLoadError``) is
cheap; loading pays the 3-4 s import once.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagineer_models.tiny_model import DEMO_MODEL_NAME, ensure_tiny_model, is_demo_model

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# From this default size up, decode large images in tiles (SD 1.5's VAE tiles above 512 px, so 512 px images are
# decoded exactly as without tiling); the 64 px demo model is never tiled.
VAE_TILING_MIN_DEFAULT_SIZE = 512
# CUDA cards with at most this much memory compute attention in slices.
ATTENTION_SLICING_MAX_GPU_BYTES = 8 * 1024**3


class ModelLoadError(Exception):
    """A model source that is missing, not a Stable Diffusion pipeline, or that fails to load."""

    def __init__(self, source: Path | str, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"cannot load model {self.source}: {problem}")


@dataclass
class LoadedModel:
    pipeline: StableDiffusionPipeline
    name: str
    is_demo: bool
    device: str
    dtype: torch.dtype
    default_size: int  # pixels a side that the model was trained for (SD 1.5: 512, the demo model: 64)
    source: Path


def model_name(source: Path) -> str:
    """The name a model is known by: "imagineer/tiny-sd" for the demo model, else its folder or file name.

    A single-file checkpoint is named without its suffix (``dreamshaper_8.safetensors`` -> ``dreamshaper_8``).
    """
    source = Path(source)
    if source.is_dir():
        return DEMO_MODEL_NAME if is_demo_model(source) else source.name
    return source.stem if source.suffix.lower() in SINGLE_FILE_SUFFIXES else source.name


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_dtype(device: str) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere (float16 is slow or unsupported on CPUs)."""
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def go_offline() -> None:
    """Makes sure no loading path reaches the Hugging Face hub (the generator must work without the network).

    ``huggingface_hub`` reads HF_HUB_OFFLINE once, when it is first imported, so the flag is set in both places.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True


def load_model(
    source: Path | None,
    *,
    models_dir: Path,
    device: str = "auto",
    single_file_config: Path | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Loads a pipeline ready to render; raises ModelLoadError naming the source and what is wrong with it.

    ``source`` None means the demo model, built into ``models_dir`` on first use. ``dtype`` overrides the default
    (float16 on CUDA, float32 on CPU; bfloat16 is about 3x faster on CPUs with fast bf16 but changes the images).
    """
    go_offline()
    if source is None:
        try:
            source = ensure_tiny_model(Path(models_dir))
        except Exception as error:
            raise ModelLoadError(
                Path(models_dir), f"cannot build the demo model there: {type(error).__name__}: {error}"
            ) from error
    source = Path(source)
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    if not source.exists():
        raise ModelLoadError(source, "no such file or folder")
    if source.is_dir():
        _check_pipeline_folder(source)
        pipeline = _load(source, lambda cls: cls.from_pretrained(source, **_load_options(dtype)))
    elif source.suffix.lower() in SINGLE_FILE_SUFFIXES:
        pipeline = _load_single_file(source, single_file_config, dtype)
    else:
        raise ModelLoadError(
            source, f"not a diffusers pipeline folder nor a {' / '.join(SINGLE_FILE_SUFFIXES)} checkpoint"
        )
    return _prepare(pipeline, source=source, device=device, dtype=dtype)


def _load_options(dtype: torch.dtype) -> dict[str, Any]:
    return {"local_files_only": True, "safety_checker": None, "requires_safety_checker": False, "dtype": dtype}


def _check_pipeline_folder(folder: Path) -> None:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(folder, "not a diffusers pipeline folder (no model_index.json)")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(folder, f"model_index.json is unreadable: {error}") from error
    if not isinstance(index, dict):
        raise ModelLoadError(folder, "model_index.json is not a JSON object")
    missing = [name for name in _COMPONENTS if not index.get(name) or index[name] == [None, None]]
    if missing:
        kind = index.get("_class_name", "unknown pipeline")
        raise ModelLoadError(
            folder, f"not a Stable Diffusion pipeline ({kind}; model_index.json lacks {', '.join(missing)})"
        )
    absent = [name for name in _COMPONENTS if not (folder / name).is_dir()]
    if absent:
        raise ModelLoadError(folder, f"incomplete pipeline folder: missing sub-folder(s) {', '.join(absent)}")


def _load_single_file(path: Path, config: Path | None, dtype: torch.dtype) -> StableDiffusionPipeline:
    if config is not None:
        config = Path(config)
        if not (config / "model_index.json").is_file():
            raise ModelLoadError(path, f"single_file_config {config} is not a diffusers pipeline folder")
    options = _load_options(dtype)

    def load(cls: type[StableDiffusionPipeline]) -> StableDiffusionPipeline:
        return cls.from_single_file(str(path), config=str(config) if config else None, **options)

    try:
        return _load(path, load)
    except ModelLoadError as error:
        if config is None:
            raise ModelLoadError(
                path,
                "a single-file checkpoint needs its pipeline configuration, and the Hugging Face hub is not used "
                "here: pass a local diffusers folder of the same architecture (e.g. Stable Diffusion 1.5's "
                f"model_index.json and component configs) as single_file_config ({error.problem})",
            ) from error
        raise


def _load(source: Path, load: Any) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline

    try:
        with _quiet_progress_bars():
            return load(StableDiffusionPipeline)
    except ModelLoadError:
        raise
    except Exception as error:  # diffusers raises many kinds (OSError, ValueError, KeyError, RuntimeError...)
        raise ModelLoadError(source, f"{type(error).__name__}: {error}") from error


@contextmanager
def _quiet_progress_bars():
    """Loading bars are noise in a service's log; restore whatever the caller had afterwards."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    modules = [module for module in (diffusers_logging, transformers_logging) if module.is_progress_bar_enabled()]
    for module in modules:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module in modules:
            module.enable_progress_bar()


def _default_size(pipeline: StableDiffusionPipeline) -> int:
    sample_size = pipeline.unet.config.sample_size
    if not isinstance(sample_size, int):
        sample_size = int(sample_size[0])
    return sample_size * pipeline.vae_scale_factor


def _prepare(pipeline: StableDiffusionPipeline, *, source: Path, device: str, dtype: torch.dtype) -> LoadedModel:
    import torch

    try:
        pipeline = pipeline.to(device)
    except Exception as error:
        raise ModelLoadError(source, f"cannot move the pipeline to {device}: {error}") from error
    pipeline.set_progress_bar_config(disable=True)
    default_size = _default_size(pipeline)
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        if torch.cuda.get_device_properties(index).total_memory <= ATTENTION_SLICING_MAX_GPU_BYTES:
            pipeline.enable_attention_slicing()
    if device.startswith("cuda") or default_size >= VAE_TILING_MIN_DEFAULT_SIZE:
        pipeline.vae.enable_tiling()
    demo = source.is_dir() and is_demo_model(source)
    return LoadedModel(
        pipeline=pipeline,
        name=model_name(source),
        is_demo=demo,
        device=device,
        dtype=dtype,
        default_size=default_size,
        source=source,
    )

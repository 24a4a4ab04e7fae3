"""LoRA adapters from the catalog: fetched once, cached on disk by content hash, switched per batch.

The base model stays loaded; adapters are loaded into it once under a name
derived from their hash and then turned on and weighted per batch. A LoRA that
cannot be applied is removed again, so it never poisons later jobs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from imagineer_common.catalog_client import ArtifactInfo, CatalogClient, CatalogError
from imagineer_generator.plan import LoraChoice

log = logging.getLogger("imagineer.generator.loras")

WEIGHTS_SUFFIX = ".safetensors"


class LoraError(Exception):
    """A requested LoRA is missing, is not a LoRA, or does not fit the loaded model."""


class LoraManager:
    def __init__(self, catalog: CatalogClient, cache_dir: Path, model_name: str) -> None:
        self._catalog = catalog
        self._cache_dir = cache_dir
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._model_name = model_name
        self._adapters: dict[str, str] = {}  # artifact id -> adapter name in the pipeline
        self._names: dict[str, str] = {}  # artifact id -> display name
        self._lock = threading.Lock()

    def names(self, loras: tuple[LoraChoice, ...]) -> dict[str, str]:
        return {lora.artifact_id: self._names.get(lora.artifact_id, "") for lora in loras}

    def describe(self, artifact_id: str) -> ArtifactInfo:
        try:
            info = self._catalog.artifact(artifact_id)
        except CatalogError as error:
            raise LoraError(f"LoRA artifact {artifact_id} is not available: {error}") from None
        if info.kind != "lora":
            raise LoraError(f"artifact {artifact_id} ({info.name}) is a {info.kind} artifact, not a LoRA")
        return info

    def cached_file(self, info: ArtifactInfo) -> Path:
        """The weights on local disk, downloaded and verified once per content hash."""
        path = self._cache_dir / f"{info.sha256}{WEIGHTS_SUFFIX}"
        if path.exists():
            return path
        handle, temp_name = tempfile.mkstemp(dir=self._cache_dir, prefix="download-")
        os.close(handle)
        temp = Path(temp_name)
        try:
            self._catalog.download_artifact(info.id, temp)
            digest = hashlib.sha256(temp.read_bytes()).hexdigest()
            if digest != info.sha256:
                raise LoraError(f"LoRA artifact {info.id} arrived corrupted (sha256 {digest}, expected {info.sha256})")
            os.replace(temp, path)
        except CatalogError as error:
            raise LoraError(f"LoRA artifact {info.id} could not be downloaded: {error}") from None
        finally:
            temp.unlink(missing_ok=True)
        return path

    def _load(self, pipeline, artifact_id: str) -> str:
        if artifact_id in self._adapters:
            return self._adapters[artifact_id]
        info = self.describe(artifact_id)
        adapter = f"lora_{info.sha256[:16]}"
        if adapter not in self._adapters.values():  # the same weights may come back under a new artifact id
            path = self.cached_file(info)
            try:
                pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
            except Exception as error:  # diffusers/peft raise many types for weights that do not fit
                self._remove(pipeline, adapter)
                raise LoraError(f"LoRA artifact {artifact_id} ({info.name}) cannot be applied to {self._model_name}: "
                                f"{type(error).__name__}: {str(error)[:300]}") from None
        self._adapters[artifact_id] = adapter
        self._names[artifact_id] = info.name
        log.info("loaded LoRA %s (%s) as %s", artifact_id, info.name, adapter)
        return adapter

    @staticmethod
    def _remove(pipeline, adapter: str) -> None:
        try:
            pipeline.delete_adapters(adapter)
        except Exception:  # it may not have got far enough to exist
            log.debug("adapter %s was not registered", adapter)

    def activate(self, pipeline, loras: tuple[LoraChoice, ...]) -> None:
        """Makes exactly ``loras`` (with their weights) active, or none."""
        with self._lock:
            if not loras:
                if self._adapters:
                    pipeline.disable_lora()
                return
            adapters = [self._load(pipeline, lora.artifact_id) for lora in loras]
            pipeline.enable_lora()
            pipeline.set_adapters(adapters, adapter_weights=[lora.weight for lora in loras])

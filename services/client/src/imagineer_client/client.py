"""Thin wrappers around the generated stubs for the common tasks; everything goes over gRPC."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagineer.catalog.v1 import catalog_service_pb2 as catalog_api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from imagineer.catalog.v1 import resources_pb2 as catalog_pb2
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as generator_api
from imagineer.generator.v1 import generator_service_pb2_grpc as generator_grpc
from imagineer.trainer.v1 import labeling_service_pb2 as labeling_api
from imagineer.trainer.v1 import labeling_service_pb2_grpc as labeling_grpc
from imagineer.trainer.v1 import scraping_service_pb2 as scraping_api
from imagineer.trainer.v1 import scraping_service_pb2_grpc as scraping_grpc
from imagineer.trainer.v1 import trainer_service_pb2 as trainer_api
from imagineer.trainer.v1 import trainer_service_pb2_grpc as trainer_grpc
from imagineer_common.channels import open_channel
from imagineer_common.tls import ClientTls, client_tls_from_env

DEFAULT_CATALOG = "127.0.0.1:50051"
DEFAULT_GENERATOR = "127.0.0.1:50052"
DEFAULT_TRAINER = "127.0.0.1:50053"
DEVELOPMENT_TOKEN = "imagineer-dev-token"
UPLOAD_CHUNK_BYTES = 64 * 1024
MAX_PAGE_SIZE = 100


class ImagineerError(Exception):
    """A call failed. ``bad_input`` tells the caller's mistakes from server faults."""

    BAD_INPUT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                 grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
                                 grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
                                 grpc.StatusCode.PERMISSION_DENIED})

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def bad_input(self) -> bool:
        return self.code in self.BAD_INPUT_CODES

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> ImagineerError:
        return cls(f"{error.code().name}: {error.details()}", error.code())


@dataclass
class ServiceStatus:
    name: str
    service: str  # the gRPC service name asked for
    state: str  # SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNREACHABLE...
    detail: str = ""


@dataclass(frozen=True)
class Lora:
    artifact_id: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Lora:
        """``ID`` or ``ID:WEIGHT``."""
        artifact_id, _, weight = text.partition(":")
        try:
            return cls(artifact_id.strip(), float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(f"bad LoRA {text!r}: expected ID or ID:WEIGHT") from None


class Imagineer:
    """Connections to the catalog, the generator and the trainer, with the admin token attached to every call.

    Every method raises ImagineerError on a failed call; ``error.bad_input`` tells refused input from server faults.
    """

    def __init__(self, *, catalog: str | None = None, generator: str | None = None, trainer: str | None = None,
                 token: str | None = None, tls: ClientTls | None = None) -> None:
        # TLS from IMAGINEER_TLS_CA_FILE (+ IMAGINEER_TLS_CERT_FILE/_KEY_FILE for client certificates) unless given.
        tls = tls or client_tls_from_env("IMAGINEER_")
        # Addresses may be dns:///name:port naming a headless Service: catalog calls then go round-robin over its
        # replicas; generator and trainer calls stay on one replica per client (it holds the jobs it started).
        self._catalog_channel = open_channel(catalog or os.environ.get("IMAGINEER_CATALOG_ADDRESS", DEFAULT_CATALOG),
                                             tls)
        self._generator_channel = open_channel(generator or os.environ.get("IMAGINEER_GENERATOR_ADDRESS",
                                                                           DEFAULT_GENERATOR), tls, per_connection=True)
        self._trainer_channel = open_channel(trainer or os.environ.get("IMAGINEER_TRAINER_ADDRESS", DEFAULT_TRAINER),
                                             tls, per_connection=True)
        self.catalog = catalog_grpc.CatalogServiceStub(self._catalog_channel)
        self.generator = generator_grpc.GeneratorServiceStub(self._generator_channel)
        self.trainer = trainer_grpc.TrainerServiceStub(self._trainer_channel)
        self.metadata = (("authorization", f"Bearer {token or os.environ.get('IMAGINEER_TOKEN', DEVELOPMENT_TOKEN)}"),)

    def __enter__(self) -> Imagineer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._catalog_channel.close()
        self._generator_channel.close()
        self._trainer_channel.close()

    def generate(self, prompt: str = "", *, negative_prompt: str = "", seed: int | None = None, steps: int = 0,
                 guidance_scale: float = 0.0, scheduler: str = "", width: int = 0, height: int = 0,
                 images: int = 1, loras: list[Lora] | None = None, album_id: str = "", album_name: str = "",
                 make_public: bool = False, template: str = "", rows: list[dict[str, str]] | None = None,
                 rows_csv: str = "", request_id: str = "") -> generator_api.GenerationJob:
        """Queues a generation and returns the job at once (see ``generate_and_wait`` and ``watch``).

        With ``template`` ("a {animal} in {place}") the job makes ``images`` images for each of ``rows`` (dicts)
        or each line of ``rows_csv`` (CSV text with a header) instead of one prompt.
        """
        parameters = common_pb2.GenerationParameters(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale,
            scheduler=scheduler, width=width, height=height)
        if seed is not None:
            parameters.seed = seed
        request = generator_api.StartGenerationRequest(
            parameters=parameters, image_count=images, album_id=album_id, album_name=album_name,
            make_public=make_public, request_id=request_id,
            loras=[generator_api.LoraSpec(artifact_id=lora.artifact_id, weight=lora.weight) for lora in loras or []])
        if template:
            request.template.template = template
            if rows_csv:
                request.template.csv = rows_csv
            else:
                request.template.structured.rows.extend(
                    generator_api.TemplateRow(values=row) for row in rows or [])
        return self._call(self.generator.StartGeneration, request)

    def watch(self, job_id: str) -> Iterator[generator_api.WatchGenerationResponse]:
        try:
            yield from self.generator.WatchGeneration(generator_api.WatchGenerationRequest(id=job_id),
                                                      metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def generate_and_wait(self, prompt: str = "", **options) -> generator_api.GenerationJob:
        job = self.generate(prompt, **options)
        last = job
        for event in self.watch(job.id):
            last = event.job
        return last

    def cancel(self, job_id: str) -> generator_api.GenerationJob:
        try:
            return self.generator.CancelGeneration(generator_api.CancelGenerationRequest(id=job_id),
                                                   metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def list_generations(self, page_size: int = 20) -> list[generator_api.GenerationJob]:
        try:
            reply = self.generator.ListGenerations(generator_api.ListGenerationsRequest(page_size=page_size),
                                                   metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None
        return list(reply.jobs)

    def download_image(self, image_id: str) -> tuple[str, bytes]:
        """The image's file name and bytes."""
        parts: list[bytes] = []
        name = f"{image_id}.png"
        try:
            for message in self.catalog.DownloadImage(catalog_api.DownloadImageRequest(id=image_id),
                                                      metadata=self.metadata):
                if message.WhichOneof("payload") == "info":
                    name = message.info.filename or name
                else:
                    parts.append(message.chunk_data)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None
        return name, b"".join(parts)

    # --- health ------------------------------------------------------------------------------------------------

    def status(self, timeout: float = 2.0) -> list[ServiceStatus]:
        """Each service's (and each trainer sub-service's) health, and what the generator has loaded."""
        checks = [("catalog", self._catalog_channel, _service_name(catalog_api, "CatalogService")),
                  ("generator", self._generator_channel, _service_name(generator_api, "GeneratorService")),
                  ("trainer", self._trainer_channel, _service_name(trainer_api, "TrainerService")),
                  ("labeling", self._trainer_channel, _service_name(labeling_api, "LabelingService")),
                  ("scraping", self._trainer_channel, _service_name(scraping_api, "ScrapingService"))]
        statuses = []
        for name, channel, service in checks:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                  timeout=timeout)
                state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                state = "UNREACHABLE" if error.code() in (grpc.StatusCode.UNAVAILABLE,
                                                          grpc.StatusCode.DEADLINE_EXCEEDED) else error.code().name
            statuses.append(ServiceStatus(name=name, service=service, state=state))
        generator = statuses[1]
        if generator.state == "SERVING":
            try:
                info = self._call(self.generator.GetGeneratorInfo, generator_api.GetGeneratorInfoRequest())
                generator.detail = (f"model {info.model}{' (demo)' if info.is_demo_model else ''} on {info.device}, "
                                    f"queue {info.queue_length}/{info.queue_capacity}")
            except ImagineerError as error:
                generator.detail = str(error)
        return statuses

    # --- catalog: images, albums, labels, import ---------------------------------------------------------

    def list_images(self, *, album_id: str = "", limit: int = 50, **filters) -> list[catalog_pb2.Image]:
        """Images newest first (or in ``order_by``), up to ``limit``; filters are ListImagesRequest fields."""
        request = catalog_api.ListImagesRequest(album_id=album_id, **filters)
        return self._collect(self.catalog.ListImages, request, "images", limit)

    def get_image(self, image_id: str) -> catalog_pb2.Image:
        return self._call(self.catalog.GetImage, catalog_api.GetImageRequest(id=image_id))

    def update_image(self, image_id: str, **fields) -> catalog_pb2.Image:
        """Sets the given Image fields (``is_public``, ``is_nsfw``, ``filename``) and nothing else."""
        request = catalog_api.UpdateImageRequest(image=catalog_pb2.Image(id=image_id, **fields),
                                                 update_mask=field_mask_pb2.FieldMask(paths=sorted(fields)))
        return self._call(self.catalog.UpdateImage, request)

    def delete_image(self, image_id: str) -> None:
        self._call(self.catalog.DeleteImage, catalog_api.DeleteImageRequest(id=image_id))

    def upload_image(self, data: bytes, filename: str, *, album_id: str = "", is_public: bool = False,
                     is_nsfw: bool = False, generation: common_pb2.GenerationParameters | None = None
                     ) -> catalog_pb2.Image:
        """Stores an image file (PNG, JPEG, WebP...) in the catalog, optionally appending it to an album."""
        metadata = catalog_api.ImageUploadMetadata(
            filename=filename, is_public=is_public, is_nsfw=is_nsfw, album_id=album_id,
            expected_size_bytes=len(data), expected_sha256=hashlib.sha256(data).hexdigest(), generation=generation)

        def messages():
            yield catalog_api.UploadImageRequest(metadata=metadata)
            for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
                yield catalog_api.UploadImageRequest(chunk_data=data[start:start + UPLOAD_CHUNK_BYTES])

        return self._call(self.catalog.UploadImage, messages()).image

    def create_album(self, name: str, *, description: str = "", is_public: bool = False,
                     is_training_source: bool = False) -> catalog_pb2.Album:
        album = catalog_pb2.Album(name=name, description=description, is_public=is_public,
                                  is_training_source=is_training_source, album_type=catalog_pb2.ALBUM_TYPE_MANUAL)
        return self._call(self.catalog.CreateAlbum, catalog_api.CreateAlbumRequest(album=album))

    def get_album(self, album_id: str) -> catalog_pb2.Album:
        return self._call(self.catalog.GetAlbum, catalog_api.GetAlbumRequest(id=album_id))

    def list_albums(self, *, limit: int = 50, **filters) -> list[catalog_pb2.Album]:
        return self._collect(self.catalog.ListAlbums, catalog_api.ListAlbumsRequest(**filters), "albums", limit)

    def update_album(self, album_id: str, **fields) -> catalog_pb2.Album:
        """Sets the given Album fields (``name``, ``is_public``, ``is_training_source``...) and nothing else."""
        request = catalog_api.UpdateAlbumRequest(album=catalog_pb2.Album(id=album_id, **fields),
                                                 update_mask=field_mask_pb2.FieldMask(paths=sorted(fields)))
        return self._call(self.catalog.UpdateAlbum, request)

    def delete_album(self, album_id: str) -> None:
        self._call(self.catalog.DeleteAlbum, catalog_api.DeleteAlbumRequest(id=album_id))

    def add_to_album(self, album_id: str, image_ids: list[str], position: int | None = None) -> None:
        request = catalog_api.AddAlbumImagesRequest(album_id=album_id, image_ids=image_ids)
        if position is not None:
            request.position = position
        self._call(self.catalog.AddAlbumImages, request)

    def remove_from_album(self, album_id: str, image_ids: list[str]) -> None:
        self._call(self.catalog.RemoveAlbumImages,
                   catalog_api.RemoveAlbumImagesRequest(album_id=album_id, image_ids=image_ids))

    def album_images(self, album_id: str, *, limit: int = 1000) -> list[catalog_pb2.AlbumImage]:
        """The album's images in album order."""
        return self._collect(self.catalog.ListAlbumImages, catalog_api.ListAlbumImagesRequest(album_id=album_id),
                             "album_images", limit)

    def add_label(self, image_id: str, text: str, label_type: int = catalog_pb2.LABEL_TYPE_MANUAL,
                  **fields) -> catalog_pb2.Label:
        label = catalog_pb2.Label(text=text, label_type=label_type, **fields)
        return self._call(self.catalog.CreateLabel, catalog_api.CreateLabelRequest(image_id=image_id, label=label))

    def list_labels(self, image_id: str, *, limit: int = 500) -> list[catalog_pb2.Label]:
        return self._collect(self.catalog.ListLabels, catalog_api.ListLabelsRequest(image_id=image_id), "labels",
                             limit)

    def delete_label(self, label_id: str) -> None:
        self._call(self.catalog.DeleteLabel, catalog_api.DeleteLabelRequest(id=label_id))

    def import_outputs(self, directory: str, *, make_public: bool | None = None
                       ) -> Iterator[catalog_api.ImportOutputsResponse]:
        """Imports a legacy outputs folder the catalog process can read; yields per-file results, then a summary."""
        request = catalog_api.ImportOutputsRequest(directory=directory)
        if make_public is not None:
            request.make_public = make_public
        try:
            yield from self.catalog.ImportOutputs(request, metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def backup(self, target: Path, *, on_bytes: Callable[[int], None] | None = None) -> catalog_api.BackupManifest:
        """Downloads a consistent backup of the whole catalog to ``target`` (written whole or not at all)."""
        stream = self.catalog.BackupCatalog(catalog_api.BackupCatalogRequest(), metadata=self.metadata)
        return _save_stream(stream, Path(target), header="manifest", sha256_of=lambda m: m.archive_sha256,
                            what="the backup stream", on_bytes=on_bytes)

    def restore(self, source: Path, *, on_bytes: Callable[[int], None] | None = None) -> catalog_api.BackupManifest:
        """Uploads a backup archive into the catalog, which must be empty."""
        sent = 0

        def messages():
            nonlocal sent
            with Path(source).open("rb") as handle:
                while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                    sent += len(chunk)
                    if on_bytes:
                        on_bytes(sent)
                    yield catalog_api.RestoreCatalogRequest(chunk_data=chunk)

        return self._call(self.catalog.RestoreCatalog, messages()).manifest

    # --- catalog: artifacts (trained LoRAs and other weights) -------------------------------------------------

    def list_artifacts(self, *, kind: str = "", training_run_id: str = "", limit: int = 50
                       ) -> list[catalog_pb2.Artifact]:
        """Artifacts newest first, up to ``limit``; ``kind`` is "lora", "checkpoint" or "other"."""
        request = catalog_api.ListArtifactsRequest(kind=artifact_kind(kind) if kind else 0,
                                                   training_run_id=training_run_id)
        return self._collect(self.catalog.ListArtifacts, request, "artifacts", limit)

    def get_artifact(self, artifact_id: str) -> catalog_pb2.Artifact:
        return self._call(self.catalog.GetArtifact, catalog_api.GetArtifactRequest(id=artifact_id))

    def delete_artifact(self, artifact_id: str) -> None:
        self._call(self.catalog.DeleteArtifact, catalog_api.DeleteArtifactRequest(id=artifact_id))

    def upload_artifact(self, source: Path, *, name: str, kind: str = "lora", base_model: str = "", rank: int = 0,
                        metadata: dict[str, str] | None = None,
                        on_bytes: Callable[[int], None] | None = None) -> catalog_api.UploadArtifactResponse:
        """Stores a weights file (for example a LoRA made elsewhere) in the catalog; the same bytes uploaded again
        return the artifact stored the first time (``already_existed``)."""
        source = Path(source)
        digest, size = hashlib.sha256(), 0
        with source.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        header = catalog_api.ArtifactUploadMetadata(
            name=name, kind=artifact_kind(kind), filename=source.name, base_model=base_model, rank=rank,
            metadata=metadata or {}, expected_size_bytes=size, expected_sha256=digest.hexdigest())
        sent = 0

        def messages():
            nonlocal sent
            yield catalog_api.UploadArtifactRequest(metadata=header)
            with source.open("rb") as handle:
                while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                    sent += len(chunk)
                    if on_bytes:
                        on_bytes(sent)
                    yield catalog_api.UploadArtifactRequest(chunk_data=chunk)

        return self._call(self.catalog.UploadArtifact, messages())

    def download_artifact(self, artifact_id: str, target: Path, *,
                          on_bytes: Callable[[int], None] | None = None) -> catalog_api.FileInfo:
        """Writes an artifact's file to ``target`` (whole and checked against its sha256, or not at all)."""
        stream = self.catalog.DownloadArtifact(catalog_api.DownloadArtifactRequest(id=artifact_id),
                                               metadata=self.metadata)
        return _save_stream(stream, Path(target), header="info", sha256_of=lambda info: info.sha256,
                            what="the artifact", on_bytes=on_bytes)

    def _collect(self, method, request, field: str, limit: int) -> list:
        """Follows page tokens until ``limit`` items or the last page."""
        items: list = []
        while len(items) < limit:
            request.page_size = min(limit - len(items), MAX_PAGE_SIZE)
            reply = self._call(method, request)
            items.extend(getattr(reply, field))
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
        return items[:limit]

    def _call(self, method, request):
        try:
            return method(request, metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def train(self, album_ids: list[str], **options) -> trainer_api.Training:
        """Starts a LoRA training; options are StartTrainingRequest fields (steps, rank, learning_rate...)."""
        return self._call(self.trainer.StartTraining, trainer_api.StartTrainingRequest(album_ids=album_ids, **options))

    def watch_training(self, training_id: str) -> Iterator[trainer_api.WatchTrainingResponse]:
        try:
            yield from self.trainer.WatchTraining(trainer_api.WatchTrainingRequest(id=training_id),
                                                  metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def train_and_wait(self, album_ids: list[str], **options) -> trainer_api.Training:
        training = self.train(album_ids, **options)
        for event in self.watch_training(training.id):
            training = event.training
        return training

    def get_training(self, training_id: str) -> trainer_api.Training:
        return self._call(self.trainer.GetTraining, trainer_api.GetTrainingRequest(id=training_id))

    def list_trainings(self, page_size: int = 20) -> list[trainer_api.Training]:
        return list(self._call(self.trainer.ListTrainings, trainer_api.ListTrainingsRequest(page_size=page_size))
                    .trainings)

    def cancel_training(self, training_id: str) -> trainer_api.Training:
        return self._call(self.trainer.CancelTraining, trainer_api.CancelTrainingRequest(id=training_id))

    # --- labeling: the trainer's LabelingService (same address and token as the trainer) ---------------------------

    @functools.cached_property
    def labeling(self) -> labeling_grpc.LabelingServiceStub:
        return labeling_grpc.LabelingServiceStub(self._trainer_channel)

    def label(self, *, image_id: str = "", album_id: str = "", labeler: str = "",
              request_id: str = "") -> labeling_api.Labeling:
        """Starts labeling one image or a whole album; ``labeler`` is "local", "anthropic" or "" (the default)."""
        request = labeling_api.StartLabelingRequest(labeler=labeler, request_id=request_id)
        if image_id:
            request.image_id = image_id
        if album_id:
            request.album_id = album_id
        return self._call(self.labeling.StartLabeling, request)

    def watch_labeling(self, labeling_id: str,
                       after_sequence: int = 0) -> Iterator[labeling_api.WatchLabelingResponse]:
        try:
            yield from self.labeling.WatchLabeling(
                labeling_api.WatchLabelingRequest(id=labeling_id, after_sequence=after_sequence),
                metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def get_labeling(self, labeling_id: str) -> labeling_api.Labeling:
        return self._call(self.labeling.GetLabeling, labeling_api.GetLabelingRequest(id=labeling_id))

    def list_labelings(self, page_size: int = 20) -> list[labeling_api.Labeling]:
        return list(self._call(self.labeling.ListLabelings, labeling_api.ListLabelingsRequest(page_size=page_size))
                    .labelings)

    def cancel_labeling(self, labeling_id: str) -> labeling_api.Labeling:
        return self._call(self.labeling.CancelLabeling, labeling_api.CancelLabelingRequest(id=labeling_id))

    # --- scraping (the trainer's ScrapingService) --------------------------------------------------------------

    @property
    def scraping(self) -> scraping_grpc.ScrapingServiceStub:
        """The trainer's scraping stub (same connection as ``trainer``)."""
        return scraping_grpc.ScrapingServiceStub(self._trainer_channel)

    def start_scrape(self, source_url: str, **options) -> scraping_api.Scrape:
        """Starts a scrape; options are StartScrapeRequest fields (max_depth, max_pages, max_images,
        link_policy, min_width, min_height, allowed_formats, album_name, request_id)."""
        return self._call(self.scraping.StartScrape, scraping_api.StartScrapeRequest(source_url=source_url, **options))

    def get_scrape(self, scrape_id: str) -> scraping_api.Scrape:
        return self._call(self.scraping.GetScrape, scraping_api.GetScrapeRequest(id=scrape_id))

    def list_scrapes(self, page_size: int = 20) -> list[scraping_api.Scrape]:
        return list(self._call(self.scraping.ListScrapes, scraping_api.ListScrapesRequest(page_size=page_size))
                    .scrapes)

    def cancel_scrape(self, scrape_id: str) -> scraping_api.Scrape:
        return self._call(self.scraping.CancelScrape, scraping_api.CancelScrapeRequest(id=scrape_id))

    def watch_scrape(self, scrape_id: str, after_sequence: int = 0) -> Iterator[scraping_api.WatchScrapeResponse]:
        try:
            yield from self.scraping.WatchScrape(
                scraping_api.WatchScrapeRequest(id=scrape_id, after_sequence=after_sequence), metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None


def _save_stream(stream, target: Path, *, header: str, sha256_of: Callable, what: str,
                 on_bytes: Callable[[int], None] | None):
    """Writes the ``chunk_data`` of a download stream to ``target``, whole and matching the sha256 that its
    ``header`` message gives, or not at all (a hidden partial file until then); returns that header."""
    partial = target.with_name(f".{target.name}.partial")
    digest, received, first = hashlib.sha256(), 0, None
    try:
        with partial.open("wb") as handle:
            for message in stream:
                if message.WhichOneof("payload") == header:
                    first = getattr(message, header)
                    continue
                handle.write(message.chunk_data)
                digest.update(message.chunk_data)
                received += len(message.chunk_data)
                if on_bytes:
                    on_bytes(received)
        if first is None or sha256_of(first) != digest.hexdigest():
            raise ImagineerError(f"{what} ended early or arrived damaged; nothing was written")
        partial.replace(target)
    except grpc.RpcError as error:
        raise ImagineerError.from_rpc(error) from None
    finally:
        partial.unlink(missing_ok=True)
    return first


def artifact_kind(name: str) -> int:
    """The ArtifactKind of "lora", "checkpoint" or "other"."""
    try:
        return catalog_pb2.ArtifactKind.Value(f"ARTIFACT_KIND_{name.upper()}")
    except ValueError:
        raise ImagineerError(f"unknown artifact kind {name!r}: lora, checkpoint or other",
                             grpc.StatusCode.INVALID_ARGUMENT) from None


def _service_name(module, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name


def client_from_args(args) -> Imagineer:
    """An Imagineer client from the command line's --catalog/--generator/--trainer/--token (or the environment)."""
    return Imagineer(catalog=args.catalog, generator=args.generator, trainer=args.trainer, token=args.token)

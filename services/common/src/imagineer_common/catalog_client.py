"""A client of the catalog for the other services: albums, images, labels, training runs and artifacts.

Errors come out as CatalogError with the gRPC status name, so callers need not know gRPC.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2, json_format, struct_pb2

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as api_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer_common.channels import open_channel
from imagineer_common.tls import ClientTls

CHUNK_BYTES = 512 * 1024


class CatalogError(Exception):
    """A catalog call failed; the message says which and why, ``code`` is the gRPC status name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ArtifactInfo:
    id: str
    name: str
    kind: str
    base_model: str
    sha256: str
    size_bytes: int


class CatalogClient:
    def __init__(self, address: str, token: str, timeout: float = 60.0, tls: ClientTls | None = None,
                 patience: float = 120.0) -> None:
        self._channel = open_channel(address, tls)
        self._stub = api_grpc.CatalogServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self.patience = patience  # how long background writes wait out an unreachable catalog
        self.address = address

    def close(self) -> None:
        self._channel.close()

    def _call(self, what: str, method, request, **kwargs):
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout, **kwargs)
        except grpc.RpcError as error:
            raise CatalogError(f"catalog {what} failed: {error.code().name}: {error.details()}",
                               error.code().name) from None

    def _call_patiently(self, what: str, method, make_request):
        """For idempotent writes of background work: rides out a catalog restart instead of losing the result.

        Waits for the channel to be ready and retries UNAVAILABLE (connection refused or dropped) with backoff
        until ``patience`` seconds have passed. ``make_request`` builds a fresh request (or request iterator) for
        each attempt.
        """
        deadline = time.monotonic() + self.patience
        delay = 0.2
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(make_request(), metadata=self._metadata, timeout=max(1.0, min(self._timeout, remaining)),
                              wait_for_ready=True)
            except grpc.RpcError as error:
                retryable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retryable or time.monotonic() + delay >= deadline:
                    raise CatalogError(f"catalog {what} failed: {error.code().name}: {error.details()}",
                                       error.code().name) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def create_album(self, *, name: str, album_type: str, prompt: str, config: dict, request_id: str,
                     is_public: bool) -> str:
        generation_config = struct_pb2.Struct()
        generation_config.update(config)
        album = res.Album(name=name[:255], album_type=getattr(res, f"ALBUM_TYPE_{album_type.upper()}"),
                          generation_prompt=prompt, generation_config=generation_config, is_public=is_public,
                          created_by="imagineer-generator")
        reply = self._call("CreateAlbum", self._stub.CreateAlbum,
                           api.CreateAlbumRequest(album=album, request_id=request_id))
        return reply.id

    def check_album(self, album_id: str) -> None:
        self._call("GetAlbum", self._stub.GetAlbum, api.GetAlbumRequest(id=album_id))

    def album_filenames(self, album_id: str) -> dict[str, str]:
        """File name -> image id of every image in an album."""
        names: dict[str, str] = {}
        token = ""
        while True:
            page = self._call("ListAlbumImages", self._stub.ListAlbumImages,
                              api.ListAlbumImagesRequest(album_id=album_id, page_size=500, page_token=token))
            names.update((member.image.filename, member.image.id) for member in page.album_images)
            token = page.next_page_token
            if not token:
                return names

    def upload_image(self, *, data: bytes, filename: str, generation: common_pb2.GenerationParameters,
                     album_id: str, is_public: bool) -> str:
        def requests() -> Iterator[api.UploadImageRequest]:
            yield api.UploadImageRequest(metadata=api.ImageUploadMetadata(
                filename=filename, generation=generation, is_public=is_public, album_id=album_id,
                expected_size_bytes=len(data), expected_sha256=hashlib.sha256(data).hexdigest()))
            for start in range(0, len(data), CHUNK_BYTES):
                yield api.UploadImageRequest(chunk_data=data[start:start + CHUNK_BYTES])

        # Idempotent: the same bytes return the same image and join the album once.
        return self._call_patiently("UploadImage", self._stub.UploadImage, requests).image.id

    def artifact(self, artifact_id: str) -> ArtifactInfo:
        reply = self._call("GetArtifact", self._stub.GetArtifact, api.GetArtifactRequest(id=artifact_id))
        kind = res.ArtifactKind.Name(reply.kind).removeprefix("ARTIFACT_KIND_").lower()
        return ArtifactInfo(id=reply.id, name=reply.name, kind=kind, base_model=reply.base_model,
                            sha256=reply.sha256, size_bytes=reply.size_bytes)

    def download_artifact(self, artifact_id: str, target: Path) -> None:
        """Streams an artifact into ``target`` (the caller renames it into place once verified)."""
        try:
            with open(target, "wb") as handle:
                for message in self._stub.DownloadArtifact(api.DownloadArtifactRequest(id=artifact_id),
                                                           metadata=self._metadata, timeout=self._timeout):
                    if message.WhichOneof("payload") == "chunk_data":
                        handle.write(message.chunk_data)
        except grpc.RpcError as error:
            raise CatalogError(f"catalog DownloadArtifact failed: {error.code().name}: {error.details()}",
                               error.code().name) from None


@dataclass(frozen=True)
class AlbumImageInfo:
    """An album member with what a trainer needs to caption it."""

    image_id: str
    prompt: str
    labels: tuple[tuple[str, str], ...]  # (label type, text), oldest first
    has_file: bool


JOB_STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in common_pb2.JobState.items() if value}


def _state_name(value: int) -> str:
    return common_pb2.JobState.Name(value).removeprefix("JOB_STATE_").lower()


@dataclass(frozen=True)
class TrainingRunInfo:
    id: str
    name: str
    state: str
    config: dict
    album_ids: tuple[str, ...]
    current_step: int
    artifact_id: str


def _run_info(run: res.TrainingRun) -> TrainingRunInfo:
    return TrainingRunInfo(id=run.id, name=run.name, state=_state_name(run.state),
                           config=json_format.MessageToDict(run.config), album_ids=tuple(run.album_ids),
                           current_step=run.current_step, artifact_id=run.artifact_id)


class TrainingCatalog(CatalogClient):
    """What the trainer reads and writes: album contents, training runs, artifacts."""

    def album_images(self, album_id: str) -> list[AlbumImageInfo]:
        members: list[AlbumImageInfo] = []
        token = ""
        while True:
            page = self._call("ListAlbumImages", self._stub.ListAlbumImages,
                              api.ListAlbumImagesRequest(album_id=album_id, page_size=500, page_token=token))
            for entry in page.album_images:
                labels = self._call("ListLabels", self._stub.ListLabels,
                                    api.ListLabelsRequest(image_id=entry.image.id, page_size=1000)).labels
                members.append(AlbumImageInfo(
                    image_id=entry.image.id, prompt=entry.image.generation.prompt,
                    labels=tuple((res.LabelType.Name(label.label_type).removeprefix("LABEL_TYPE_").lower(),
                                  label.text) for label in labels),
                    has_file=entry.image.has_file))
            token = page.next_page_token
            if not token:
                return members

    def image_bytes(self, image_id: str) -> bytes:
        try:
            return b"".join(message.chunk_data for message in self._stub.DownloadImage(
                api.DownloadImageRequest(id=image_id), metadata=self._metadata, timeout=self._timeout)
                if message.WhichOneof("payload") == "chunk_data")
        except grpc.RpcError as error:
            raise CatalogError(f"catalog DownloadImage failed: {error.code().name}: {error.details()}",
                               error.code().name) from None

    def create_training_run(self, *, name: str, album_ids: list[str], config: dict, total_steps: int,
                            request_id: str) -> TrainingRunInfo:
        config_struct = struct_pb2.Struct()
        config_struct.update(config)
        run = res.TrainingRun(name=name, album_ids=album_ids, config=config_struct, total_steps=total_steps,
                              state=common_pb2.JOB_STATE_QUEUED)
        return _run_info(self._call("CreateTrainingRun", self._stub.CreateTrainingRun,
                                    api.CreateTrainingRunRequest(training_run=run, request_id=request_id)))

    def training_run(self, run_id: str) -> TrainingRunInfo:
        return _run_info(self._call("GetTrainingRun", self._stub.GetTrainingRun, api.GetTrainingRunRequest(id=run_id)))

    def training_runs(self, states: list[str]) -> list[TrainingRunInfo]:
        runs: list[TrainingRunInfo] = []
        token = ""
        while True:
            page = self._call("ListTrainingRuns", self._stub.ListTrainingRuns, api.ListTrainingRunsRequest(
                states=[JOB_STATES[state] for state in states], page_size=500, page_token=token))
            runs.extend(_run_info(run) for run in page.training_runs)
            token = page.next_page_token
            if not token:
                return runs

    def update_training_run(self, run_id: str, *, patient: bool = False, **fields) -> None:
        """Sets the named fields: state (lowercase name), progress_percent, current_step, training_loss,
        error_message, artifact_id, total_steps. ``patient`` rides out a catalog restart (for results that must
        not be lost; progress reports fail fast)."""
        run = res.TrainingRun(id=run_id)
        for name, value in fields.items():
            if name == "state":
                run.state = JOB_STATES[value]
            else:
                setattr(run, name, value)
        request = api.UpdateTrainingRunRequest(training_run=run,
                                               update_mask=field_mask_pb2.FieldMask(paths=sorted(fields)))
        if patient:
            self._call_patiently("UpdateTrainingRun", self._stub.UpdateTrainingRun, lambda: request)
        else:
            self._call("UpdateTrainingRun", self._stub.UpdateTrainingRun, request)

    def upload_artifact(self, *, path: Path, name: str, kind: str, base_model: str, rank: int, training_run_id: str,
                        metadata: dict[str, str]) -> str:
        data = path.read_bytes()

        def requests() -> Iterator[api.UploadArtifactRequest]:
            yield api.UploadArtifactRequest(metadata=api.ArtifactUploadMetadata(
                name=name, kind=getattr(res, f"ARTIFACT_KIND_{kind.upper()}"), filename=path.name,
                base_model=base_model, rank=rank, training_run_id=training_run_id, metadata=metadata,
                expected_size_bytes=len(data), expected_sha256=hashlib.sha256(data).hexdigest()))
            for start in range(0, len(data), CHUNK_BYTES):
                yield api.UploadArtifactRequest(chunk_data=data[start:start + CHUNK_BYTES])

        # Idempotent: the same bytes for the same run (or for no run) return the first artifact.
        return self._call_patiently("UploadArtifact", self._stub.UploadArtifact, requests).artifact.id


# --- scraping ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeJobInfo:
    """The catalog's record of a scrape job."""

    id: str
    name: str
    source_url: str
    config: dict
    state: str
    stage: str
    pages_seen: int
    images_found: int
    images_kept: int
    images_skipped: int
    skip_reasons: dict[str, int]
    error_count: int
    error_message: str
    album_id: str
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None


def _time(message: res.ScrapeJob, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _scrape_info(job: res.ScrapeJob) -> ScrapeJobInfo:
    return ScrapeJobInfo(
        id=job.id, name=job.name, source_url=job.source_url, config=json_format.MessageToDict(job.config),
        state=_state_name(job.state) if job.state else "", stage=job.stage, pages_seen=job.pages_seen,
        images_found=job.images_found, images_kept=job.images_kept, images_skipped=job.images_skipped,
        skip_reasons=dict(job.skip_reasons), error_count=job.error_count, error_message=job.error_message,
        album_id=job.album_id, create_time=_time(job, "create_time"), start_time=_time(job, "start_time"),
        end_time=_time(job, "end_time"))


@dataclass(frozen=True)
class SimilarImageInfo:
    image_id: str
    sha256: str
    distance: int


class ScrapeCatalog(CatalogClient):
    """What the scraper reads and writes: scrape jobs, duplicate look-ups, imported images and their labels."""

    def create_scrape_job(self, *, name: str, source_url: str, config: dict, request_id: str) -> ScrapeJobInfo:
        config_struct = struct_pb2.Struct()
        config_struct.update(config)
        job = res.ScrapeJob(name=name[:255], source_url=source_url, config=config_struct,
                            state=common_pb2.JOB_STATE_QUEUED, stage="queued")
        return _scrape_info(self._call("CreateScrapeJob", self._stub.CreateScrapeJob,
                                       api.CreateScrapeJobRequest(scrape_job=job, request_id=request_id)))

    def scrape_job(self, job_id: str) -> ScrapeJobInfo:
        return _scrape_info(self._call("GetScrapeJob", self._stub.GetScrapeJob, api.GetScrapeJobRequest(id=job_id)))

    def scrape_jobs_page(self, *, states: list[str], page_size: int,
                         page_token: str) -> tuple[list[ScrapeJobInfo], str]:
        page = self._call("ListScrapeJobs", self._stub.ListScrapeJobs, api.ListScrapeJobsRequest(
            states=[JOB_STATES[state] for state in states], page_size=page_size, page_token=page_token))
        return [_scrape_info(job) for job in page.scrape_jobs], page.next_page_token

    def scrape_jobs(self, states: list[str]) -> list[ScrapeJobInfo]:
        jobs: list[ScrapeJobInfo] = []
        token = ""
        while True:
            page, token = self.scrape_jobs_page(states=states, page_size=500, page_token=token)
            jobs.extend(page)
            if not token:
                return jobs

    def update_scrape_job(self, job_id: str, **fields) -> None:
        """Sets the named fields: state (lowercase name), stage, pages_seen, images_found, images_kept,
        images_skipped, skip_reasons (a dict), error_count, error_message, album_id, progress_percent."""
        job = res.ScrapeJob(id=job_id)
        for name, value in fields.items():
            if name == "state":
                job.state = JOB_STATES[value]
            elif name == "skip_reasons":
                job.skip_reasons.update(value)
            else:
                setattr(job, name, value)
        self._call("UpdateScrapeJob", self._stub.UpdateScrapeJob, api.UpdateScrapeJobRequest(
            scrape_job=job, update_mask=field_mask_pb2.FieldMask(paths=sorted(fields))))

    def find_similar(self, *, sha256: str, perceptual_hash: str, max_distance: int) -> list[SimilarImageInfo]:
        reply = self._call("FindSimilarImages", self._stub.FindSimilarImages, api.FindSimilarImagesRequest(
            sha256=sha256, perceptual_hash=perceptual_hash, max_distance=max_distance, page_size=5))
        return [SimilarImageInfo(image_id=match.image.id, sha256=match.image.sha256, distance=match.distance)
                for match in reply.matches]

    def import_image(self, *, data: bytes, filename: str, album_id: str) -> tuple[str, bool]:
        """Uploads a private image into an album; returns its id and whether the bytes were already stored."""
        def requests() -> Iterator[api.UploadImageRequest]:
            yield api.UploadImageRequest(metadata=api.ImageUploadMetadata(
                filename=filename, is_public=False, album_id=album_id, expected_size_bytes=len(data),
                expected_sha256=hashlib.sha256(data).hexdigest()))
            for start in range(0, len(data), CHUNK_BYTES):
                yield api.UploadImageRequest(chunk_data=data[start:start + CHUNK_BYTES])

        reply = self._call("UploadImage", self._stub.UploadImage, requests())
        return reply.image.id, reply.already_existed

    def add_label(self, *, image_id: str, text: str, label_type: str, source_model: str, source_prompt: str,
                  created_by: str) -> None:
        label = res.Label(text=text, label_type=getattr(res, f"LABEL_TYPE_{label_type.upper()}"),
                          source_model=source_model, source_prompt=source_prompt, created_by=created_by)
        self._call("CreateLabel", self._stub.CreateLabel, api.CreateLabelRequest(image_id=image_id, label=label))

    def create_scraped_album(self, *, name: str, description: str, config: dict, request_id: str) -> str:
        generation_config = struct_pb2.Struct()
        generation_config.update(config)
        album = res.Album(name=name[:255], description=description, album_type=res.ALBUM_TYPE_SCRAPED,
                          is_public=False, generation_config=generation_config, created_by="imagineer-scraper")
        return self._call("CreateAlbum", self._stub.CreateAlbum,
                          api.CreateAlbumRequest(album=album, request_id=request_id)).id

"""A client of the catalog for the other services: albums, images, labels, training runs and artifacts.

Errors come out as CatalogError with the gRPC status name, so callers need not know gRPC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2, json_format, struct_pb2

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as api_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer_common.tls import ClientTls, open_channel

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
    def __init__(self, address: str, token: str, timeout: float = 60.0, tls: ClientTls | None = None) -> None:
        self._channel = open_channel(address, tls)
        self._stub = api_grpc.CatalogServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self.address = address

    def close(self) -> None:
        self._channel.close()

    def _call(self, what: str, method, request, **kwargs):
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout, **kwargs)
        except grpc.RpcError as error:
            raise CatalogError(f"catalog {what} failed: {error.code().name}: {error.details()}",
                               error.code().name) from None

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

    def upload_image(self, *, data: bytes, filename: str, generation: common_pb2.GenerationParameters,
                     album_id: str, is_public: bool) -> str:
        def requests() -> Iterator[api.UploadImageRequest]:
            yield api.UploadImageRequest(metadata=api.ImageUploadMetadata(
                filename=filename, generation=generation, is_public=is_public, album_id=album_id,
                expected_size_bytes=len(data), expected_sha256=hashlib.sha256(data).hexdigest()))
            for start in range(0, len(data), CHUNK_BYTES):
                yield api.UploadImageRequest(chunk_data=data[start:start + CHUNK_BYTES])

        return self._call("UploadImage", self._stub.UploadImage, requests()).image.id

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

    def update_training_run(self, run_id: str, **fields) -> None:
        """Sets the named fields: state (lowercase name), progress_percent, current_step, training_loss,
        error_message, artifact_id, total_steps."""
        run = res.TrainingRun(id=run_id)
        for name, value in fields.items():
            if name == "state":
                run.state = JOB_STATES[value]
            else:
                setattr(run, name, value)
        self._call("UpdateTrainingRun", self._stub.UpdateTrainingRun, api.UpdateTrainingRunRequest(
            training_run=run, update_mask=field_mask_pb2.FieldMask(paths=sorted(fields))))

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

        return self._call("UploadArtifact", self._stub.UploadArtifact, requests()).artifact.id

"""The generator's view of the catalog: create albums, upload images, fetch LoRA artifacts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as api_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2

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
    def __init__(self, address: str, token: str, timeout: float = 60.0) -> None:
        self._channel = grpc.insecure_channel(address)
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

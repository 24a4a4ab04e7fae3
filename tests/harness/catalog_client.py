"""Small helpers that drive the catalog's stubs the way a client would."""

from __future__ import annotations

from collections.abc import Iterator

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.common.v1 import common_pb2

CHUNK = 64 * 1024


def upload_requests(data: bytes, filename: str = "image.png", chunk: int = CHUNK,
                    **metadata) -> Iterator[api.UploadImageRequest]:
    generation = metadata.pop("generation", None)
    yield api.UploadImageRequest(metadata=api.ImageUploadMetadata(
        filename=filename, generation=generation or common_pb2.GenerationParameters(), **metadata))
    for start in range(0, len(data), chunk):
        yield api.UploadImageRequest(chunk_data=data[start:start + chunk])


def upload_image(stub, data: bytes, metadata, filename: str = "image.png", **fields) -> api.UploadImageResponse:
    return stub.UploadImage(upload_requests(data, filename, **fields), metadata=metadata)


def download_image(stub, image_id: str, metadata=()) -> tuple[api.FileInfo, bytes]:
    info = None
    parts = []
    for message in stub.DownloadImage(api.DownloadImageRequest(id=image_id), metadata=metadata):
        if message.WhichOneof("payload") == "info":
            info = message.info
        else:
            parts.append(message.chunk_data)
    return info, b"".join(parts)


def artifact_requests(data: bytes, chunk: int = CHUNK, **metadata) -> Iterator[api.UploadArtifactRequest]:
    yield api.UploadArtifactRequest(metadata=api.ArtifactUploadMetadata(**metadata))
    for start in range(0, len(data), chunk):
        yield api.UploadArtifactRequest(chunk_data=data[start:start + chunk])


def download_artifact(stub, artifact_id: str, metadata=()) -> tuple[api.FileInfo, bytes]:
    info = None
    parts = []
    for message in stub.DownloadArtifact(api.DownloadArtifactRequest(id=artifact_id), metadata=metadata):
        if message.WhichOneof("payload") == "info":
            info = message.info
        else:
            parts.append(message.chunk_data)
    return info, b"".join(parts)

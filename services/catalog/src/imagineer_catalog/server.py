"""The catalog's gRPC servicer: each RPC translates the request, calls the domain, translates back.

Authentication and error mapping happen in the shared interceptor; the domain
raises imagineer_common.errors exceptions and never sees gRPC.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import empty_pb2

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as api_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_catalog import albums, artifacts, convert, images, importer, jobs, labels, maintenance, similar
from imagineer_catalog.images import FileDownload
from imagineer_catalog.store import Catalog
from imagineer_common.auth import current_caller
from imagineer_common.errors import InvalidArgument, Unavailable
from imagineer_common.timestamps import timestamp_message

SERVICE_NAME = api.DESCRIPTOR.services_by_name["CatalogService"].full_name
PUBLIC_METHODS = frozenset(
    f"/{SERVICE_NAME}/{name}" for name in (
        "GetImage", "ListImages", "DownloadImage", "GetImageThumbnail", "GetAlbum", "ListAlbums", "ListAlbumImages"))


IMPORT_OUTCOMES = {
    "imported": api.IMPORT_OUTCOME_IMPORTED,
    "already_present": api.IMPORT_OUTCOME_ALREADY_PRESENT,
    "failed": api.IMPORT_OUTCOME_FAILED,
}


class ReadinessGate:
    """Closed while the database is not usable (for example not yet migrated in a cluster)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self.reason = "the catalog is starting"

    def open(self) -> None:
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close(self, reason: str) -> None:
        self.reason = reason
        self._open.clear()

    def check(self) -> None:
        if not self._open.is_set():
            raise Unavailable(self.reason, reason="CATALOG_NOT_READY")


def _upload_parts(requests: Iterator, metadata_type: str) -> tuple[object, Iterator[bytes]]:
    """Splits an upload stream into its first (metadata) message and the following bytes."""
    first = next(requests, None)
    if first is None or first.WhichOneof("payload") != "metadata":
        raise InvalidArgument.for_field("metadata", f"the first message must carry {metadata_type}")

    def chunks() -> Iterator[bytes]:
        for message in requests:
            if message.WhichOneof("payload") != "chunk_data":
                raise InvalidArgument.for_field("metadata", "only the first message may carry metadata")
            yield message.chunk_data
    return first.metadata, chunks()


def _stream_file(download: FileDownload, response_type) -> Iterator:
    yield response_type(info=api.FileInfo(content_type=download.content_type, size_bytes=download.size_bytes,
                                          sha256=download.sha256, filename=download.filename))
    for chunk in download.chunks:
        yield response_type(chunk_data=chunk)


class CatalogServicer(api_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog, gate: ReadinessGate) -> None:
        self._catalog = catalog
        self._gate = gate

    @property
    def catalog(self) -> Catalog:
        self._gate.check()
        return self._catalog

    # Images

    def UploadImage(self, request_iterator, context):
        metadata, chunks = _upload_parts(request_iterator, "ImageUploadMetadata")
        upload = images.ImageUpload(
            filename=metadata.filename, generation=convert.generation_to_domain(metadata.generation),
            is_public=metadata.is_public if metadata.HasField("is_public") else False, is_nsfw=metadata.is_nsfw,
            album_id=metadata.album_id, expected_size_bytes=metadata.expected_size_bytes,
            expected_sha256=metadata.expected_sha256)
        row, existed = images.upload(self.catalog, upload, chunks)
        return api.UploadImageResponse(image=convert.image_message(row), already_existed=existed)

    def GetImage(self, request, context):
        return convert.image_message(images.get(self.catalog, request.id, current_caller()))

    def ListImages(self, request, context):
        if request.order_by not in ("", "create_time desc", "create_time asc"):
            raise InvalidArgument.for_field("order_by", 'must be "create_time desc" or "create_time asc"')
        flt = images.ImageFilter(
            album_id=request.album_id,
            is_public=request.is_public if request.HasField("is_public") else None,
            is_nsfw=request.is_nsfw if request.HasField("is_nsfw") else None,
            label_text=request.label_text.strip(),
            created_after=convert.naive_utc(request.create_time_after, request.HasField("create_time_after")),
            created_before=convert.naive_utc(request.create_time_before, request.HasField("create_time_before")),
            newest_first=request.order_by != "create_time asc",
            in_training_source_album=request.in_training_source_album)
        rows, token = images.list_images(self.catalog, flt, request.page_size, request.page_token, current_caller())
        return api.ListImagesResponse(images=[convert.image_message(r) for r in rows], next_page_token=token)

    def UpdateImage(self, request, context):
        generation = convert.generation_to_domain(request.image.generation)
        row = images.update(self.catalog, request.image.id, list(request.update_mask.paths), request.image.filename,
                            request.image.is_public, request.image.is_nsfw, generation)
        return convert.image_message(row)

    def DeleteImage(self, request, context):
        images.delete(self.catalog, request.id)
        return empty_pb2.Empty()

    def DownloadImage(self, request, context):
        download = images.download(self.catalog, request.id, current_caller())
        yield from _stream_file(download, api.DownloadImageResponse)

    def GetImageThumbnail(self, request, context):
        data, width, height = images.thumbnail(self.catalog, request.id, current_caller())
        return api.ImageThumbnail(image_id=request.id, content_type="image/jpeg", data=data, width=width,
                                  height=height)

    def FindSimilarImages(self, request, context):
        matches = similar.find_similar(self.catalog, perceptual_hash=request.perceptual_hash, sha256=request.sha256,
                                       max_distance=request.max_distance, page_size=request.page_size)
        return api.FindSimilarImagesResponse(matches=[
            api.SimilarImage(image=convert.image_message(match.image), distance=match.distance) for match in matches])

    # Albums

    def CreateAlbum(self, request, context):
        fields = convert.album_fields(request.album, creating=True)
        return convert.album_message(albums.create(self.catalog, fields, request.request_id))

    def GetAlbum(self, request, context):
        return convert.album_message(albums.get(self.catalog, request.id, current_caller()))

    def ListAlbums(self, request, context):
        flt = albums.AlbumFilter(
            album_type=convert.ALBUM_TYPE.text(request.album_type, "album_type"),
            is_training_source=request.is_training_source if request.HasField("is_training_source") else None,
            is_public=request.is_public if request.HasField("is_public") else None)
        views, token = albums.list_albums(self.catalog, flt, request.page_size, request.page_token, current_caller())
        return api.ListAlbumsResponse(albums=[convert.album_message(v) for v in views], next_page_token=token)

    def UpdateAlbum(self, request, context):
        fields = convert.album_fields(request.album, creating=False, paths=list(request.update_mask.paths))
        view = albums.update_album(self.catalog, request.album.id, list(request.update_mask.paths), fields)
        return convert.album_message(view)

    def DeleteAlbum(self, request, context):
        albums.delete(self.catalog, request.id)
        return empty_pb2.Empty()

    def AddAlbumImages(self, request, context):
        position = request.position if request.HasField("position") else None
        change = albums.add_images(self.catalog, request.album_id, list(request.image_ids), position)
        return api.AddAlbumImagesResponse(album=convert.album_message(change.album),
                                          added_image_ids=[str(i) for i in change.added],
                                          already_present_image_ids=[str(i) for i in change.already_present])

    def RemoveAlbumImages(self, request, context):
        change = albums.remove_images(self.catalog, request.album_id, list(request.image_ids))
        return api.RemoveAlbumImagesResponse(album=convert.album_message(change.album),
                                             removed_count=change.removed_count)

    def ReorderAlbumImages(self, request, context):
        view = albums.reorder(self.catalog, request.album_id, list(request.image_ids))
        return api.ReorderAlbumImagesResponse(album=convert.album_message(view))

    def ListAlbumImages(self, request, context):
        entries, token = albums.list_members(self.catalog, request.album_id, request.page_size, request.page_token,
                                             current_caller())
        return api.ListAlbumImagesResponse(
            album_images=[res.AlbumImage(image=convert.image_message(e.image), position=e.position,
                                         added_by=e.added_by, add_time=timestamp_message(e.added_at))
                          for e in entries],
            next_page_token=token)

    # Labels

    def CreateLabel(self, request, context):
        label = request.label
        fields = labels.LabelFields(
            text=label.text, label_type=convert.LABEL_TYPE.text(label.label_type, "label.label_type",
                                                                allow_unspecified=False),
            confidence=label.confidence if label.HasField("confidence") else None,
            source_model=label.source_model, source_prompt=label.source_prompt, created_by=label.created_by)
        return convert.label_message(labels.create(self.catalog, request.image_id, fields))

    def ListLabels(self, request, context):
        rows, token = labels.list_labels(self.catalog, request.image_id,
                                         convert.LABEL_TYPE.text(request.label_type, "label_type"),
                                         request.page_size, request.page_token)
        return api.ListLabelsResponse(labels=[convert.label_message(r) for r in rows], next_page_token=token)

    def DeleteLabel(self, request, context):
        labels.delete(self.catalog, request.id)
        return empty_pb2.Empty()

    # Training runs and scrape jobs

    def CreateTrainingRun(self, request, context):
        fields = convert.job_fields(request.training_run, "training_run")
        return convert.training_run_message(jobs.create_training_run(self.catalog, fields, request.request_id))

    def GetTrainingRun(self, request, context):
        return convert.training_run_message(jobs.get_training_run(self.catalog, request.id))

    def ListTrainingRuns(self, request, context):
        states = [convert.JOB_STATE.text(s, "states", allow_unspecified=False) for s in request.states]
        rows, token = jobs.list_training_runs(self.catalog, states, request.page_size, request.page_token)
        return api.ListTrainingRunsResponse(training_runs=[convert.training_run_message(r) for r in rows],
                                            next_page_token=token)

    def UpdateTrainingRun(self, request, context):
        fields = convert.job_fields(request.training_run, "training_run")
        row = jobs.update_training_run(self.catalog, request.training_run.id, list(request.update_mask.paths), fields)
        return convert.training_run_message(row)

    def CreateScrapeJob(self, request, context):
        fields = convert.job_fields(request.scrape_job, "scrape_job")
        return convert.scrape_job_message(jobs.create_scrape_job(self.catalog, fields, request.request_id))

    def GetScrapeJob(self, request, context):
        return convert.scrape_job_message(jobs.get_scrape_job(self.catalog, request.id))

    def ListScrapeJobs(self, request, context):
        states = [convert.JOB_STATE.text(s, "states", allow_unspecified=False) for s in request.states]
        rows, token = jobs.list_scrape_jobs(self.catalog, states, request.page_size, request.page_token)
        return api.ListScrapeJobsResponse(scrape_jobs=[convert.scrape_job_message(r) for r in rows],
                                          next_page_token=token)

    def UpdateScrapeJob(self, request, context):
        fields = convert.job_fields(request.scrape_job, "scrape_job")
        row = jobs.update_scrape_job(self.catalog, request.scrape_job.id, list(request.update_mask.paths), fields)
        return convert.scrape_job_message(row)

    # Artifacts

    def UploadArtifact(self, request_iterator, context):
        metadata, chunks = _upload_parts(request_iterator, "ArtifactUploadMetadata")
        upload = artifacts.ArtifactUpload(
            name=metadata.name, kind=convert.ARTIFACT_KIND.text(metadata.kind, "metadata.kind"),
            filename=metadata.filename, base_model=metadata.base_model, rank=metadata.rank,
            training_run_id=metadata.training_run_id, metadata=dict(metadata.metadata),
            expected_size_bytes=metadata.expected_size_bytes, expected_sha256=metadata.expected_sha256)
        row, existed = artifacts.upload(self.catalog, upload, chunks)
        return api.UploadArtifactResponse(artifact=convert.artifact_message(row), already_existed=existed)

    def GetArtifact(self, request, context):
        return convert.artifact_message(artifacts.get(self.catalog, request.id))

    def ListArtifacts(self, request, context):
        rows, token = artifacts.list_artifacts(
            self.catalog, convert.ARTIFACT_KIND.text(request.kind, "kind"), request.training_run_id,
            request.base_model, request.page_size, request.page_token)
        return api.ListArtifactsResponse(artifacts=[convert.artifact_message(r) for r in rows], next_page_token=token)

    def DownloadArtifact(self, request, context):
        yield from _stream_file(artifacts.download(self.catalog, request.id), api.DownloadArtifactResponse)

    def DeleteArtifact(self, request, context):
        artifacts.delete(self.catalog, request.id)
        return empty_pb2.Empty()

    # Import

    def ImportOutputs(self, request, context):
        make_public = request.make_public if request.HasField("make_public") else True
        # Validates the folder before the first message goes out.
        updates = importer.import_outputs(self.catalog, Path(request.directory), make_public=make_public)
        for update in updates:
            if isinstance(update, importer.ImportSummary):
                yield api.ImportOutputsResponse(summary=api.ImportSummary(
                    imported=update.imported, already_present=update.already_present, failed=update.failed,
                    albums_created=update.albums_created))
            else:
                yield api.ImportOutputsResponse(file=api.ImportFileResult(
                    relative_path=update.relative_path, outcome=IMPORT_OUTCOMES[update.outcome],
                    image_id=str(update.image_id or ""), album_id=str(update.album_id or ""),
                    message=update.message, files_done=update.files_done, files_total=update.files_total))

    # Maintenance

    def BackupCatalog(self, request, context):
        with maintenance.backup_archive(self.catalog) as archive:
            for chunk in archive.chunks():
                yield api.BackupCatalogResponse(chunk_data=chunk)
            yield api.BackupCatalogResponse(manifest=convert.backup_manifest_message(
                archive.manifest, archive.size_bytes, archive.sha256))

    def RestoreCatalog(self, request_iterator, context):
        catalog = self.catalog
        staged = maintenance.receive_archive(catalog, (message.chunk_data for message in request_iterator))
        try:
            # Other calls wait outside (UNAVAILABLE) while rows and files come back.
            self._gate.close("a restore is in progress; try again when it has finished")
            try:
                result = maintenance.restore_archive(catalog, staged)
            finally:
                self._gate.open()
        finally:
            catalog.blobs.discard(staged)
        return api.RestoreCatalogResponse(manifest=convert.backup_manifest_message(
            result.manifest, result.size_bytes, result.sha256))

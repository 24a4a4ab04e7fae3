"""Backups and restores through the API, on top of ``backup``.

A backup is written to a private folder under the storage root's ``tmp`` and
streamed from there; a restore receives the archive into that folder first
(hashing it on the way) and only then touches the database. At most one
restore runs at a time in a process.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imagineer_catalog import backup, similar
from imagineer_catalog.backup import BackupManifest
from imagineer_catalog.store import Catalog
from imagineer_common.errors import FailedPrecondition, InvalidArgument

READ_CHUNK_BYTES = 256 * 1024
MAX_RESTORE_BYTES = 1 << 40  # the disk is the real limit
_restoring = threading.Lock()


@dataclass(frozen=True)
class Archive:
    """A finished backup archive on disk with what it holds."""

    path: Path
    size_bytes: int
    sha256: str
    manifest: BackupManifest

    def chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK_BYTES):
                yield chunk


@contextmanager
def backup_archive(catalog: Catalog) -> Iterator[Archive]:
    """Takes a consistent backup into a temporary archive, removed when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="backup-api-", dir=catalog.blobs.root / "tmp"))
    try:
        path = folder / "catalog-backup.tar"
        manifest = backup.backup(catalog, path)
        size, digest = _measure(path)
        yield Archive(path=path, size_bytes=size, sha256=digest, manifest=manifest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class RestoreResult:
    manifest: BackupManifest
    size_bytes: int
    sha256: str


def receive_archive(catalog: Catalog, chunks: Iterable[bytes]):
    """Stages an uploaded archive in the storage root's tmp folder (discard it with ``catalog.blobs.discard``)."""
    return catalog.blobs.stage(chunks, max_bytes=MAX_RESTORE_BYTES, field="chunk_data")


def restore_archive(catalog: Catalog, staged) -> RestoreResult:
    """Restores a staged archive into the catalog's own database and storage root, which must be empty."""
    if staged.size_bytes == 0:
        raise InvalidArgument.for_field("chunk_data", "no archive was sent")
    if not _restoring.acquire(blocking=False):
        raise FailedPrecondition("another restore is running in this catalog", reason="RESTORE_RUNNING")
    try:
        url = catalog.db.engine.url.render_as_string(hide_password=False)
        try:
            manifest = backup.restore(staged.temp_path, url, catalog.blobs.root, staged_upload=staged.temp_path)
        except InvalidArgument as error:
            # The archive's name on the server means nothing to the caller; what was wrong with it does.
            message = error.message.replace(f"{staged.temp_path} ", "the uploaded archive ")
            raise InvalidArgument.for_field("chunk_data", message) from None
        # A backup from before revision 0004 has no perceptual hashes; the files are in place now.
        similar.backfill_perceptual_hashes(catalog)
    finally:
        _restoring.release()
    return RestoreResult(manifest=manifest, size_bytes=staged.size_bytes, sha256=staged.sha256)


def _measure(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()

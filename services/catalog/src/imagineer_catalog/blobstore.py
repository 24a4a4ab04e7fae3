"""A content-addressed file store on local disk.

Keys are relative (``sha256/ab/cd/<digest>``), never absolute paths, so a
storage root can move. A write goes to a temporary file first and is renamed
into place only when complete, so a reader never sees half a file. The row that
refers to a blob is committed after the rename: a crash in between leaves a
file that nothing refers to, which `sweep_unreferenced` removes at start-up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imagineer_common.errors import InvalidArgument

CHUNK_BYTES = 1024 * 1024


@dataclass
class StagedBlob:
    """A fully written temporary file, not yet visible under its key."""

    temp_path: Path
    sha256: str
    size_bytes: int

    @property
    def key(self) -> str:
        return key_for(self.sha256)


def key_for(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Serialises "publish + commit row" against "check references + delete file"
        # so a delete never removes bytes that a concurrent upload is about to reuse.
        self.lock = threading.RLock()

    def path(self, key: str) -> Path:
        if not key.startswith("sha256/") or ".." in key:
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def stage(self, chunks: Iterable[bytes], *, max_bytes: int, field: str = "chunk_data",
              durable: bool = True) -> StagedBlob:
        """Writes ``chunks`` to a temporary file, hashing as it goes.

        ``durable=False`` skips the fsync, for files that can be rebuilt (thumbnails).
        """
        digest = hashlib.sha256()
        size = 0
        handle = tempfile.NamedTemporaryFile(dir=self._tmp, delete=False, prefix="upload-")
        temp_path = Path(handle.name)
        try:
            with handle:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise InvalidArgument.for_field(field, f"the file exceeds the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        return StagedBlob(temp_path=temp_path, sha256=digest.hexdigest(), size_bytes=size)

    def stage_bytes(self, data: bytes, *, durable: bool = True) -> StagedBlob:
        return self.stage([data], max_bytes=len(data), durable=durable)

    def publish(self, staged: StagedBlob) -> str:
        """Moves a staged file under its key (or drops it when those bytes are already stored)."""
        target = self.path(staged.key)
        if target.exists():
            staged.temp_path.unlink(missing_ok=True)
            return staged.key
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.temp_path, target)
        return staged.key

    def discard(self, staged: StagedBlob) -> None:
        staged.temp_path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def read_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        with open(self.path(key), "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def keys(self) -> Iterator[str]:
        base = self.root / "sha256"
        if not base.exists():
            return
        for path in base.glob("*/*/*"):
            if path.is_file():
                yield path.relative_to(self.root).as_posix()

    def clear_temporary(self) -> int:
        """Removes unfinished uploads left by a crash; call only when no upload runs."""
        removed = 0
        for path in self._tmp.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        return removed

    def sweep_unreferenced(self, referenced: set[str]) -> int:
        """Deletes blobs no row refers to; call only when no upload runs (at start-up)."""
        removed = 0
        for key in list(self.keys()):
            if key not in referenced:
                self.delete(key)
                removed += 1
        return removed

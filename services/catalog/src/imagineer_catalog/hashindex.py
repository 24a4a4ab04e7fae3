"""Every image's perceptual hash in memory, so a near-duplicate search compares 64-bit integers in bulk instead
of reading every row for every question (a scrape asks once per image it finds).

The rows stay the truth. Before each search the index asks the database for the highest id and the number of
hashed images: new rows (higher ids) are read incrementally; if the count still disagrees (images were deleted,
or a hash was filled in for an old row) the index is read again whole. An image deleted between that check and
the search's own read of the matching rows is dropped by the caller, which reads those rows.
"""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imagineer_catalog.models import ImageRow
from imagineer_common.perceptual import is_perceptual_hash


class HashIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = np.empty(0, dtype=np.int64)
        self._hashes = np.empty(0, dtype=np.uint64)
        self._max_id = 0
        self._rows = 0  # hashed rows read, including any whose hash is malformed (and left out)

    def __len__(self) -> int:
        return len(self._ids)

    def near(self, session: Session, perceptual_hash: str, max_distance: int) -> list[tuple[int, int]]:
        """(image id, differing bits) of every hashed image within ``max_distance`` bits of ``perceptual_hash``."""
        wanted = np.uint64(int(perceptual_hash, 16))
        with self._lock:
            self._catch_up(session)
            bits = np.bitwise_count(self._hashes ^ wanted)
            close = bits <= max_distance
            return list(zip(self._ids[close].tolist(), bits[close].tolist(), strict=True))

    def _catch_up(self, session: Session) -> None:
        max_id, count = session.execute(select(func.max(ImageRow.id), func.count()).where(
            ImageRow.perceptual_hash.is_not(None))).one()
        max_id = max_id or 0
        if count == self._rows and max_id == self._max_id:
            return
        if max_id > self._max_id:
            self._append(session.execute(select(ImageRow.id, ImageRow.perceptual_hash).where(
                ImageRow.id > self._max_id, ImageRow.perceptual_hash.is_not(None))).all(), max_id)
            if count == self._rows:
                return
        self._ids = np.empty(0, dtype=np.int64)
        self._hashes = np.empty(0, dtype=np.uint64)
        self._rows = 0
        self._append(session.execute(select(ImageRow.id, ImageRow.perceptual_hash).where(
            ImageRow.perceptual_hash.is_not(None))).all(), max_id)

    def _append(self, rows, max_id: int) -> None:
        self._rows += len(rows)
        valid = [(image_id, int(value, 16)) for image_id, value in rows if is_perceptual_hash(value)]
        if valid:
            ids, hashes = zip(*valid, strict=True)
            self._ids = np.concatenate([self._ids, np.array(ids, dtype=np.int64)])
            self._hashes = np.concatenate([self._hashes, np.array(hashes, dtype=np.uint64)])
        self._max_id = max_id

"""Near-duplicate search across the whole catalog: images whose perceptual hash is within a Hamming distance
of a given hash, and images with given bytes (sha256). Also fills in the hashes of rows stored before the
catalog computed them (revision 0004 does this when it knows the storage root; start-up catches the rest).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from imagineer_catalog import imaging
from imagineer_catalog.models import ImageRow
from imagineer_catalog.store import Catalog
from imagineer_common.errors import ViolationCollector
from imagineer_common.perceptual import HASH_BITS, is_perceptual_hash

log = logging.getLogger("imagineer.catalog.similar")

MAX_DISTANCE = 16  # a quarter of the bits: beyond that, "similar" means little
DEFAULT_RESULTS, MAX_RESULTS = 20, 100


@dataclass(frozen=True)
class Match:
    image: ImageRow
    distance: int  # differing hash bits; 0 for an image with the very same bytes


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def find_similar(catalog: Catalog, *, perceptual_hash: str, sha256: str, max_distance: int,
                 page_size: int) -> list[Match]:
    """Images with the bytes ``sha256`` and images within ``max_distance`` bits of ``perceptual_hash``: the one
    with the very bytes first, then closest first, then oldest first; at most ``page_size`` (0 = 20, capped at
    100)."""
    perceptual_hash, sha256 = perceptual_hash.strip().lower(), sha256.strip().lower()
    errors = ViolationCollector()
    errors.check(bool(perceptual_hash or sha256), "perceptual_hash", "perceptual_hash or sha256 is required")
    errors.check(not perceptual_hash or is_perceptual_hash(perceptual_hash), "perceptual_hash",
                 f"must be {HASH_BITS // 4} hexadecimal digits")
    errors.check(not sha256 or _is_sha256(sha256), "sha256", "must be 64 hexadecimal digits")
    errors.check(0 <= max_distance <= MAX_DISTANCE, "max_distance", f"must be between 0 and {MAX_DISTANCE}")
    errors.check(page_size >= 0, "page_size", "must not be negative")
    errors.raise_if_any()
    limit = min(page_size or DEFAULT_RESULTS, MAX_RESULTS)
    found: dict[int, int] = {}
    same_bytes: set[int] = set()
    with catalog.db.read() as session:
        if sha256:
            for image_id in session.scalars(select(ImageRow.id).where(ImageRow.content_hash == sha256)):
                found[image_id] = 0
                same_bytes.add(image_id)
        if perceptual_hash:
            for image_id, bits in catalog.hash_index.near(session, perceptual_hash, max_distance):
                found[image_id] = min(bits, found.get(image_id, bits))
        # The image with the very bytes first, then by distance, then oldest first.
        chosen = sorted(found.items(), key=lambda item: (item[1], item[0] not in same_bytes, item[0]))[:limit]
        rows = {row.id: row for row in session.scalars(select(ImageRow).where(
            ImageRow.id.in_([image_id for image_id, _ in chosen])))}
    return [Match(image=rows[image_id], distance=bits) for image_id, bits in chosen if image_id in rows]


def backfill_perceptual_hashes(catalog: Catalog) -> int:
    """Computes the hash of every stored image that has none yet; returns how many were filled in."""
    with catalog.db.read() as session:
        missing = session.execute(select(ImageRow.id, ImageRow.blob_key).where(
            ImageRow.perceptual_hash.is_(None), ImageRow.blob_key.is_not(None))).all()
    filled = 0
    for image_id, key in missing:
        if not catalog.blobs.exists(key):
            continue
        value = imaging.hash_file(catalog.blobs.path(key))
        if not value:
            continue
        with catalog.db.write() as session:
            row = session.get(ImageRow, image_id)
            if row is not None and row.perceptual_hash is None:
                row.perceptual_hash = value
                filled += 1
    return filled

"""The in-memory perceptual-hash index: the same answers as reading every row, kept in step with the rows."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import delete, update

from imagineer_catalog.database import Database, create_catalog_engine
from imagineer_catalog.hashindex import HashIndex
from imagineer_catalog.models import ImageRow
from imagineer_catalog.schema import upgrade_to_head
from imagineer_common.perceptual import distance, is_perceptual_hash


@pytest.fixture
def db(database_url) -> Database:
    upgrade_to_head(database_url)
    database = Database(create_catalog_engine(database_url))
    yield database
    database.engine.dispose()


def add_images(db: Database, hashes: list[str | None], start: int) -> None:
    with db.write() as session:
        session.add_all(ImageRow(filename=f"img-{start + n}.png", perceptual_hash=value)
                        for n, value in enumerate(hashes))


def brute_force(db: Database, wanted: str, max_distance: int) -> set[tuple[int, int]]:
    with db.read() as session:
        rows = session.query(ImageRow.id, ImageRow.perceptual_hash).filter(ImageRow.perceptual_hash.is_not(None))
        return {(image_id, distance(wanted, value)) for image_id, value in rows
                if is_perceptual_hash(value) and distance(wanted, value) <= max_distance}


def near(index: HashIndex, db: Database, wanted: str, max_distance: int) -> set[tuple[int, int]]:
    with db.read() as session:
        return set(index.near(session, wanted, max_distance))


def flipped(value: str, bits: int, rng: random.Random) -> str:
    number = int(value, 16)
    for bit in rng.sample(range(64), bits):
        number ^= 1 << bit
    return f"{number:016x}"


def test_answers_match_reading_every_row_as_rows_come_and_go(db):
    rng = random.Random(7)
    base = f"{rng.getrandbits(64):016x}"
    add_images(db, [flipped(base, n % 12, rng) for n in range(300)] + [None, "not-a-hash-value"], start=0)
    index = HashIndex()
    for max_distance in (0, 3, 8):
        assert near(index, db, base, max_distance) == brute_force(db, base, max_distance)
    assert len(index) == 300  # the malformed and missing hashes are left out

    add_images(db, [base, flipped(base, 1, rng)], start=1000)  # new rows are picked up incrementally
    assert near(index, db, base, 1) == brute_force(db, base, 1)
    assert len(index) == 302

    with db.write() as session:  # deletions force a reload
        session.execute(delete(ImageRow).where(ImageRow.id % 2 == 0))
    assert near(index, db, base, 16) == brute_force(db, base, 16)

    with db.write() as session:  # a hash filled in for an old row (what start-up backfilling does)
        session.execute(update(ImageRow).where(ImageRow.perceptual_hash.is_(None)).values(perceptual_hash=base))
    assert near(index, db, base, 0) == brute_force(db, base, 0)


def test_an_empty_catalog_finds_nothing(db):
    assert near(HashIndex(), db, "0" * 16, 16) == set()

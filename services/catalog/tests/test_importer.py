"""Importing a legacy outputs folder: albums per batch, sidecars, dedup, legacy rows, idempotence."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from imagineer_catalog import albums, images, schema
from imagineer_catalog.blobstore import BlobStore
from imagineer_catalog.database import Database, create_catalog_engine
from imagineer_catalog.importer import ImportEvent, ImportSummary, import_outputs
from imagineer_catalog.models import AlbumImageRow, AlbumRow, ImageRow
from imagineer_catalog.store import Catalog
from imagineer_common.errors import InvalidArgument


@pytest.fixture
def catalog(database_url: str, tmp_path: Path) -> Iterator[Catalog]:
    schema.upgrade_to_head(database_url)
    db = Database(create_catalog_engine(database_url))
    yield Catalog(db=db, blobs=BlobStore(tmp_path / "blobs"))
    db.dispose()


def make_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 6), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def sidecar(image: Path, **values) -> None:
    image.with_suffix(".json").write_text(json.dumps(values))


def run(catalog: Catalog, folder: Path, **kwargs) -> tuple[list[ImportEvent], ImportSummary]:
    updates = list(import_outputs(catalog, folder, **kwargs))
    assert isinstance(updates[-1], ImportSummary)
    events = updates[:-1]
    assert all(isinstance(e, ImportEvent) for e in events)
    return events, updates[-1]  # type: ignore[return-value]


def counts(catalog: Catalog) -> tuple[int, int, int]:
    with catalog.db.read() as session:
        return (session.scalar(select(func.count()).select_from(ImageRow)),
                session.scalar(select(func.count()).select_from(AlbumRow)),
                session.scalar(select(func.count()).select_from(AlbumImageRow)))


def album_members(catalog: Catalog, album_id: int) -> list[str]:
    with catalog.db.read() as session:
        return list(session.scalars(
            select(ImageRow.filename).join(AlbumImageRow, AlbumImageRow.image_id == ImageRow.id)
            .where(AlbumImageRow.album_id == album_id).order_by(AlbumImageRow.sort_order, AlbumImageRow.id)))


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    # Written out of order, so sorting is what puts them in order.
    make_image(root / "batch_b" / "b_002.png", (0, 0, 200))
    make_image(root / "batch_b" / "b_001.png", (0, 0, 100))
    make_image(root / "batch_a" / "a_003.JPG", (30, 0, 0), fmt="JPEG")
    make_image(root / "batch_a" / "a_001.png", (10, 0, 0))
    make_image(root / "batch_a" / "a_002.webp", (20, 0, 0), fmt="WEBP")
    make_image(root / "single.png", (5, 5, 5))
    (root / "batch_a" / "notes.txt").write_text("not an image, not counted")
    (root / ".hidden").mkdir()
    make_image(root / ".hidden" / "skip.png", (1, 2, 3))
    return root


def test_subfolders_become_batch_albums_in_sorted_order(catalog: Catalog, outputs: Path) -> None:
    events, summary = run(catalog, outputs)

    assert [e.relative_path for e in events] == [
        "single.png", "batch_a/a_001.png", "batch_a/a_002.webp", "batch_a/a_003.JPG",
        "batch_b/b_001.png", "batch_b/b_002.png"]
    assert [e.outcome for e in events] == ["imported"] * 6
    assert [(e.files_done, e.files_total) for e in events] == [(i, 6) for i in range(1, 7)]
    assert summary == ImportSummary(imported=6, already_present=0, failed=0, albums_created=2)

    assert events[0].album_id is None
    with catalog.db.read() as session:
        albums = {a.name: a for a in session.scalars(select(AlbumRow))}
        single = session.get(ImageRow, events[0].image_id)
        assert single.blob_key and catalog.blobs.exists(single.blob_key)
        assert session.scalar(select(func.count()).select_from(AlbumImageRow)
                              .where(AlbumImageRow.image_id == single.id)) == 0
    assert set(albums) == {"batch_a", "batch_b"}
    assert {a.album_type for a in albums.values()} == {"batch"}
    assert all(a.is_public for a in albums.values())
    assert album_members(catalog, albums["batch_a"].id) == ["a_001.png", "a_002.webp", "a_003.JPG"]
    assert album_members(catalog, albums["batch_b"].id) == ["b_001.png", "b_002.png"]
    assert {e.album_id for e in events[1:4]} == {albums["batch_a"].id}


def test_sidecar_metadata_and_mtime_land_on_the_image(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    image = make_image(root / "batch" / "cat.png", (1, 1, 1), size=(16, 12))
    sidecar(image, prompt="a cat", negative_prompt="blurry", seed=1234567890123, steps=30, guidance_scale=7.5,
            width=16, height=12, loras=[{"path": "/loras/style.safetensors", "weight": 0.6}])
    mtime = datetime(2024, 3, 1, 12, 30, 15).timestamp()
    os.utime(image, (mtime, mtime))

    events, summary = run(catalog, root, make_public=False)

    assert summary.imported == 1 and events[0].message == ""
    with catalog.db.read() as session:
        row = session.get(ImageRow, events[0].image_id)
    gen = images.generation_from_row(row)
    assert (gen.prompt, gen.negative_prompt, gen.seed, gen.steps, gen.guidance_scale) == \
        ("a cat", "blurry", 1234567890123, 30, 7.5)
    assert (row.width, row.height) == (16, 12)
    assert gen.loras == [images.LoraUse(artifact_id="", name="/loras/style.safetensors", weight=0.6)]
    assert row.is_public is False
    assert row.created_at == datetime.fromtimestamp(mtime, UTC).replace(tzinfo=None)


def test_broken_image_and_bad_sidecar_are_handled_per_file(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    good = make_image(root / "batch" / "a_good.png", (1, 0, 0))
    sidecar(good, prompt="fine", seed=-5, steps="many")  # two bad fields, the rest kept
    malformed = make_image(root / "batch" / "b_malformed.png", (2, 0, 0))
    malformed.with_suffix(".json").write_text("{not json")
    (root / "batch" / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (root / "batch" / "d_empty.jpg").write_bytes(b"")
    wrong_size = make_image(root / "batch" / "e_size.png", (3, 0, 0), size=(8, 6))
    sidecar(wrong_size, prompt="sized", width=512, height=512)

    events, summary = run(catalog, root)

    by_name = {e.relative_path.split("/")[-1]: e for e in events}
    assert summary == ImportSummary(imported=3, already_present=0, failed=2, albums_created=1)
    assert by_name["a_good.png"].outcome == "imported"
    assert "seed" in by_name["a_good.png"].message and "steps" in by_name["a_good.png"].message
    assert by_name["b_malformed.png"].outcome == "imported"
    assert "without generation data" in by_name["b_malformed.png"].message
    assert by_name["c_broken.png"].outcome == "failed" and by_name["c_broken.png"].image_id is None
    assert by_name["c_broken.png"].message.startswith("not a readable image")
    assert "upload-" not in by_name["c_broken.png"].message
    assert by_name["d_empty.jpg"].outcome == "failed" and by_name["d_empty.jpg"].message == "the file is empty"
    assert by_name["e_size.png"].outcome == "imported" and "8x6" in by_name["e_size.png"].message
    with catalog.db.read() as session:
        good_row = session.get(ImageRow, by_name["a_good.png"].image_id)
        sized_row = session.get(ImageRow, by_name["e_size.png"].image_id)
    assert (good_row.prompt, good_row.seed, good_row.steps) == ("fine", None, None)
    assert (sized_row.prompt, sized_row.width, sized_row.height) == ("sized", 8, 6)


def test_second_run_adds_nothing(catalog: Catalog, outputs: Path) -> None:
    first, _ = run(catalog, outputs)
    before = counts(catalog)

    second, summary = run(catalog, outputs)

    assert counts(catalog) == before
    assert [e.outcome for e in second] == ["already_present"] * len(first)
    assert [e.image_id for e in second] == [e.image_id for e in first]
    assert [e.album_id for e in second] == [e.album_id for e in first]
    assert summary == ImportSummary(imported=0, already_present=len(first), failed=0, albums_created=0)


def test_same_bytes_in_two_batches_is_one_image_in_both_albums(catalog: Catalog, tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    make_image(root / "one" / "x.png", (9, 9, 9))
    make_image(root / "two" / "x_copy.png", (9, 9, 9))

    events, summary = run(catalog, root)

    assert [e.outcome for e in events] == ["imported", "already_present"]
    assert events[0].image_id == events[1].image_id
    assert summary.albums_created == 2
    assert album_members(catalog, events[1].album_id) == ["x.png"]


def test_existing_batch_album_is_reused(catalog: Catalog, tmp_path: Path) -> None:
    existing = albums.create(catalog, albums.AlbumFields(name="batch_7", album_type="batch")).row.id
    albums.create(catalog, albums.AlbumFields(name="batch_7", album_type="manual"))
    make_image(tmp_path / "outputs" / "batch_7" / "p.png", (4, 4, 4))

    events, summary = run(catalog, tmp_path / "outputs")

    assert summary.albums_created == 0
    assert events[0].album_id == existing


def test_legacy_row_is_attached_not_duplicated(catalog: Catalog, tmp_path: Path) -> None:
    with catalog.db.write() as session:
        legacy = ImageRow(filename="x.png", file_path="/home/old/outputs/batch/x.png", prompt="legacy prompt",
                          is_public=True, created_at=datetime(2023, 1, 1))
        session.add(legacy)
        session.flush()
        legacy_id = legacy.id
    make_image(tmp_path / "outputs" / "batch" / "x.png", (7, 7, 7), size=(10, 4))

    events, summary = run(catalog, tmp_path / "outputs")

    assert events[0].outcome == "imported"
    assert events[0].image_id == legacy_id
    assert f"attached to legacy image {legacy_id}" in events[0].message
    assert summary.imported == 1
    with catalog.db.read() as session:
        row = session.get(ImageRow, legacy_id)
        assert session.scalar(select(func.count()).select_from(ImageRow)) == 1
    assert row.blob_key and catalog.blobs.exists(row.blob_key) and row.content_hash
    assert (row.width, row.height, row.prompt, row.created_at) == (10, 4, "legacy prompt", datetime(2023, 1, 1))
    assert album_members(catalog, events[0].album_id) == ["x.png"]

    again, _ = run(catalog, tmp_path / "outputs")
    assert again[0].outcome == "already_present" and again[0].image_id == legacy_id


def test_legacy_row_goes_to_the_file_its_path_names(catalog: Catalog, tmp_path: Path) -> None:
    with catalog.db.write() as session:
        legacy = ImageRow(filename="x.png", file_path="C:\\old\\outputs\\second\\x.png")
        session.add(legacy)
        session.flush()
        legacy_id = legacy.id
    make_image(tmp_path / "outputs" / "first" / "x.png", (1, 1, 1))
    make_image(tmp_path / "outputs" / "second" / "x.png", (2, 2, 2))

    events, _ = run(catalog, tmp_path / "outputs")

    assert [e.outcome for e in events] == ["imported", "imported"]
    assert events[1].image_id == legacy_id and "legacy" in events[1].message
    assert events[0].image_id != legacy_id and "legacy" not in events[0].message


def test_bad_directory_is_refused_at_the_call(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        import_outputs(catalog, tmp_path / "missing")
    with pytest.raises(InvalidArgument):
        import_outputs(catalog, Path("relative/outputs"))


def test_empty_folder_yields_only_a_summary(catalog: Catalog, tmp_path: Path) -> None:
    (tmp_path / "outputs" / "empty_batch").mkdir(parents=True)
    updates = list(import_outputs(catalog, tmp_path / "outputs"))
    assert updates == [ImportSummary()]
    assert counts(catalog) == (0, 0, 0)

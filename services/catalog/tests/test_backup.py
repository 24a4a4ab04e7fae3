"""Backup and restore: round trips across SQLite and PostgreSQL, refusals, and consistency under writes."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image
from sqlalchemy import Engine, create_engine, func, inspect, select, text

from imagineer_catalog import albums, artifacts, images, jobs, labels, schema
from imagineer_catalog.backup import BackupManifest, backup, read_manifest, restore
from imagineer_catalog.blobstore import BlobStore
from imagineer_catalog.database import Database, create_catalog_engine
from imagineer_catalog.models import Base, ImageRow, MigrationHistoryRow
from imagineer_catalog.store import Catalog, referenced_blob_keys
from imagineer_common.auth import ADMIN
from imagineer_common.errors import FailedPrecondition, InvalidArgument

POSTGRES_ADMIN_DSN = os.environ.get("IMAGINEER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test") \
    .replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def new_postgres_url() -> Iterator[Callable[[], str]]:
    """Makes as many fresh PostgreSQL databases as a test needs; drops them afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"imagineer_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"

    yield make
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_catalog(url: str, storage: Path) -> Catalog:
    schema.upgrade_to_head(url)
    return Catalog(db=Database(create_catalog_engine(url)), blobs=BlobStore(storage))


@pytest.fixture
def catalog(database_url: str, tmp_path: Path) -> Iterator[Catalog]:
    made = open_catalog(database_url, tmp_path / "blobs")
    yield made
    made.db.dispose()


def png_bytes(seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def populate(catalog: Catalog) -> None:
    """A bit of everything, through the domain functions."""
    album = albums.create(catalog, albums.AlbumFields(name="Cats", album_type="set", is_public=True,
                                                      is_training_source=True, generation_config={"cfg": 7}),
                          request_id="create-cats").row
    uploaded = []
    for index in range(5):
        gen = images.GenerationRecord(prompt=f"cat {index} — ünïcode", seed=2**62 + index, steps=20,
                                      guidance_scale=7.25, loras=[images.LoraUse("", "style.safetensors", 0.5)])
        row, _ = images.upload(catalog, images.ImageUpload(filename=f"cat_{index}.png", generation=gen,
                                                           is_public=index % 2 == 0, album_id=str(album.id)),
                               [png_bytes(index)])
        uploaded.append(row)
    labels.create(catalog, str(uploaded[0].id), labels.LabelFields(text="tabby", label_type="tag", confidence=0.9))
    labels.create(catalog, str(uploaded[1].id), labels.LabelFields(text="a cat on a mat", label_type="caption"))
    run = jobs.create_training_run(catalog, jobs.JobFields(name="cats v1", album_ids=[str(album.id)],
                                                           config={"rank": 8}), request_id="run-1")
    artifact, _ = artifacts.upload(catalog, artifacts.ArtifactUpload(name="cats lora", kind="lora",
                                                                     filename="cats.safetensors",
                                                                     training_run_id=str(run.id),
                                                                     metadata={"steps": "100"}),
                                   [b"weights" * 1000])
    jobs.update_training_run(catalog, str(run.id), ["state", "artifact_id"],
                             jobs.JobFields(state="running", artifact_id=str(artifact.id)))
    jobs.create_scrape_job(catalog, jobs.JobFields(name="scrape", source_url="https://example.com",
                                                   album_id=str(album.id)))
    with catalog.db.write() as session:
        # A legacy row without a file, and a marker of a legacy script.
        session.add(ImageRow(filename="legacy.png", file_path="/old/legacy.png", is_public=True,
                             created_at=datetime(2023, 5, 6, 7, 8, 9, 123456)))
        session.add(MigrationHistoryRow(name="filesystem_outputs_import_v1", applied_at=datetime(2024, 1, 1),
                                        last_run_at=datetime(2024, 1, 2, 3, 4, 5), details='{"n": 1}'))
    images.delete(catalog, str(uploaded[4].id))  # leaves a gap in the ids


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, through the models' column types, in primary-key order."""
    with engine.connect() as connection:
        return {table.name: [dict(row) for row in connection.execute(
                    select(table).order_by(*table.primary_key.columns)).mappings()]
                for table in Base.metadata.sorted_tables}


def blob_files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in (root / "sha256").glob("*/*/*") if path.is_file()} if (root / "sha256").exists() else {}


def test_round_trip_into_sqlite_and_postgres(catalog: Catalog, tmp_path: Path,
                                             new_postgres_url: Callable[[], str]) -> None:
    populate(catalog)
    archive = tmp_path / "backups" / "catalog.tar"

    manifest = backup(catalog, archive)

    original = dump(catalog.db.engine)
    original_blobs = blob_files(catalog.blobs.root)
    with catalog.db.read() as session:
        assert {b.key for b in manifest.blobs} == referenced_blob_keys(session) == set(original_blobs)
    assert manifest.alembic_revision == schema.head_revision()
    assert manifest.row_counts == {name: len(rows) for name, rows in original.items()}
    assert set(manifest.row_counts) == set(Base.metadata.tables)
    assert manifest.row_counts["request_keys"] == 2 and manifest.row_counts["migration_history"] == 1
    assert read_manifest(archive) == manifest
    assert not [p for p in archive.parent.iterdir() if p.name != "catalog.tar"]  # no temporary file left

    targets = [(f"sqlite:///{tmp_path / 'restored' / 'catalog.db'}", tmp_path / "restored" / "blobs"),
               (new_postgres_url(), tmp_path / "restored_pg" / "blobs")]
    for url, storage in targets:
        restored_manifest = restore(archive, url, storage)
        assert restored_manifest == manifest
        engine = create_catalog_engine(url)
        try:
            assert dump(engine) == original
            with engine.connect() as connection:
                assert schema.current_revision(connection) == schema.head_revision()
        finally:
            engine.dispose()
        assert blob_files(storage) == original_blobs

        # New rows get fresh ids (the PostgreSQL sequences were moved past the restored ids).
        restored = open_catalog(url, storage)
        try:
            album = albums.create(restored, albums.AlbumFields(name="after restore"))
            row, existed = images.upload(restored, images.ImageUpload(filename="new.png"), [png_bytes(999)])
            assert not existed
            assert album.row.id > max(r["id"] for r in original["albums"])
            assert row.id > max(r["id"] for r in original["images"])
            # A restored file is served again.
            first = original["images"][0]
            assert b"".join(images.download(restored, str(first["id"]), ADMIN).chunks) == \
                original_blobs[first["blob_key"]]
        finally:
            restored.db.dispose()


def test_restore_refuses_a_non_empty_target_and_changes_nothing(catalog: Catalog, tmp_path: Path) -> None:
    populate(catalog)
    archive = tmp_path / "catalog.tar"
    backup(catalog, archive)
    before, before_blobs = dump(catalog.db.engine), blob_files(catalog.blobs.root)

    # Into the very database and storage it came from.
    with pytest.raises(FailedPrecondition, match="not empty"):
        restore(archive, str(catalog.db.engine.url.render_as_string(hide_password=False)), tmp_path / "fresh")
    assert dump(catalog.db.engine) == before

    # An empty database but a storage root that holds files.
    empty_url = f"sqlite:///{tmp_path / 'empty' / 'catalog.db'}"
    with pytest.raises(FailedPrecondition, match="storage root"):
        restore(archive, empty_url, catalog.blobs.root)
    assert blob_files(catalog.blobs.root) == before_blobs
    assert not (tmp_path / "empty" / "catalog.db").exists()

    # A database with someone else's tables.
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = create_engine(other_url)
    with other.begin() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    with pytest.raises(FailedPrecondition, match="not an empty catalog schema"):
        restore(archive, other_url, tmp_path / "other_blobs")
    with other.connect() as connection:
        assert inspect(connection).get_table_names() == ["notes"]
    other.dispose()
    assert not (tmp_path / "other_blobs").exists()


def test_restore_accepts_an_empty_schema_at_head(catalog: Catalog, tmp_path: Path) -> None:
    populate(catalog)
    archive = tmp_path / "catalog.tar"
    backup(catalog, archive)
    url = f"sqlite:///{tmp_path / 'target.db'}"
    open_catalog(url, tmp_path / "target_blobs").db.dispose()  # a catalog that started once, never used

    restore(archive, url, tmp_path / "target_blobs")

    engine = create_catalog_engine(url)
    assert dump(engine) == dump(catalog.db.engine)
    engine.dispose()


def test_backup_is_consistent_while_uploads_and_deletes_run(catalog: Catalog, tmp_path: Path) -> None:
    album = albums.create(catalog, albums.AlbumFields(name="busy")).row
    stop = threading.Event()
    failures: list[BaseException] = []
    written = [0]

    def writer() -> None:
        seed = 1000
        try:
            while not stop.is_set():
                seed += 1
                row, _ = images.upload(catalog, images.ImageUpload(filename=f"busy_{seed}.png",
                                                                   album_id=str(album.id)), [png_bytes(seed)])
                labels.create(catalog, str(row.id), labels.LabelFields(text=f"tag {seed}", label_type="tag"))
                if seed % 3 == 0:  # deletes take files away while backups copy them
                    images.delete(catalog, str(row.id))
                written[0] += 1
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        manifests = []
        for index in range(4):
            while written[0] < 5 * (index + 1) and thread.is_alive():
                stop.wait(0.01)
            target = tmp_path / f"busy_{index}.tar"
            manifests.append((target, backup(catalog, target)))
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert written[0] >= 20

    for target, manifest in manifests:
        with tarfile.open(target) as archive:
            tables = {name: [json.loads(line) for line in archive.extractfile(f"tables/{name}.jsonl")]
                      for name in manifest.row_counts}
            members = {m.name: m for m in archive.getmembers()}
            assert {name: len(rows) for name, rows in tables.items()} == manifest.row_counts
            image_ids = {row["id"] for row in tables["images"]}
            assert image_ids
            # Rows read at one instant: every membership and label points at an image of the same snapshot.
            assert {row["image_id"] for row in tables["album_images"]} <= image_ids
            assert {row["image_id"] for row in tables["labels"]} <= image_ids
            referenced = {row[c] for row in tables["images"] for c in ("blob_key", "thumbnail_key") if row[c]}
            assert referenced == {blob.key for blob in manifest.blobs}
            for blob in manifest.blobs:
                assert members[f"blobs/{blob.key}"].size == blob.size_bytes
        # And each of them restores.
        restore(target, f"sqlite:///{target.with_suffix('.db')}", target.with_suffix(".blobs"))


def _rewrite(source: Path, target: Path, change: Callable[[str, bytes], tuple[str, bytes] | None],
             extra: list[tuple[str, bytes]] = ()) -> None:
    with tarfile.open(source) as original, tarfile.open(target, "w") as copy:
        for member in original.getmembers():
            data = original.extractfile(member).read()
            changed = change(member.name, data)
            if changed is None:
                continue
            info = tarfile.TarInfo(changed[0])
            info.size = len(changed[1])
            copy.addfile(info, io.BytesIO(changed[1]))
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            copy.addfile(info, io.BytesIO(data))


@pytest.fixture
def small_backup(tmp_path: Path) -> tuple[Path, BackupManifest]:
    made = open_catalog(f"sqlite:///{tmp_path / 'small.db'}", tmp_path / "small_blobs")
    try:
        images.upload(made, images.ImageUpload(filename="one.png"), [png_bytes(1)])
        archive = tmp_path / "small.tar"
        return archive, backup(made, archive)
    finally:
        made.db.dispose()


def test_path_traversal_member_is_refused(small_backup, tmp_path: Path) -> None:
    archive, _ = small_backup
    evil = tmp_path / "evil.tar"
    _rewrite(archive, evil, lambda name, data: (name, data), extra=[("../escaped.txt", b"gotcha")])

    with pytest.raises(InvalidArgument, match="unsafe path"):
        restore(evil, f"sqlite:///{tmp_path / 'target.db'}", tmp_path / "target_blobs")
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not (tmp_path / "target.db").exists() and not (tmp_path / "target_blobs").exists()

    absolute = tmp_path / "absolute.tar"
    _rewrite(archive, absolute, lambda name, data: (name, data), extra=[("/tmp/escaped.txt", b"gotcha")])
    with pytest.raises(InvalidArgument):
        restore(absolute, f"sqlite:///{tmp_path / 'target.db'}", tmp_path / "target_blobs")


def test_backup_of_an_unknown_revision_is_refused(small_backup, tmp_path: Path) -> None:
    archive, _ = small_backup
    newer = tmp_path / "newer.tar"

    def bump(name: str, data: bytes) -> tuple[str, bytes]:
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest["alembic_revision"] = "0099_from_the_future"
            data = json.dumps(manifest).encode()
        return name, data

    _rewrite(archive, newer, bump)
    with pytest.raises(FailedPrecondition, match="0099_from_the_future"):
        restore(newer, f"sqlite:///{tmp_path / 'target.db'}", tmp_path / "target_blobs")
    assert not (tmp_path / "target.db").exists()


def test_corrupt_blob_is_refused_and_nothing_is_restored(small_backup, tmp_path: Path) -> None:
    archive, _ = small_backup
    corrupt = tmp_path / "corrupt.tar"

    def flip(name: str, data: bytes) -> tuple[str, bytes]:
        if name.startswith("blobs/"):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return name, data

    _rewrite(archive, corrupt, flip)
    url = f"sqlite:///{tmp_path / 'target.db'}"
    with pytest.raises(InvalidArgument, match="corrupt"):
        restore(corrupt, url, tmp_path / "target_blobs")
    assert blob_files(tmp_path / "target_blobs") == {}
    assert list((tmp_path / "target_blobs" / "tmp").iterdir()) == []
    assert not (tmp_path / "target.db").exists()
    restore(archive, url, tmp_path / "target_blobs")  # the target is still empty enough for a good backup


def test_backup_refuses_a_corrupt_stored_file(tmp_path: Path) -> None:
    made = open_catalog(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "blobs")
    try:
        row, _ = images.upload(made, images.ImageUpload(filename="one.png"), [png_bytes(1)])
        path = made.blobs.path(row.blob_key)
        path.write_bytes(b"x" + path.read_bytes()[1:])
        with pytest.raises(FailedPrecondition, match="corrupt"):
            backup(made, tmp_path / "out.tar")
        assert list(tmp_path.glob("*.tar*")) == [] and list(tmp_path.glob(".out.tar*")) == []
    finally:
        made.db.dispose()


def test_older_revision_backup_restores_and_upgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    schema.upgrade_to_head(url)
    schema.downgrade(url, schema.LEGACY_TRAINING_SOURCE_REVISION)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO images (id, filename, file_path, prompt, is_public, created_at) "
                                "VALUES (3, 'old.png', '/old/old.png', 'an old one', 1, '2022-02-02 10:00:00')"))
        connection.execute(text("INSERT INTO albums (id, name, album_type, is_training_source) "
                                "VALUES (2, 'old album', 'batch', 0)"))
        connection.execute(text("INSERT INTO album_images (id, album_id, image_id, sort_order) VALUES (1, 2, 3, 0)"))
    engine.dispose()
    old = Catalog(db=Database(create_catalog_engine(url)), blobs=BlobStore(tmp_path / "old_blobs"))
    archive = tmp_path / "old.tar"
    try:
        manifest = backup(old, archive)
    finally:
        old.db.dispose()
    assert manifest.alembic_revision == schema.LEGACY_TRAINING_SOURCE_REVISION
    assert "artifacts" not in manifest.row_counts and manifest.blobs == []

    target = f"sqlite:///{tmp_path / 'new.db'}"
    restore(archive, target, tmp_path / "new_blobs")

    restored = open_catalog(target, tmp_path / "new_blobs")
    try:
        with restored.db.read() as session:
            assert schema.current_revision(session.connection()) == schema.head_revision()
            row = session.get(ImageRow, 3)
            assert (row.filename, row.prompt, row.created_at) == ("old.png", "an old one", datetime(2022, 2, 2, 10))
            assert session.scalar(select(func.count()).select_from(ImageRow)) == 1
    finally:
        restored.db.dispose()

"""Consistent backups of the whole catalog (rows and files) in one tar file, and restoring them.

Archive layout (an uncompressed tar; restore also reads gzip/bz2/xz)::

    tables/<table>.jsonl   every row of every table, one JSON object a line, in primary-key order
    blobs/<key>            every file a row refers to (images, thumbnails, artifacts), under its blob key
    manifest.json          format version, Alembic revision, row counts, blob keys with sha256 and size

The rows come from one read transaction (REPEATABLE READ on PostgreSQL; on
SQLite in WAL mode a read transaction is a snapshot), so they are consistent
while the service keeps writing. The files they refer to are pinned (hard
links) under the blob store's lock when the snapshot starts, so a concurrent
delete cannot remove one before it is copied. Blobs are content-addressed: each
copied file's sha256 must match its key. The archive is written to a temporary
file beside the target and renamed into place only when complete.

Restoring needs an empty target (no tables, or an empty schema, and an empty
storage root), creates the schema with the project's migrations, inserts every
row with its original id (so a SQLite backup restores into PostgreSQL and back),
and moves the verified files into the storage root last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Integer, MetaData, Table, create_engine, func, inspect, select, text
from sqlalchemy import Date as DateType
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from imagineer_catalog import schema
from imagineer_catalog.database import create_catalog_engine, is_sqlite, sqlite_path
from imagineer_catalog.store import Catalog, utcnow
from imagineer_common.errors import FailedPrecondition, InvalidArgument

FORMAT_NAME = "imagineer-catalog-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TABLES_DIR = "tables"
BLOBS_DIR = "blobs"
# Columns that hold blob keys; a backup carries every file they name.
BLOB_KEY_COLUMNS: dict[str, tuple[str, ...]] = {"images": ("blob_key", "thumbnail_key"), "artifacts": ("blob_key",)}
INSERT_BATCH_ROWS = 500
SNAPSHOT_ATTEMPTS = 3
_KEY_PATTERN = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")
_TABLE_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COPY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class BlobEntry:
    key: str  # "sha256/ab/cd/<digest>", relative to the storage root
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds; ``manifest.json`` in the archive."""

    format_version: int
    created_at: datetime  # naive UTC
    alembic_revision: str
    source_dialect: str  # "sqlite" or "postgresql"
    row_counts: dict[str, int]  # table -> rows, in foreign-key (insert) order
    blobs: list[BlobEntry] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())

    @property
    def blob_bytes(self) -> int:
        return sum(blob.size_bytes for blob in self.blobs)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "created_at": self.created_at.isoformat() + "Z",
            "alembic_revision": self.alembic_revision,
            "source_dialect": self.source_dialect,
            "row_counts": dict(self.row_counts),
            "blobs": [{"key": b.key, "sha256": b.sha256, "size_bytes": b.size_bytes} for b in self.blobs],
        }

    @classmethod
    def from_json(cls, data: Any) -> BackupManifest:
        """Parses a manifest; InvalidArgument when it is not one."""
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
                raise ValueError(f"not an {FORMAT_NAME} manifest")
            created = datetime.fromisoformat(str(data["created_at"]))
            if created.tzinfo is not None:
                created = created.astimezone(UTC).replace(tzinfo=None)
            counts = {str(k): int(v) for k, v in dict(data["row_counts"]).items()}
            blobs = [BlobEntry(key=str(b["key"]), sha256=str(b["sha256"]), size_bytes=int(b["size_bytes"]))
                     for b in data["blobs"]]
            manifest = cls(format_version=int(data["format_version"]), created_at=created,
                           alembic_revision=str(data["alembic_revision"]),
                           source_dialect=str(data.get("source_dialect", "")), row_counts=counts, blobs=blobs)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgument(f"the backup's manifest is malformed: {error}", reason="BACKUP_MALFORMED") from None
        for name, count in counts.items():
            if not _TABLE_PATTERN.fullmatch(name) or count < 0:
                raise InvalidArgument(f"the backup's manifest names a bad table {name!r}", reason="BACKUP_MALFORMED")
        for blob in blobs:
            match = _KEY_PATTERN.fullmatch(blob.key)
            if match is None or match.group(3) != blob.sha256 or not blob.key.startswith(
                    f"sha256/{blob.sha256[:2]}/{blob.sha256[2:4]}/") or blob.size_bytes < 0:
                raise InvalidArgument(f"the backup's manifest lists a bad blob {blob.key!r}", reason="BACKUP_MALFORMED")
        return manifest


# --------------------------------------------------------------------------------------------------- backup


class _BlobVanished(Exception):
    """A file the snapshot refers to disappeared before it was pinned (deleted by another process)."""


def backup(catalog: Catalog, target: Path) -> BackupManifest:
    """Writes a consistent backup of ``catalog`` to ``target`` (a tar file, replaced atomically)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    last_error: _BlobVanished | None = None
    for attempt in range(SNAPSHOT_ATTEMPTS):
        try:
            return _backup_once(catalog, target)
        except _BlobVanished as error:
            # Only possible when another process deletes images; a fresh snapshot no longer refers to it.
            last_error = error
            time.sleep(0.05 * (attempt + 1))
    raise FailedPrecondition(f"could not take a consistent backup: {last_error}", reason="BACKUP_BLOB_MISSING")


def _backup_once(catalog: Catalog, target: Path) -> BackupManifest:
    pin_dir = Path(tempfile.mkdtemp(prefix="backup-", dir=catalog.blobs.root / "tmp"))
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".partial",
                                         delete=False)
    temp_path = Path(handle.name)
    try:
        with handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive:
                revision, dialect, counts, keys = _write_tables(catalog, archive, pin_dir)
                blobs = [_add_blob(archive, pin_dir, key) for key in sorted(keys)]
                manifest = BackupManifest(format_version=FORMAT_VERSION, created_at=utcnow(),
                                          alembic_revision=revision, source_dialect=dialect, row_counts=counts,
                                          blobs=blobs)
                _add_bytes(archive, MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
    return manifest


def _begin_snapshot(session: Session, dialect: str) -> Connection:
    """The session's connection, in a transaction that sees one snapshot until it ends."""
    if dialect == "postgresql":
        connection = session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        level = connection.exec_driver_sql("SHOW transaction_isolation").scalar()
        if level != "repeatable read":
            raise RuntimeError(f"the backup transaction runs at {level!r}, not repeatable read")
        return connection
    return session.connection()


def _reflect(connection: Connection) -> MetaData:
    metadata = MetaData()
    metadata.reflect(bind=connection)
    for name in list(metadata.tables):
        if name == "alembic_version" or name.startswith("sqlite_"):
            metadata.remove(metadata.tables[name])
    return metadata


def _write_tables(catalog: Catalog, archive: tarfile.TarFile,
                  pin_dir: Path) -> tuple[str, str, dict[str, int], set[str]]:
    with catalog.db.read() as session:
        # Under the blob lock no delete is half done (row gone, file not yet), so every file the snapshot
        # refers to exists; pinning them with hard links keeps them until they are copied.
        with catalog.blobs.lock:
            connection = _begin_snapshot(session, catalog.db.dialect)
            revision = schema.current_revision(connection)
            if revision is None:
                raise FailedPrecondition("the database has no schema version; upgrade it before a backup",
                                         reason="DATABASE_NOT_VERSIONED")
            metadata = _reflect(connection)
            keys = _referenced_keys(connection, metadata)
            for key in keys:
                _pin(catalog, pin_dir, key)
        counts: dict[str, int] = {}
        seen_keys: set[str] = set()
        for table in metadata.sorted_tables:
            counts[table.name] = _dump_table(connection, table, archive, seen_keys)
    if not seen_keys <= keys:  # same snapshot, so this cannot happen; never write a backup that lacks a file
        raise RuntimeError(f"rows refer to blobs outside the snapshot: {sorted(seen_keys - keys)[:5]}")
    return revision, catalog.db.dialect, counts, keys


def _referenced_keys(connection: Connection, metadata: MetaData) -> set[str]:
    keys: set[str] = set()
    for table_name, columns in BLOB_KEY_COLUMNS.items():
        table = metadata.tables.get(table_name)
        for column_name in columns:
            if table is None or column_name not in table.c:
                continue
            column = table.c[column_name]
            keys.update(connection.execute(select(column).where(column.is_not(None)).distinct()).scalars())
    return keys


def _pin(catalog: Catalog, pin_dir: Path, key: str) -> None:
    if _KEY_PATTERN.fullmatch(key) is None:
        raise RuntimeError(f"a row refers to a malformed blob key {key!r}")
    source = catalog.blobs.path(key)
    pinned = pin_dir / key
    pinned.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, pinned)
    except FileNotFoundError:
        raise _BlobVanished(f"blob {key} referenced by the database is missing from the storage root") from None
    except OSError:
        try:  # a file system without hard links: copy instead (slower, still under the lock)
            shutil.copyfile(source, pinned)
        except FileNotFoundError:
            raise _BlobVanished(f"blob {key} referenced by the database is missing from the storage root") from None


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        raise TypeError("binary columns are not supported by the backup format")
    if hasattr(value, "__float__"):  # Decimal
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _dump_table(connection: Connection, table: Table, archive: tarfile.TarFile, seen_keys: set[str]) -> int:
    key_columns = [c for c in BLOB_KEY_COLUMNS.get(table.name, ()) if c in table.c]
    order = list(table.primary_key.columns) or list(table.columns)
    statement = select(table).order_by(*order).execution_options(yield_per=1000)
    count = 0
    with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as spool:
        for row in connection.execute(statement).mappings():
            values = dict(row)
            for column in key_columns:
                if values[column] is not None:
                    seen_keys.add(values[column])
            spool.write(json.dumps(values, default=_encode, ensure_ascii=False).encode() + b"\n")
            count += 1
        size = spool.tell()
        spool.seek(0)
        info = tarfile.TarInfo(f"{TABLES_DIR}/{table.name}.jsonl")
        info.size, info.mtime, info.mode = size, int(time.time()), 0o644
        archive.addfile(info, spool)
    return count


class _HashingReader:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def _add_blob(archive: tarfile.TarFile, pin_dir: Path, key: str) -> BlobEntry:
    path = pin_dir / key
    expected = key.rsplit("/", 1)[1]
    with open(path, "rb") as handle:
        info = tarfile.TarInfo(f"{BLOBS_DIR}/{key}")
        info.size, info.mtime, info.mode = os.fstat(handle.fileno()).st_size, int(time.time()), 0o644
        reader = _HashingReader(handle)
        archive.addfile(info, reader)  # type: ignore[arg-type]
    if reader.digest.hexdigest() != expected:
        raise FailedPrecondition(
            f"the stored file {key} is corrupt: its sha256 is {reader.digest.hexdigest()}; "
            "the backup was not written", reason="BLOB_CORRUPT")
    return BlobEntry(key=key, sha256=expected, size_bytes=reader.size)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    archive.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------------------------------- restore


def known_revisions() -> list[str]:
    """Every revision of this catalog's migrations, oldest first."""
    script = ScriptDirectory.from_config(schema.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def read_manifest(source: Path) -> BackupManifest:
    """The manifest of a backup, after checking the archive's members are safe."""
    with _open_archive(source) as archive:
        manifest, _ = _inspect_archive(archive)
    return manifest


def restore(source: Path, database_url: str, storage_root: Path, *,
            staged_upload: Path | None = None) -> BackupManifest:
    """Restores the backup ``source`` into an empty database and an empty storage root.

    Raises InvalidArgument for an archive that is not a sound backup (unsafe
    paths, missing members, wrong checksums) and FailedPrecondition when the
    backup is from a newer catalog or the target is not empty; in those cases
    nothing is changed. A failure while inserting rows rolls the rows back and
    leaves an empty schema, which a later restore accepts. ``staged_upload`` is the archive itself when it was
    received into the storage root's temporary folder (the only file allowed there).
    """
    storage_root = Path(storage_root)
    with _open_archive(source) as archive:
        manifest, members = _inspect_archive(archive)
        revisions = known_revisions()
        if manifest.format_version > FORMAT_VERSION:
            raise FailedPrecondition(f"the backup has format version {manifest.format_version}; this catalog reads "
                                     f"up to {FORMAT_VERSION}; restore it with a newer catalog",
                                     reason="BACKUP_TOO_NEW")
        if manifest.alembic_revision not in revisions:
            raise FailedPrecondition(
                f"the backup was taken at schema revision {manifest.alembic_revision!r}, which this catalog does not "
                f"know (its newest is {revisions[-1]!r}); restore it with the catalog version that made it",
                reason="BACKUP_REVISION_UNKNOWN")
        current = _check_database_empty(database_url, revisions)
        _check_storage_empty(storage_root, staged_upload)

        storage_root.mkdir(parents=True, exist_ok=True)
        (storage_root / "tmp").mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="restore-", dir=storage_root / "tmp"))
        try:
            for blob in manifest.blobs:
                _extract_blob(archive, members[f"{BLOBS_DIR}/{blob.key}"], blob, staging)
            _migrate_to(database_url, current, manifest.alembic_revision, revisions)
            _insert_rows(archive, members, manifest, database_url)
            if manifest.alembic_revision != revisions[-1]:
                schema.upgrade_to_head(database_url)
            for blob in manifest.blobs:
                final = storage_root / blob.key
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / blob.key, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _open_archive(source: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(source, mode="r:*")
    except FileNotFoundError:
        raise InvalidArgument.for_field("source", f"{source} does not exist") from None
    except (tarfile.TarError, OSError) as error:
        raise InvalidArgument(f"{source} is not a readable backup archive: {error}",
                              reason="BACKUP_MALFORMED") from None


def _check_member_name(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts) \
            or re.match(r"[A-Za-z]:", name):
        raise InvalidArgument(f"the backup holds an unsafe path {name!r}; refusing it", reason="BACKUP_UNSAFE_PATH")
    if member.isdir():
        return
    if not member.isfile():
        raise InvalidArgument(f"the backup holds {name!r}, which is not a regular file; refusing it",
                              reason="BACKUP_UNSAFE_PATH")
    is_table = len(parts) == 2 and parts[0] == TABLES_DIR and parts[1].endswith(".jsonl") \
        and _TABLE_PATTERN.fullmatch(parts[1][: -len(".jsonl")]) is not None
    is_blob = parts[0] == BLOBS_DIR and _KEY_PATTERN.fullmatch("/".join(parts[1:])) is not None
    if name != MANIFEST_NAME and not is_table and not is_blob:
        raise InvalidArgument(f"the backup holds an unexpected member {name!r}", reason="BACKUP_MALFORMED")


def _inspect_archive(archive: tarfile.TarFile) -> tuple[BackupManifest, dict[str, tarfile.TarInfo]]:
    """Checks every member before anything is read from it; returns the manifest and the files by name."""
    members: dict[str, tarfile.TarInfo] = {}
    try:
        listing = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidArgument(f"the backup archive is damaged: {error}", reason="BACKUP_MALFORMED") from None
    for member in listing:
        _check_member_name(member)
        if member.isdir():
            continue
        if member.name in members:
            raise InvalidArgument(f"the backup holds {member.name!r} twice", reason="BACKUP_MALFORMED")
        members[member.name] = member
    if MANIFEST_NAME not in members:
        raise InvalidArgument("the archive has no manifest.json; it is not a catalog backup",
                              reason="BACKUP_MALFORMED")
    try:
        data = json.loads(_read_member(archive, members[MANIFEST_NAME]).read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"the backup's manifest is not JSON: {error}", reason="BACKUP_MALFORMED") from None
    manifest = BackupManifest.from_json(data)
    expected = {MANIFEST_NAME} | {f"{TABLES_DIR}/{t}.jsonl" for t in manifest.row_counts} \
        | {f"{BLOBS_DIR}/{b.key}" for b in manifest.blobs}
    if set(members) != expected:
        missing, extra = sorted(expected - set(members)), sorted(set(members) - expected)
        raise InvalidArgument(f"the backup does not match its manifest (missing: {missing[:5] or 'none'}; "
                              f"not listed: {extra[:5] or 'none'})", reason="BACKUP_MALFORMED")
    for blob in manifest.blobs:
        if members[f"{BLOBS_DIR}/{blob.key}"].size != blob.size_bytes:
            raise InvalidArgument(f"blob {blob.key} has another size than its manifest says",
                                  reason="BACKUP_MALFORMED")
    return manifest, members


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    handle = archive.extractfile(member)
    if handle is None:
        raise InvalidArgument(f"cannot read {member.name!r} from the backup", reason="BACKUP_MALFORMED")
    return handle


def _check_database_empty(url: str, revisions: list[str]) -> str | None:
    """The target's revision (None when it has no schema); FailedPrecondition unless it holds no rows."""
    path = sqlite_path(url)
    if is_sqlite(url) and path is not None and not path.exists():
        return None
    engine = create_engine(url)  # not create_catalog_engine: its connect hook would switch SQLite to WAL
    try:
        with engine.connect() as connection:
            names = [n for n in inspect(connection).get_table_names()
                     if n != "alembic_version" and not n.startswith("sqlite_")]
            revision = schema.current_revision(connection)
            if not names:
                return revision if revision in revisions else None
            if revision not in revisions:
                raise FailedPrecondition(
                    f"the target database already has tables ({', '.join(sorted(names)[:5])}) that are not an "
                    "empty catalog schema; restore into a new, empty database", reason="RESTORE_TARGET_NOT_EMPTY")
            metadata = MetaData()
            metadata.reflect(bind=connection, only=names)
            filled = [name for name in sorted(names)
                      if connection.execute(select(func.count()).select_from(metadata.tables[name])).scalar()]
            if filled:
                raise FailedPrecondition(
                    f"the target database is not empty (rows in {', '.join(filled[:5])}); restore into a new, "
                    "empty database", reason="RESTORE_TARGET_NOT_EMPTY")
            return revision
    finally:
        engine.dispose()


def _check_storage_empty(root: Path, staged_upload: Path | None = None) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise FailedPrecondition(f"the storage root {root} is not a folder", reason="RESTORE_TARGET_NOT_EMPTY")
    for entry in root.iterdir():
        if entry.name == "tmp" and entry.is_dir() and all(path == staged_upload for path in entry.iterdir()):
            continue  # what an unused BlobStore leaves behind (plus the archive being restored)
        raise FailedPrecondition(f"the storage root {root} is not empty (it holds {entry.name!r}); restore into an "
                                 "empty folder", reason="RESTORE_TARGET_NOT_EMPTY")


def _extract_blob(archive: tarfile.TarFile, member: tarfile.TarInfo, blob: BlobEntry, staging: Path) -> None:
    target = staging / blob.key
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with _read_member(archive, member) as source, open(target, "wb") as out:
        while chunk := source.read(_COPY_BYTES):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != blob.sha256 or size != blob.size_bytes:
        raise InvalidArgument(f"blob {blob.key} in the backup is corrupt (sha256 {digest.hexdigest()}); "
                              "nothing was restored", reason="BACKUP_CORRUPT")


def _migrate_to(url: str, current: str | None, wanted: str, revisions: list[str]) -> None:
    if wanted == revisions[-1]:
        schema.upgrade_to_head(url)
        return
    if current == wanted:
        return
    engine = create_catalog_engine(url, foreign_keys=False)
    config = schema.alembic_config(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            if current is None or revisions.index(current) < revisions.index(wanted):
                command.upgrade(config, wanted)
            else:  # an empty schema at a later revision
                command.downgrade(config, wanted)
    finally:
        config.attributes.pop("connection", None)
        engine.dispose()


def _decoder(table: Table) -> dict[str, Any]:
    converters: dict[str, Any] = {}
    for column in table.columns:
        if isinstance(column.type, DateTime):
            converters[column.name] = datetime.fromisoformat
        elif isinstance(column.type, DateType):
            converters[column.name] = date.fromisoformat
    return converters


def _rows(archive: tarfile.TarFile, member: tarfile.TarInfo, table: Table) -> Iterator[dict[str, Any]]:
    converters = _decoder(table)
    columns = set(table.c.keys())
    with io.TextIOWrapper(_read_member(archive, member), encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                unknown = set(row) - columns
                if unknown:
                    raise ValueError(f"unknown columns {sorted(unknown)}")
                for name, convert in converters.items():
                    if isinstance(row.get(name), str):
                        row[name] = convert(row[name])
            except ValueError as error:
                raise InvalidArgument(f"{member.name} line {number} is not a valid row: {error}",
                                      reason="BACKUP_MALFORMED") from None
            yield row


def _insert_rows(archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], manifest: BackupManifest,
                 url: str) -> None:
    engine = create_catalog_engine(url)
    blob_keys = {blob.key for blob in manifest.blobs}
    try:
        with engine.begin() as connection:
            metadata = _reflect(connection)
            unknown = set(manifest.row_counts) - set(metadata.tables)
            if unknown:
                raise InvalidArgument(f"the backup has tables the schema at {manifest.alembic_revision} lacks: "
                                      f"{sorted(unknown)}", reason="BACKUP_MALFORMED")
            for table in metadata.sorted_tables:
                if table.name not in manifest.row_counts:
                    continue
                member = members[f"{TABLES_DIR}/{table.name}.jsonl"]
                key_columns = [c for c in BLOB_KEY_COLUMNS.get(table.name, ()) if c in table.c]
                count = 0
                batch: list[dict[str, Any]] = []
                for row in _rows(archive, member, table):
                    for column in key_columns:
                        if row.get(column) is not None and row[column] not in blob_keys:
                            raise InvalidArgument(f"the backup is incomplete: a row of {table.name} refers to "
                                                  f"{row[column]}, which it does not hold", reason="BACKUP_MALFORMED")
                    batch.append(row)
                    count += 1
                    if len(batch) >= INSERT_BATCH_ROWS:
                        _insert(connection, table, batch)
                        batch = []
                if batch:
                    _insert(connection, table, batch)
                if count != manifest.row_counts[table.name]:
                    raise InvalidArgument(f"{member.name} holds {count} rows, the manifest says "
                                          f"{manifest.row_counts[table.name]}", reason="BACKUP_MALFORMED")
            if connection.dialect.name == "postgresql":
                _reset_sequences(connection, metadata)
    finally:
        engine.dispose()


def _insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    try:
        connection.execute(table.insert(), rows)
    except SQLAlchemyError as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise FailedPrecondition(f"the target database refused a row of {table.name}: {detail}; nothing was "
                                 "restored", reason="RESTORE_ROW_REFUSED") from error


def _reset_sequences(connection: Connection, metadata: MetaData) -> None:
    """Moves each id sequence past the restored ids, so new rows do not collide with them."""
    quote = connection.dialect.identifier_preparer.quote
    for table in metadata.sorted_tables:
        primary = list(table.primary_key.columns)
        if len(primary) != 1 or not isinstance(primary[0].type, Integer):
            continue
        name, column = quote(table.name), quote(primary[0].name)
        connection.execute(
            text(f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                 f"COALESCE((SELECT MAX({column}) FROM {name}), 1), "
                 f"(SELECT MAX({column}) FROM {name}) IS NOT NULL)"),
            {"table": name, "column": primary[0].name})

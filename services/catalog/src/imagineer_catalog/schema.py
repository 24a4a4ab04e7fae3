"""Bringing a database to the head revision, including adopting a legacy Flask database.

A database is one of:
- empty: every revision runs from the start;
- versioned (has alembic_version): the missing revisions run;
- legacy (the old app's tables, no alembic_version): recognised by its exact
  columns, stamped at 0001 or 0002 (with or without albums.is_training_source)
  and upgraded, after a copy of the SQLite file is kept beside it;
- anything else: refused, untouched.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect

from imagineer_catalog.database import create_catalog_engine, sqlite_path

log = logging.getLogger("imagineer.catalog.schema")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LEGACY_REVISION = "0001_legacy_schema"
LEGACY_TRAINING_SOURCE_REVISION = "0002_album_training_source"

# Columns of the legacy tables, as documented for the Flask app.
LEGACY_COLUMNS: dict[str, frozenset[str]] = {
    "images": frozenset("id filename file_path thumbnail_path prompt negative_prompt seed steps guidance_scale "
                        "width height lora_config is_nsfw is_public created_at updated_at".split()),
    "labels": frozenset("id image_id label_text confidence label_type source_model source_prompt created_by "
                        "created_at".split()),
    "albums": frozenset("id name description album_type is_public created_by generation_prompt "
                        "generation_config created_at updated_at".split()),
    "album_images": frozenset("id album_id image_id sort_order added_by created_at".split()),
    "scrape_jobs": frozenset("id name description source_url scrape_config status progress images_scraped "
                             "output_directory error_message last_error_at created_at started_at "
                             "completed_at".split()),
    "training_runs": frozenset("id name description dataset_path output_path training_config status progress "
                               "final_checkpoint training_loss validation_loss error_message last_error_at "
                               "created_at started_at completed_at".split()),
}
LEGACY_OPTIONAL_TABLES: dict[str, frozenset[str]] = {
    "migration_history": frozenset("id name applied_at last_run_at details".split()),
}


class UnrecognisedDatabase(Exception):
    """The database has tables but is neither versioned nor a known legacy schema."""


class SchemaNotCurrent(Exception):
    """The database is not at the head revision and upgrading is turned off."""


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str
    adopted_legacy: bool
    backup_path: Path | None


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def classify_legacy(connection: Connection) -> str | None:
    """The revision a legacy database matches, None for an empty database.

    Raises UnrecognisedDatabase for anything else.
    """
    inspector = inspect(connection)
    tables = {t for t in inspector.get_table_names()
              if not t.startswith("sqlite_") and t != "alembic_version"}
    if not tables:
        return None
    unknown = tables - set(LEGACY_COLUMNS) - set(LEGACY_OPTIONAL_TABLES)
    missing = set(LEGACY_COLUMNS) - tables
    if unknown or missing:
        raise UnrecognisedDatabase(
            "the database has tables but no Alembic version and is not an Imagineer legacy database "
            f"(unexpected tables: {sorted(unknown) or 'none'}; missing tables: {sorted(missing) or 'none'}); "
            "nothing was changed")
    has_training_source = False
    for table in sorted(tables):
        columns = frozenset(c["name"] for c in inspector.get_columns(table))
        expected = LEGACY_COLUMNS.get(table) or LEGACY_OPTIONAL_TABLES[table]
        if table == "albums" and columns == expected | {"is_training_source"}:
            has_training_source = True
            continue
        if columns != expected:
            raise UnrecognisedDatabase(
                f"table {table!r} does not match the legacy schema (extra columns: "
                f"{sorted(columns - expected) or 'none'}; missing columns: {sorted(expected - columns) or 'none'}); "
                "nothing was changed")
    return LEGACY_TRAINING_SOURCE_REVISION if has_training_source else LEGACY_REVISION


def _backup_sqlite_file(url: str) -> Path | None:
    path = sqlite_path(url)
    if path is None or not path.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.pre-adoption-{stamp}.bak")
    source, copy = sqlite3.connect(path), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return target


def upgrade_to_head(url: str, *, storage_root: Path | None = None) -> UpgradeResult:
    """Upgrades (or adopts, then upgrades) the database at ``url`` to head. Revisions that read stored files
    (0004 hashes every image) find them under ``storage_root``; without it they leave that to start-up."""
    # Look with a plain engine first: the catalog's engine switches SQLite to WAL on
    # connect, and a database we refuse must stay exactly as it was.
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    inspector_engine = create_engine(url)
    try:
        with inspector_engine.connect() as connection:
            before = current_revision(connection)
            legacy_revision = classify_legacy(connection) if before is None else None
    finally:
        inspector_engine.dispose()
    backup = None
    config = alembic_config(url)
    if storage_root is not None:
        config.attributes["storage_root"] = Path(storage_root)
    engine = create_catalog_engine(url, foreign_keys=False)
    try:
        if legacy_revision is not None:
            backup = _backup_sqlite_file(url)
            log.info("adopting a legacy database at revision %s (copy kept at %s)", legacy_revision, backup)

            def adopt(cfg: Config) -> None:
                # One transaction: a failed upgrade leaves the legacy database as it was.
                _create_missing_optional_tables(cfg.attributes["connection"])
                command.stamp(cfg, legacy_revision)
                command.upgrade(cfg, "head")

            _run(engine, config, adopt)
        else:
            _run(engine, config, lambda cfg: command.upgrade(cfg, "head"))
        with engine.connect() as connection:
            after = current_revision(connection)
    finally:
        engine.dispose()
    assert after is not None
    return UpgradeResult(before=before or legacy_revision, after=after,
                         adopted_legacy=legacy_revision is not None, backup_path=backup)


def downgrade(url: str, revision: str) -> None:
    engine = create_catalog_engine(url, foreign_keys=False)
    try:
        _run(engine, alembic_config(url), lambda cfg: command.downgrade(cfg, revision))
    finally:
        engine.dispose()


def ensure_at_head(engine: Engine) -> None:
    with engine.connect() as connection:
        current = current_revision(connection)
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database is at revision {current or 'none (empty or legacy)'}, this catalog needs {head}; "
            "run `imagineer-catalog migrate` (or enable IMAGINEER_CATALOG_AUTO_UPGRADE)")


def _run(engine: Engine, config: Config, action) -> None:
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        try:
            action(config)
        finally:
            config.attributes.pop("connection", None)


def _create_missing_optional_tables(connection: Connection) -> None:
    # Some legacy databases never had migration_history; revision 0001 has it.
    from imagineer_catalog.models import MigrationHistoryRow

    MigrationHistoryRow.__table__.create(connection, checkfirst=True)

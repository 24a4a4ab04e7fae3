"""`imagineer-catalog`: serve, migrate, import, backup, restore."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from imagineer_catalog.config import CatalogSettings
from imagineer_catalog.schema import SchemaNotCurrent, UnrecognisedDatabase
from imagineer_common.env import SettingError
from imagineer_common.errors import DomainError
from imagineer_common.logs import configure_logging

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def _serve(settings: CatalogSettings, _args) -> int:
    from imagineer_catalog.app import serve

    serve(settings)
    return 0


CHECK_INTERVAL_SECONDS = 2.0


def _check_schema(settings: CatalogSettings, wait_seconds: float) -> int:
    """Exits 0 once the database is at head, 1 if it is not within ``wait_seconds`` (a cluster's init container
    runs this so catalog pods start only after the migration Job)."""
    import time

    from imagineer_catalog import schema
    from imagineer_catalog.database import create_catalog_engine

    deadline = time.monotonic() + wait_seconds
    while True:
        engine = create_catalog_engine(settings.database_url)
        try:
            schema.ensure_at_head(engine)
            print(f"the database is at {schema.head_revision()}, the schema this catalog needs")
            return 0
        except (SchemaNotCurrent, SQLAlchemyError) as error:
            problem = str(error) if isinstance(error, SchemaNotCurrent) else \
                f"database error: {error.__class__.__name__}: {getattr(error, 'orig', None) or error}"
        finally:
            engine.dispose()
        if time.monotonic() >= deadline:
            print(f"not current: {problem}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"waiting: {problem}", file=sys.stderr)
        time.sleep(CHECK_INTERVAL_SECONDS)


def _migrate(settings: CatalogSettings, args) -> int:
    from imagineer_catalog import schema

    if args.check:
        return _check_schema(settings, args.wait)
    try:
        result = schema.upgrade_to_head(settings.database_url, storage_root=settings.storage_root)
    except schema.UnrecognisedDatabase as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if result.adopted_legacy:
        print(f"adopted a legacy Imagineer database (recognised as {result.before}); "
              f"a copy of the original is at {result.backup_path}")
    if result.before == result.after:
        print(f"already at {result.after}")
    else:
        print(f"upgraded from {result.before or 'an empty database'} to {result.after}")
    return 0


def _import(settings: CatalogSettings, args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from imagineer_catalog import importer
    from imagineer_catalog.app import open_catalog, prepare_schema

    prepare_schema(settings)
    catalog = open_catalog(settings)
    console = Console(stderr=True)
    failures: list[str] = []
    try:
        updates = importer.import_outputs(catalog, Path(args.directory).resolve(),
                                          make_public=not args.private)
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("import", total=None)
            for update in updates:
                if isinstance(update, importer.ImportSummary):
                    summary = update
                    continue
                progress.update(task, total=update.files_total, completed=update.files_done)
                if update.outcome == "failed":
                    failures.append(f"{update.relative_path}: {update.message}")
    finally:
        catalog.db.dispose()
    for line in failures:
        console.print(f"[red]failed[/red] {line}")
    print(f"imported {summary.imported}, already present {summary.already_present}, failed {summary.failed}, "
          f"albums created {summary.albums_created}")
    return EXIT_FAILURE if summary.failed else 0


def _backup(settings: CatalogSettings, args) -> int:
    from imagineer_catalog import backup
    from imagineer_catalog.app import open_catalog, prepare_schema

    prepare_schema(settings)
    catalog = open_catalog(settings)
    try:
        manifest = backup.backup(catalog, Path(args.file).resolve())
    finally:
        catalog.db.dispose()
    print(f"backed up {manifest.total_rows} rows and {len(manifest.blobs)} files "
          f"({manifest.blob_bytes} bytes) at revision {manifest.alembic_revision} to {args.file}")
    return 0


def _restore(settings: CatalogSettings, args) -> int:
    from imagineer_catalog import backup

    manifest = backup.restore(Path(args.file).resolve(), settings.database_url, settings.storage_root)
    print(f"restored {manifest.total_rows} rows and {len(manifest.blobs)} files into {settings.storage_root} "
          f"and the configured database")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagineer-catalog",
        description="The Imagineer catalog service. Settings come from IMAGINEER_CATALOG_* variables "
                    "(see docs/database.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gRPC server (upgrades the database first unless turned off)")
    migrating = commands.add_parser(
        "migrate", help="upgrade the database to the latest schema (adopts a legacy database)")
    migrating.add_argument("--check", action="store_true",
                           help="change nothing: exit 0 if the database is at the latest schema, 1 if not")
    migrating.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="with --check: keep checking for up to SECONDS until the schema is current")
    importing = commands.add_parser("import", help="import a legacy outputs folder (subfolders become batch albums)")
    importing.add_argument("directory", help="the outputs folder")
    importing.add_argument("--private", action="store_true", help="make imported images private")
    backing_up = commands.add_parser(
        "backup", help="write a consistent backup (database rows and files) to FILE; safe while the service runs")
    backing_up.add_argument("file", help="the backup file to write (a tar archive)")
    restoring = commands.add_parser(
        "restore", help="restore FILE into the configured (empty) database and storage root")
    restoring.add_argument("file", help="a backup written by `imagineer-catalog backup`")
    return parser


COMMANDS = {"serve": _serve, "migrate": _migrate, "import": _import, "backup": _backup, "restore": _restore}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = CatalogSettings.from_env()
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # One-shot commands print their own results; only the server logs its routine.
    level = settings.log_level if args.command == "serve" else "WARNING"
    configure_logging("catalog", level=level, json_format=settings.log_json)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](settings, args)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SchemaNotCurrent, UnrecognisedDatabase) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except SQLAlchemyError as error:
        print(f"database error: {error.__class__.__name__}: {getattr(error, 'orig', None) or error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:  # a port that cannot be had, a file that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`imagineer-catalog`: serve, migrate, import, backup, restore."""

from __future__ import annotations

import argparse
import logging
import sys

from imagineer_catalog.config import CatalogSettings
from imagineer_common.env import SettingError
from imagineer_common.errors import DomainError
from imagineer_common.logs import configure_logging

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def _serve(settings: CatalogSettings, _args) -> int:
    from imagineer_catalog.app import serve

    serve(settings)
    return 0


def _migrate(settings: CatalogSettings, _args) -> int:
    from imagineer_catalog import schema

    try:
        result = schema.upgrade_to_head(settings.database_url)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagineer-catalog",
        description="The Imagineer catalog service. Settings come from IMAGINEER_CATALOG_* variables "
                    "(see docs/database.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gRPC server (upgrades the database first unless turned off)")
    commands.add_parser("migrate", help="upgrade the database to the latest schema (adopts a legacy database)")
    return parser


COMMANDS = {"serve": _serve, "migrate": _migrate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = CatalogSettings.from_env()
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging("catalog", level=settings.log_level, json_format=settings.log_json)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](settings, args)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

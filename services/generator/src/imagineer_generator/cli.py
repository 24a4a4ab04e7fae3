"""`imagineer-generator serve`."""

from __future__ import annotations

import argparse
import sys

from imagineer_common.env import SettingError
from imagineer_common.logs import configure_logging
from imagineer_generator.config import GeneratorSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagineer-generator",
        description="The Imagineer generator service. Settings come from IMAGINEER_GENERATOR_* variables "
                    "(see docs/generator.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="load the model and serve the gRPC API")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    try:
        settings = GeneratorSettings.from_env()
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("generator", level=settings.log_level, json_format=settings.log_json)
    from imagineer_generator.app import serve

    try:
        serve(settings)
    except OSError as error:  # the port cannot be had
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

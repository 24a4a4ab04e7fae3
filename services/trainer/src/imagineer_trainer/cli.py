"""`imagineer-trainer serve`."""

from __future__ import annotations

import argparse
import sys

from imagineer_common.env import SettingError
from imagineer_common.logs import configure_logging
from imagineer_trainer.config import TrainerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="imagineer-trainer",
        description="The Imagineer trainer service. Settings come from IMAGINEER_TRAINER_* variables "
                    "(see docs/trainer.md).")
    parser.add_subparsers(dest="command", required=True).add_parser(
        "serve", help="serve the gRPC API and train queued runs")
    parser.parse_args(argv)
    try:
        settings = TrainerSettings.from_env()
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("trainer", level=settings.log_level, json_format=settings.log_json)
    from imagineer_trainer.app import serve

    try:
        serve(settings)
    except OSError as error:  # the port cannot be had
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`imagineer-trainer serve`."""

from __future__ import annotations

import sys

from imagineer_common.service_cli import serve_main
from imagineer_trainer.config import TrainerSettings


def main(argv: list[str] | None = None) -> int:
    return serve_main(argv, service="trainer",
                      description="The Imagineer trainer service. Settings come from IMAGINEER_TRAINER_* "
                                  "variables (see docs/trainer.md).",
                      serve_help="serve the gRPC API and train queued runs",
                      read_settings=TrainerSettings.from_env, app_module="imagineer_trainer.app")


if __name__ == "__main__":
    sys.exit(main())

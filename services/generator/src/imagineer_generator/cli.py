"""`imagineer-generator serve`."""

from __future__ import annotations

import sys

from imagineer_common.service_cli import serve_main
from imagineer_generator.config import GeneratorSettings


def main(argv: list[str] | None = None) -> int:
    return serve_main(argv, service="generator",
                      description="The Imagineer generator service. Settings come from IMAGINEER_GENERATOR_* "
                                  "variables (see docs/generator.md).",
                      serve_help="load the model and serve the gRPC API",
                      read_settings=GeneratorSettings.from_env, app_module="imagineer_generator.app")


if __name__ == "__main__":
    sys.exit(main())

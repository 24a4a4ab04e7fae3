"""The `<service> serve` command line the generator and the trainer share: parse, read settings from the
environment, configure logging, then import the service's app and serve.

Exit codes: 0 after a clean stop, 1 when the port cannot be had, 2 for a bad setting or bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from imagineer_common.env import SettingError
from imagineer_common.logs import configure_logging


def serve_main(argv: list[str] | None, *, service: str, description: str, serve_help: str,
               read_settings: Callable[[], Any], app_module: str) -> int:
    """Runs ``imagineer-<service> serve``; ``app_module`` has ``serve(settings)`` and is imported only after the
    settings are known good (it pulls in torch, which takes seconds)."""
    parser = argparse.ArgumentParser(prog=f"imagineer-{service}", description=description)
    parser.add_subparsers(dest="command", required=True).add_parser("serve", help=serve_help)
    parser.parse_args(argv)
    try:
        settings = read_settings()
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(service, level=settings.log_level, json_format=settings.log_json)
    try:
        importlib.import_module(app_module).serve(settings)
    except OSError as error:  # the port cannot be had
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

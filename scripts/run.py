"""`make run`: the three Imagineer services side by side on the embedded defaults until Ctrl-C.

Each service is its own process with its log in <data dir>/logs/<service>.log; the script waits until every one
reports SERVING, prints where things are, then stays in the foreground. Ctrl-C (or SIGTERM) stops them all.
Settings are described in launcher.py (data folder, ports, model).
"""

from __future__ import annotations

import sys
import time

from launcher import LaunchError, Platform, data_dir, interrupt_on_signals, services


def main() -> int:
    platform = Platform()
    interrupt_on_signals()
    try:
        platform.start()
        catalog = services()[0].address
        print(f"data in {data_dir()}; try (in another terminal):")
        print("  .venv/bin/imagineer generate \"a castle at dusk\" -n 2 --out out/"
              + ("" if catalog == "127.0.0.1:50051" else f"   (with IMAGINEER_CATALOG_ADDRESS={catalog} etc.)"))
        print("  .venv/bin/imagineer status   # is everything up?")
        print("  make demo        # the whole story: generate, label, train a LoRA, generate with it")
        print("Ctrl-C stops everything.")
        while not platform.stopped():
            time.sleep(1)
        for service, code in platform.stopped():
            print(f"the {service.name} stopped unexpectedly (code {code}); stopping the rest")
        return 1
    except LaunchError as error:
        print(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        platform.stop()


if __name__ == "__main__":
    sys.exit(main())

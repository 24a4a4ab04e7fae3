"""`make demo`: the whole Imagineer story against the services, starting them first when they are not running.

Uses the services at IMAGINEER_CATALOG_ADDRESS / IMAGINEER_GENERATOR_ADDRESS / IMAGINEER_TRAINER_ADDRESS when all
three answer (for example under `make run`); otherwise starts them like `make run` does and stops them at the end.
"""

from __future__ import annotations

import os
import sys
import time

from launcher import LaunchError, Platform, data_dir, interrupt_on_signals, services, serving
from rich.console import Console

from imagineer_client.client import Imagineer, ImagineerError
from imagineer_client.demo import DemoFailed, run_demo


def main() -> int:
    console = Console()
    addresses = {service.name: os.environ.get(f"IMAGINEER_{service.name.upper()}_ADDRESS", service.address)
                 for service in services()}
    platform = Platform(say=console.print)
    interrupt_on_signals()
    try:
        running = [name for name, address in addresses.items() if serving(address)]
        if len(running) == len(addresses):
            console.print("using the services that are already running: "
                          + ", ".join(f"{name} {address}" for name, address in addresses.items()))
        elif running:
            console.print(f"[red]error:[/red] only {', '.join(running)} of the three services answer; start the "
                          "others (make run) or stop these")
            return 1
        else:
            console.print(f"starting the services (data in {data_dir()})…")
            platform.start()
            addresses = {service.name: service.address for service in services()}
        started = time.monotonic()
        with Imagineer(**addresses) as client:
            run_demo(client, console)
        console.print(f"[green]demo finished in {time.monotonic() - started:.0f} s[/green]; "
                      f"data in {data_dir()}")
        return 0
    except (LaunchError, DemoFailed, ImagineerError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 1
    except KeyboardInterrupt:
        console.print("\ninterrupted")
        return 130
    finally:
        if platform.processes:
            console.print("stopping the services this demo started…")
            platform.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Runs the Imagineer services side by side on the embedded defaults until Ctrl-C.

Each service is its own process with its log in <data dir>/logs/<service>.log; the script waits until every
one reports SERVING, prints where things are, then stays in the foreground. Ctrl-C (or SIGTERM) stops them all.
Ports and the data folder come from the usual IMAGINEER_* variables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DATA_DIR = Path(os.environ.get("IMAGINEER_DATA_DIR", "instance")).resolve()
CATALOG_PORT = os.environ.get("IMAGINEER_CATALOG_PORT", "50051")
GENERATOR_PORT = os.environ.get("IMAGINEER_GENERATOR_PORT", "50052")
TRAINER_PORT = os.environ.get("IMAGINEER_TRAINER_PORT", "50053")
SERVICES = [
    ("catalog", "imagineer_catalog", CATALOG_PORT,
     {"IMAGINEER_CATALOG_DATA_DIR": str(DATA_DIR), "IMAGINEER_CATALOG_PORT": CATALOG_PORT,
      "IMAGINEER_CATALOG_LOG_FORMAT": "text"}),
    ("generator", "imagineer_generator", GENERATOR_PORT,
     {"IMAGINEER_GENERATOR_DATA_DIR": str(DATA_DIR), "IMAGINEER_GENERATOR_PORT": GENERATOR_PORT,
      "IMAGINEER_GENERATOR_CATALOG_ADDRESS": f"127.0.0.1:{CATALOG_PORT}", "IMAGINEER_GENERATOR_LOG_FORMAT": "text",
      "HF_HUB_OFFLINE": "1"}),
    ("trainer", "imagineer_trainer", TRAINER_PORT,
     {"IMAGINEER_TRAINER_DATA_DIR": str(DATA_DIR), "IMAGINEER_TRAINER_PORT": TRAINER_PORT,
      "IMAGINEER_TRAINER_CATALOG_ADDRESS": f"127.0.0.1:{CATALOG_PORT}", "IMAGINEER_TRAINER_LOG_FORMAT": "text",
      "HF_HUB_OFFLINE": "1"}),
]


def serving(port: str) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logs = DATA_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[tuple[str, subprocess.Popen]] = []

    def stop_all(*_args) -> None:
        for _, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # even when started in the background, where SIGINT is ignored
    try:
        for name, module, port, env in SERVICES:
            with open(logs / f"{name}.log", "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", module, "serve"], stdout=log,
                                           stderr=subprocess.STDOUT, env={**os.environ, **env})
            processes.append((name, process))
            deadline = time.monotonic() + 300
            while not serving(port):
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; see {logs / f'{name}.log'}")
                    stop_all()
                    return 1
                if time.monotonic() > deadline:
                    print(f"{name} did not become ready; see {logs / f'{name}.log'}")
                    stop_all()
                    return 1
                time.sleep(0.2)
            print(f"{name:10s} serving on 127.0.0.1:{port}   log: {logs / f'{name}.log'}")
        print(f"data in {DATA_DIR}; try: .venv/bin/imagineer generate \"a castle at dusk\" -n 2 --out out/")
        print("Ctrl-C stops everything.")
        while all(process.poll() is None for _, process in processes):
            time.sleep(1)
        for name, process in processes:
            if process.poll() is not None:
                print(f"{name} stopped unexpectedly (code {process.returncode}); stopping the rest")
        return 1
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())

"""Starts the three Imagineer services as local processes on the embedded defaults and stops them again.

Settings (environment):
    IMAGINEER_DATA_DIR    data folder of all three (default ./instance): database, blobs, journals, logs
    IMAGINEER_PORT_BASE   catalog port; the generator and trainer take the next two (default 50051)
    IMAGINEER_CATALOG_PORT, IMAGINEER_GENERATOR_PORT, IMAGINEER_TRAINER_PORT   one port each, over the base
    IMAGINEER_MODEL       model folder or .safetensors file for generator and trainer (default: the demo model)
    IMAGINEER_TRAINER_LABELER_LOCAL_MODEL   captioning model for AI labels (default: the demo captioner)

Two instances run side by side when they have different data folders and port bases.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT_SECONDS = 300
STOP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int
    env: dict[str, str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def data_dir() -> Path:
    return Path(os.environ.get("IMAGINEER_DATA_DIR", "instance")).resolve()


def services() -> list[Service]:
    """The three services with their settings, in start order (the catalog first: the others need it)."""
    base = int(os.environ.get("IMAGINEER_PORT_BASE", "50051"))
    ports = {name: int(os.environ.get(f"IMAGINEER_{name.upper()}_PORT", base + offset))
             for offset, name in enumerate(("catalog", "generator", "trainer"))}
    folder = str(data_dir())
    catalog = f"127.0.0.1:{ports['catalog']}"
    model = os.environ.get("IMAGINEER_MODEL", "")
    common = {"HF_HUB_OFFLINE": "1"}
    result = [Service("catalog", "imagineer_catalog", ports["catalog"], {
        "IMAGINEER_CATALOG_DATA_DIR": folder, "IMAGINEER_CATALOG_PORT": str(ports["catalog"]),
        "IMAGINEER_CATALOG_LOG_FORMAT": "text"})]
    for name in ("generator", "trainer"):
        prefix = f"IMAGINEER_{name.upper()}_"
        env = {**common, prefix + "DATA_DIR": folder, prefix + "PORT": str(ports[name]),
               prefix + "CATALOG_ADDRESS": catalog, prefix + "LOG_FORMAT": "text"}
        if model:
            env[prefix + "MODEL"] = model
        result.append(Service(name, f"imagineer_{name}", ports[name], env))
    if "IMAGINEER_TRAINER_LABELER_LOCAL_MODEL" not in os.environ:  # AI labeling works out of the box
        result[-1].env["IMAGINEER_TRAINER_LABELER_LOCAL_MODEL"] = "demo"
    return result


def serving(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LaunchError(Exception):
    pass


class Platform:
    """The processes this launcher started; ``stop`` ends them (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self, say=print) -> None:
        self.processes: list[tuple[Service, subprocess.Popen]] = []
        self.say = say
        self.logs = data_dir() / "logs"

    def start(self) -> None:
        """Starts every service in order, each once the previous one is SERVING."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for service in services():
            if port_taken(service.port):
                raise LaunchError(f"port {service.port} for the {service.name} is already in use; stop what holds "
                                  "it or choose other ports with IMAGINEER_PORT_BASE")
            log_path = self.logs / f"{service.name}.log"
            with open(log_path, "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", service.module, "serve"], stdout=log,
                                           stderr=subprocess.STDOUT, env={**os.environ, **service.env})
            self.processes.append((service, process))
            self._wait_until_serving(service, process, log_path)
            self.say(f"{service.name:10s} serving on {service.address}   log: {log_path}")

    def _wait_until_serving(self, service: Service, process: subprocess.Popen, log_path: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not serving(service.address):
            if process.poll() is not None:
                raise LaunchError(f"the {service.name} exited with code {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise LaunchError(f"the {service.name} did not report SERVING within {START_TIMEOUT_SECONDS} s; "
                                  f"see {log_path}")
            time.sleep(0.2)

    def stopped(self) -> list[tuple[Service, int]]:
        """Services that ended on their own, with their exit codes."""
        return [(service, process.returncode) for service, process in self.processes if process.poll() is not None]

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for service, process in reversed(self.processes):
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.say(f"the {service.name} did not stop within {STOP_TIMEOUT_SECONDS} s; killing it")
                process.kill()
                process.wait()
        self.processes.clear()


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, even when started in the background (where SIGINT is ignored)."""
    def _interrupt(*_args) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

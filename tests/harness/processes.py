"""Start a service as its own process on a free port and wait until health says SERVING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ADMIN_TOKEN = "contract-test-token"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(address: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"service at {address} exited with code {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"service at {address} did not report SERVING within {timeout}s")


@dataclass
class ServiceProcess:
    """One service process; its output goes to a log file that failing tests print."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> ServiceProcess:
        environment = {**os.environ, **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            try:
                wait_serving(self.address, timeout, self.process)
            except Exception:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.logs()}") from None
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.process.kill()
            return self.process.wait()

    def dump_stacks(self) -> None:
        """Has a stuck service write its threads' stacks into its log (the services register SIGUSR1 for it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def catalog_process(data_dir: Path, database_url: str | None = None, **extra_env: str) -> ServiceProcess:
    env = {
        "IMAGINEER_CATALOG_DATA_DIR": str(data_dir),
        "IMAGINEER_CATALOG_ADMIN_TOKENS": ADMIN_TOKEN,
        "IMAGINEER_CATALOG_LOG_FORMAT": "text",
        **extra_env,
    }
    if database_url:
        env["IMAGINEER_CATALOG_DATABASE_URL"] = database_url
    service = ServiceProcess(name="catalog", command=[sys.executable, "-m", "imagineer_catalog", "serve"], env=env,
                             log_path=data_dir / "catalog.log")
    service.env["IMAGINEER_CATALOG_PORT"] = str(service.port)
    return service


def generator_process(data_dir: Path, catalog_address: str, **extra_env: str) -> ServiceProcess:
    env = {
        "IMAGINEER_GENERATOR_DATA_DIR": str(data_dir),
        "IMAGINEER_GENERATOR_ADMIN_TOKENS": ADMIN_TOKEN,
        "IMAGINEER_GENERATOR_CATALOG_ADDRESS": catalog_address,
        "IMAGINEER_GENERATOR_CATALOG_TOKEN": ADMIN_TOKEN,
        "IMAGINEER_GENERATOR_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        **extra_env,
    }
    service = ServiceProcess(name="generator", command=[sys.executable, "-m", "imagineer_generator", "serve"],
                             env=env, log_path=data_dir / "generator.log")
    service.env["IMAGINEER_GENERATOR_PORT"] = str(service.port)
    return service


def trainer_process(data_dir: Path, catalog_address: str, **extra_env: str) -> ServiceProcess:
    env = {
        "IMAGINEER_TRAINER_DATA_DIR": str(data_dir),
        "IMAGINEER_TRAINER_ADMIN_TOKENS": ADMIN_TOKEN,
        "IMAGINEER_TRAINER_CATALOG_ADDRESS": catalog_address,
        "IMAGINEER_TRAINER_CATALOG_TOKEN": ADMIN_TOKEN,
        "IMAGINEER_TRAINER_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        **extra_env,
    }
    service = ServiceProcess(name="trainer", command=[sys.executable, "-m", "imagineer_trainer", "serve"],
                             env=env, log_path=data_dir / "trainer.log")
    service.env["IMAGINEER_TRAINER_PORT"] = str(service.port)
    return service

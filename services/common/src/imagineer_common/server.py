"""Start-up shared by the services: a gRPC server with health checking,
reflection, our interceptor, and a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imagineer_common.interceptors import ServiceInterceptor

log = logging.getLogger("imagineer.server")

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    service_names: tuple[str, ...]

    def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.service_names):
            self.health.set(name, status)


def start_server(*, host: str, port: int, register: Iterable[Callable[[grpc.Server], None]],
                 service_names: Iterable[str], interceptor: ServiceInterceptor,
                 max_workers: int = 16) -> RunningServer:
    """Binds and starts the server; health starts as NOT_SERVING until the caller says otherwise."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} (port in use?)")
    server.start()
    running = RunningServer(server=server, health=health_servicer, port=bound, service_names=names)
    running.set_serving(False)
    log.info("listening on %s:%d", host, bound)
    return running


def wait_for_termination(running: RunningServer, *, grace_seconds: float = 10.0,
                         before_stop: Callable[[], None] | None = None,
                         on_stop: Callable[[], None] | None = None) -> None:
    """Blocks until SIGTERM/SIGINT, then stops taking calls and lets running ones finish.

    ``before_stop`` runs while calls are still served (to end long work so its streams can close);
    ``on_stop`` runs after the server has stopped.
    """
    stop = threading.Event()

    def request_stop(signum, _frame):
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    running.set_serving(False)
    if before_stop is not None:
        before_stop()
    running.server.stop(grace_seconds).wait()
    if on_stop is not None:
        on_stop()
    log.info("stopped")

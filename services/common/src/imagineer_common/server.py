"""Start-up shared by the services: a gRPC server with health checking, reflection, our interceptor,
optional TLS, Prometheus metrics and a plaintext health-only port, and a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imagineer_common import metrics
from imagineer_common.channels import server_credentials
from imagineer_common.interceptors import ServiceInterceptor
from imagineer_common.tls import ServerTls

log = logging.getLogger("imagineer.server")

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# A health entry that is SERVING while the process runs, whatever its readiness: liveness probes ask for it,
# so a pod that waits for a migration or loads its model is not restarted ("" tells readiness).
LIVENESS_SERVICE = "liveness"

Built = TypeVar("Built")


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    service_names: tuple[str, ...]
    metrics: metrics.MetricsEndpoint | None = None
    health_server: grpc.Server | None = None
    health_port: int | None = None

    def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.service_names):
            self.health.set(name, status)


_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


def start_server(*, host: str, port: int, register: Iterable[Callable[[grpc.Server], None]],
                 service_names: Iterable[str], interceptor: ServiceInterceptor,
                 max_workers: int = 16, tls: ServerTls | None = None, metrics_port: int | None = None,
                 health_port: int | None = None) -> RunningServer:
    """Binds and starts the server; health starts as NOT_SERVING until the caller says otherwise.

    ``tls`` serves TLS (and requires client certificates when it names a client CA); ``metrics_port``
    serves Prometheus metrics over HTTP (None: off, 0: any free port); ``health_port`` serves only the
    health service, in plaintext, for probes that cannot speak TLS (None: off).
    """
    endpoint = metrics.start_endpoint(host, metrics_port)
    interceptors = [metrics.MetricsInterceptor(), interceptor] if endpoint is not None else [interceptor]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=_OPTIONS,
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = _bind(server, f"{host}:{port}", tls)
    health_server, health_bound = None, None
    if health_port is not None:
        # Same servicer object: the probe port always tells what the main port's health says.
        health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                                    options=_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_bound = _bind(health_server, f"{host}:{health_port}", None)
        health_server.start()
    server.start()
    running = RunningServer(server=server, health=health_servicer, port=bound, service_names=names,
                            metrics=endpoint, health_server=health_server, health_port=health_bound)
    running.set_serving(False)
    health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    if tls is None:
        log.info("listening on %s:%d", host, bound)
    else:
        log.info("listening on %s:%d with TLS%s", host, bound,
                 " (client certificates required)" if tls.client_ca_file else "")
    if health_bound is not None:
        log.info("health checks also on %s:%d (plaintext, health only)", host, health_bound)
    return running


def serve_when_built(running: RunningServer, build: Callable[[], Built], *, on_built: Callable[[Built], None],
                     on_failed: Callable[[str], None], failure: str) -> None:
    """The slow half of a start-up (loading a model): runs ``build``, hands its result to ``on_built`` and
    turns SERVING. When ``build`` fails, logs ``failure`` with the traceback, hands the error's message to
    ``on_failed`` (the RPCs then say why they are unavailable) and stays NOT_SERVING; the liveness entry keeps
    the process from being restarted in a loop."""
    try:
        built = build()
    except Exception as error:
        log.exception(failure)
        on_failed(str(error))
        return
    on_built(built)
    running.set_serving(True)
    log.info("serving on port %d", running.port)


def stop_server(running: RunningServer, grace_seconds: float = 0.0) -> None:
    """Stops the server and what runs beside it (health port, metrics endpoint)."""
    running.server.stop(grace_seconds).wait()
    if running.health_server is not None:
        running.health_server.stop(0).wait()
    if running.metrics is not None:
        running.metrics.stop()


def wait_for_termination(running: RunningServer, *, grace_seconds: float = 10.0,
                         before_stop: Callable[[], None] | None = None,
                         on_stop: Callable[[], None] | None = None) -> None:
    """Blocks until SIGTERM/SIGINT, then stops taking calls and lets running ones finish.

    ``before_stop`` runs while calls are still served (to end long work so its streams can close);
    ``on_stop`` runs after the server has stopped.
    """
    stop = threading.Event()
    # `kill -USR1 <pid>` writes every thread's stack to stderr: how to see where a stuck service waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def request_stop(signum, _frame):
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    running.set_serving(False)
    if before_stop is not None:
        before_stop()
    stop_server(running, grace_seconds)
    if on_stop is not None:
        on_stop()
    log.info("stopped")


def _bind(server: grpc.Server, address: str, tls: ServerTls | None) -> int:
    """The bound port; OSError naming the address when it cannot be had (grpcio raises RuntimeError or returns 0)."""
    try:
        bound = server.add_insecure_port(address) if tls is None else \
            server.add_secure_port(address, server_credentials(tls))
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address}: the port is in use or the address is not this machine's")
    return bound

"""Prometheus metrics: every RPC counted by method and status code with a latency histogram, the HTTP
endpoint that serves them, and small helpers for the gauges and durations a service adds.

Metric names follow the go-grpc-prometheus conventions (``grpc_server_handled_total``,
``grpc_server_handling_seconds``) so the usual dashboards work unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

log = logging.getLogger("imagineer.metrics")

# Short calls (metadata, health) up to long streams (a watch that lasts a whole generation or training).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# Generation jobs take seconds to minutes, training runs minutes to hours.
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200)

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.",
                  ("grpc_type", "grpc_service", "grpc_method"))
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                  ("grpc_type", "grpc_service", "grpc_method", "grpc_code"))
HANDLING_SECONDS = Histogram("grpc_server_handling_seconds",
                             "Time from the start of an RPC to its status (whole stream for streaming RPCs).",
                             ("grpc_type", "grpc_service", "grpc_method"), buckets=LATENCY_BUCKETS)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service or "unknown", name


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if callable(getattr(context, "code", None)) else None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC (health and reflection included) by type, service, method and final status code."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        rpc_type = _rpc_type(handler)
        service, method = _split(handler_call_details.method)
        labels = (rpc_type, service, method)
        if handler.response_streaming:
            name = "stream_stream" if handler.request_streaming else "unary_stream"
            return handler._replace(**{name: _measure_stream(getattr(handler, name), labels)})
        name = "stream_unary" if handler.request_streaming else "unary_unary"
        return handler._replace(**{name: _measure_unary(getattr(handler, name), labels)})


def _record(labels: tuple[str, str, str], code: str, started: float) -> None:
    HANDLED.labels(*labels, code).inc()
    HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - started)


def _measure_unary(behavior: Callable, labels: tuple[str, str, str]) -> Callable:
    def wrapped(request, context):
        STARTED.labels(*labels).inc()
        started = time.perf_counter()
        failed = True
        try:
            reply = behavior(request, context)
            failed = False
            return reply
        finally:
            _record(labels, _code_of(context, failed), started)
    return wrapped


def _measure_stream(behavior: Callable, labels: tuple[str, str, str]) -> Callable:
    def wrapped(request, context):
        STARTED.labels(*labels).inc()
        started = time.perf_counter()
        outcome = "failed"
        try:
            yield from behavior(request, context)
            outcome = "ok"
        except GeneratorExit:  # the client went away mid-stream
            outcome = "cancelled"
            raise
        finally:
            code = "CANCELLED" if outcome == "cancelled" else _code_of(context, outcome == "failed")
            _record(labels, code, started)
    return wrapped


class MetricsEndpoint:
    """The HTTP server that answers ``GET /metrics``; ``port`` is the one actually bound."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host)
        self.port = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_endpoint(host: str, port: int | None) -> MetricsEndpoint | None:
    """Serves metrics on ``port`` (0: any free port); None turns metrics off."""
    return None if port is None else MetricsEndpoint(host, port)


# --- what a service adds --------------------------------------------------------------------------------------

_service_collectors: dict[str, Collector] = {}
_lock = threading.RLock()


def _register(name: str, collector: Collector) -> None:
    """Registers a service's collector, replacing one of the same name (a server started again in-process)."""
    with _lock:
        previous = _service_collectors.pop(name, None)
        if previous is not None:
            REGISTRY.unregister(previous)
        REGISTRY.register(collector)
        _service_collectors[name] = collector


def gauge(name: str, documentation: str, read: Callable[[], float]) -> None:
    """A gauge whose value ``read`` returns at each scrape (queue depth, say)."""
    metric = Gauge(name, documentation, registry=None)
    metric.set_function(read)
    _register(name, metric)


def set_value(name: str, documentation: str, value: float) -> None:
    """A gauge set once (model load time, say)."""
    metric = Gauge(name, documentation, registry=None)
    metric.set(value)
    _register(name, metric)


class _EndedWork(Collector):
    """Durations of work (jobs, runs) observed once each, when a scrape first sees it ended."""

    def __init__(self, name: str, documentation: str, items: Callable[[], Iterable]) -> None:
        self._histogram = Histogram(name, documentation, ("state",), buckets=JOB_BUCKETS, registry=None)
        self._items = items
        self._seen: set[str] = set()
        self._sweep(observe=False)  # what ended before this process started is not counted again

    def _sweep(self, *, observe: bool) -> None:
        for item_id, state, started_at, ended_at in self._items():
            if ended_at is None or item_id in self._seen:
                continue
            self._seen.add(item_id)
            if observe and started_at is not None:
                self._histogram.labels(state).observe(max(0.0, (ended_at - started_at).total_seconds()))

    def describe(self) -> Iterator:
        return iter(self._histogram.describe())

    def collect(self) -> Iterator:
        with _lock:
            self._sweep(observe=True)
        yield from self._histogram.collect()


def ended_work_durations(name: str, documentation: str,
                         items: Callable[[], Iterable[tuple[str, str, datetime | None, datetime | None]]]) -> None:
    """A histogram of how long each piece of work ran, by final state; ``items`` lists
    (id, state, started_at, ended_at) of the work the service remembers."""
    _register(name, _EndedWork(name, documentation, items))

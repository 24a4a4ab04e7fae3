"""The server start-up's cluster features: Prometheus metrics, TLS with client certificates, the health-only port."""

from __future__ import annotations

import datetime
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness.certs import issue, make_ca, make_pki
from harness.processes import free_port
from prometheus_client.parser import text_string_to_metric_families

from imagineer_common import channels, env, metrics, tls
from imagineer_common.interceptors import ServiceInterceptor
from imagineer_common.server import LIVENESS_SERVICE, serve_when_built, start_server, stop_server

HEALTH = "grpc.health.v1.Health"


def _start(**kwargs):
    interceptor = ServiceInterceptor(admin_tokens=["t"], public_methods=(), error_domain="test")
    return start_server(host="127.0.0.1", port=0, register=[], service_names=["test.v1.Probe"],
                        interceptor=interceptor, **kwargs)


def _samples(port: int) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _check(channel: grpc.Channel, service: str = "") -> health_pb2.HealthCheckResponse:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)


def _labels(method: str, **extra: str) -> frozenset:
    return frozenset({"grpc_type": "unary", "grpc_service": HEALTH, "grpc_method": method, **extra}.items())


def test_metrics_count_calls_by_method_and_code_with_latency():
    running = _start(metrics_port=0)
    try:
        assert running.metrics is not None and running.metrics.port > 0
        before = _samples(running.metrics.port)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            _check(channel)
            _check(channel)
            with pytest.raises(grpc.RpcError) as caught:
                _check(channel, "no.such.Service")
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        after = _samples(running.metrics.port)
    finally:
        stop_server(running)

    def grew(name, labels):
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert grew("grpc_server_handled_total", _labels("Check", grpc_code="OK")) == 2
    assert grew("grpc_server_handled_total", _labels("Check", grpc_code="NOT_FOUND")) == 1
    assert grew("grpc_server_started_total", _labels("Check")) == 3
    assert grew("grpc_server_handling_seconds_count", _labels("Check")) == 3
    assert grew("grpc_server_handling_seconds_sum", _labels("Check")) > 0


def test_metrics_are_off_unless_a_port_is_set(monkeypatch):
    monkeypatch.delenv("IMAGINEER_X_METRICS_PORT", raising=False)
    assert env.read_optional_port("IMAGINEER_X_METRICS_PORT") is None
    monkeypatch.setenv("IMAGINEER_X_METRICS_PORT", "0")
    assert env.read_optional_port("IMAGINEER_X_METRICS_PORT") == 0
    monkeypatch.setenv("IMAGINEER_X_METRICS_PORT", "70000")
    with pytest.raises(env.SettingError, match="IMAGINEER_X_METRICS_PORT"):
        env.read_optional_port("IMAGINEER_X_METRICS_PORT")
    running = _start()
    try:
        assert running.metrics is None
    finally:
        stop_server(running)


def test_service_gauges_and_durations_are_observed_once():
    port = free_port()
    endpoint = metrics.start_endpoint("127.0.0.1", port)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    work = [("old", "completed", start, start + datetime.timedelta(seconds=1))]  # ended before start-up
    depth = [3]
    try:
        metrics.gauge("imagineer_test_queue_depth", "test", lambda: depth[0])
        metrics.ended_work_durations("imagineer_test_job_seconds", "test", lambda: list(work))
        work.append(("a", "completed", start, start + datetime.timedelta(seconds=7)))
        work.append(("b", "running", start, None))
        first = _samples(port)
        depth[0] = 5
        work[2] = ("b", "failed", start, start + datetime.timedelta(seconds=2))
        second = _samples(port)
        # registering again (a server started twice in one process) replaces, not fails
        metrics.gauge("imagineer_test_queue_depth", "test", lambda: 1)
        third = _samples(port)
    finally:
        endpoint.stop()
    assert first[("imagineer_test_queue_depth", frozenset())] == 3
    assert second[("imagineer_test_queue_depth", frozenset())] == 5
    assert third[("imagineer_test_queue_depth", frozenset())] == 1
    completed = frozenset({"state": "completed"}.items())
    assert first[("imagineer_test_job_seconds_count", completed)] == 1
    assert first[("imagineer_test_job_seconds_sum", completed)] == 7
    assert second[("imagineer_test_job_seconds_count", completed)] == 1  # not observed twice
    assert second[("imagineer_test_job_seconds_count", frozenset({"state": "failed"}.items()))] == 1


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def _mtls_server(pki, **kwargs):
    return _start(tls=tls.ServerTls(cert_file=pki.server_cert, key_file=pki.server_key,
                                    client_ca_file=pki.ca_cert), **kwargs)


def test_tls_server_accepts_a_client_certificate_and_refuses_clients_without_one(pki, tmp_path):
    running = _mtls_server(pki, health_port=0)
    address = f"127.0.0.1:{running.port}"
    try:
        good = tls.ClientTls(ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key)
        with channels.open_channel(address, good) as channel:
            assert _check(channel).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert _check(channel, "liveness").status == health_pb2.HealthCheckResponse.SERVING

        no_certificate = tls.ClientTls(ca_file=pki.ca_cert, cert_file=None, key_file=None)
        with channels.open_channel(address, no_certificate) as channel, pytest.raises(grpc.RpcError) as caught:
            _check(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        other_ca = make_ca(tmp_path / "other", "someone-else")
        stranger_cert, stranger_key = issue(tmp_path / "other", "stranger", other_ca, server=False)
        stranger = tls.ClientTls(ca_file=pki.ca_cert, cert_file=stranger_cert, key_file=stranger_key)
        with channels.open_channel(address, stranger) as channel, pytest.raises(grpc.RpcError) as caught:
            _check(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        with channels.open_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
            _check(channel)  # plaintext to a TLS port
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        # probes that cannot speak TLS use the plaintext health-only port, which mirrors the main health
        running.set_serving(True)
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            assert _check(channel).status == health_pb2.HealthCheckResponse.SERVING
            assert _check(channel, "test.v1.Probe").status == health_pb2.HealthCheckResponse.SERVING
            reflection = channel.unary_unary("/test.v1.Probe/Anything")
            with pytest.raises(grpc.RpcError) as caught:
                reflection(b"", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # health only, nothing else
    finally:
        stop_server(running)


def test_tls_without_client_ca_serves_any_tls_client(pki):
    running = _start(tls=tls.ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=None))
    try:
        with channels.open_channel(f"127.0.0.1:{running.port}", tls.ClientTls(pki.ca_cert, None, None)) as channel:
            assert _check(channel).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        stop_server(running)


def test_tls_settings_are_read_and_checked(monkeypatch, tmp_path):
    prefix = "IMAGINEER_X_"
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "TLS_CA_FILE"):
        monkeypatch.delenv(prefix + name, raising=False)
    assert tls.server_tls_from_env(prefix) is None and tls.client_tls_from_env(prefix) is None
    monkeypatch.setenv(prefix + "TLS_CERT_FILE", "/certs/tls.crt")
    with pytest.raises(env.SettingError, match="IMAGINEER_X_TLS_KEY_FILE"):
        tls.server_tls_from_env(prefix)
    monkeypatch.setenv(prefix + "TLS_KEY_FILE", "/certs/tls.key")
    monkeypatch.setenv(prefix + "TLS_CLIENT_CA_FILE", "/certs/ca.crt")
    server = tls.server_tls_from_env(prefix)
    assert server is not None and str(server.client_ca_file) == "/certs/ca.crt"
    client = tls.client_tls_from_env(prefix)
    assert client is not None and client.ca_file is None and str(client.cert_file) == "/certs/tls.crt"
    with pytest.raises(env.SettingError, match="cannot read the TLS"):
        channels.server_credentials(tls.ServerTls(tmp_path / "missing.crt", tmp_path / "missing.key", None))



def test_channels_round_robin_over_every_address_a_name_resolves_to():
    """A headless Service's name resolves to every ready pod; our channels spread calls over all of them
    (round_robin), where gRPC's default (pick_first) would send everything to one. Two servers stand in for two
    pods, behind a two-address target."""
    servers = [_start(), _start()]
    servers[0].set_serving(True)  # tell them apart by their health
    target = "ipv4:" + ",".join(f"127.0.0.1:{running.port}" for running in servers)
    try:
        with channels.open_channel(target) as channel:
            spread = {_check(channel).status for _ in range(10)}
        with grpc.insecure_channel(target) as channel:
            default = {_check(channel).status for _ in range(10)}
    finally:
        for running in servers:
            stop_server(running)
    assert spread == {health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING}
    assert len(default) == 1


def test_per_connection_channels_stay_on_one_server_and_spread_over_connections():
    """Generator jobs live in one pod's memory: a client's calls must all reach that pod, while different
    clients land on different pods (the address list is shuffled per channel)."""
    servers = [_start(), _start()]
    servers[0].set_serving(True)
    target = "ipv4:" + ",".join(f"127.0.0.1:{running.port}" for running in servers)
    picked = []
    try:
        for _ in range(24):  # the chance that 24 shuffles all pick the same server is 2 in 16 million
            with channels.open_channel(target, per_connection=True) as channel:
                statuses = {_check(channel).status for _ in range(4)}
            assert len(statuses) == 1, "one channel's calls all go to one server"
            picked.append(statuses.pop())
    finally:
        for running in servers:
            stop_server(running)
    assert set(picked) == {health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING}


@pytest.mark.parametrize("fails", [False, True], ids=["built", "failed"])
def test_serve_when_built_turns_serving_only_after_a_successful_build(fails, caplog):
    running = _start()
    outcome: dict[str, object] = {}

    def build():
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            outcome["while building"] = _check(channel).status
        if fails:
            raise RuntimeError("no weights in /models/x")
        return "the model"

    try:
        serve_when_built(running, build, on_built=lambda built: outcome.update(built=built),
                         on_failed=lambda message: outcome.update(failed=message), failure="could not build")
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            readiness, liveness = _check(channel).status, _check(channel, LIVENESS_SERVICE).status
    finally:
        stop_server(running)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert outcome.pop("while building") == not_serving
    assert liveness == serving, "a failed build must not make the kubelet restart the process in a loop"
    if fails:
        assert outcome == {"failed": "no weights in /models/x"} and readiness == not_serving
        assert "could not build" in caplog.text and "RuntimeError" in caplog.text
    else:
        assert outcome == {"built": "the model"} and readiness == serving

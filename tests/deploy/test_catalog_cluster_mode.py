"""The catalog as the cluster runs it, as a real process: auto-upgrade off until the migration Job has run,
the init container's `migrate --check`, mutual TLS with a client refused without a certificate, metrics
on their own port and one JSON object a log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness.certs import make_pki
from harness.processes import ADMIN_TOKEN, catalog_process, free_port, wait_serving
from prometheus_client.parser import text_string_to_metric_families

from imagineer_common.catalog_client import CatalogClient, CatalogError
from imagineer_common.tls import ClientTls

pytestmark = pytest.mark.slow


def _catalog_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagineer_catalog", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_catalog_in_cluster_mode(tmp_path):
    pki = make_pki(tmp_path / "pki")
    health_port, metrics_port = free_port(), free_port()
    catalog = catalog_process(
        tmp_path / "data",
        IMAGINEER_CATALOG_AUTO_UPGRADE="false",
        IMAGINEER_CATALOG_LOG_FORMAT="json",
        IMAGINEER_CATALOG_TLS_CERT_FILE=str(pki.server_cert),
        IMAGINEER_CATALOG_TLS_KEY_FILE=str(pki.server_key),
        IMAGINEER_CATALOG_TLS_CLIENT_CA_FILE=str(pki.ca_cert),
        IMAGINEER_CATALOG_HEALTH_PORT=str(health_port),
        IMAGINEER_CATALOG_METRICS_PORT=str(metrics_port),
        # gRPC's C core logs refused handshakes as plain text at INFO; the images set this, as here.
        GRPC_VERBOSITY="ERROR",
    )
    health_address = f"127.0.0.1:{health_port}"
    catalog.start(wait=False)
    try:
        # An empty database and auto-upgrade off: the server runs but does not serve.
        check = _catalog_cli(catalog.env, "migrate", "--check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert "imagineer-catalog migrate" in check.stderr
        _wait_for(lambda: _health_or_none(health_address) == health_pb2.HealthCheckResponse.NOT_SERVING)

        # The migration Job's command, then the init container's check passes and the server serves.
        migrate = _catalog_cli(catalog.env, "migrate")
        assert migrate.returncode == 0 and "upgraded" in migrate.stdout, migrate.stdout + migrate.stderr
        check = _catalog_cli(catalog.env, "migrate", "--check", "--wait", "30")
        assert check.returncode == 0, check.stdout + check.stderr
        wait_serving(health_address, timeout=30, process=catalog.process)

        address = f"127.0.0.1:{catalog.port}"
        with_certificate = CatalogClient(address, ADMIN_TOKEN, timeout=10, tls=ClientTls(
            ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key))
        without_certificate = CatalogClient(address, ADMIN_TOKEN, timeout=10,
                                            tls=ClientTls(ca_file=pki.ca_cert, cert_file=None, key_file=None))
        plaintext = CatalogClient(address, ADMIN_TOKEN, timeout=10)
        try:
            with pytest.raises(CatalogError) as caught:
                with_certificate.check_album("999999")
            assert caught.value.code == "NOT_FOUND"  # reached the catalog through TLS
            for refused in (without_certificate, plaintext):
                with pytest.raises(CatalogError) as caught:
                    refused.check_album("999999")
                assert caught.value.code == "UNAVAILABLE"
        finally:
            for client in (with_certificate, without_certificate, plaintext):
                client.close()

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        samples = {(s.name, frozenset(s.labels.items())): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        get_album = {"grpc_type": "unary", "grpc_service": "imagineer.catalog.v1.CatalogService",
                     "grpc_method": "GetAlbum"}
        assert samples[("grpc_server_handled_total", frozenset({**get_album, "grpc_code": "NOT_FOUND"}.items()))] == 1
        assert samples[("grpc_server_handling_seconds_count", frozenset(get_album.items()))] == 1
        assert samples[("imagineer_catalog_schema_ready", frozenset())] == 1
    finally:
        catalog.stop()
    lines = [line for line in catalog.logs().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(entry["service"] == "catalog" and "message" in entry and "level" in entry for entry in entries)
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("not serving: the database is at revision none") for message in messages)
    assert any("client certificates required" in message for message in messages)


def _health_or_none(address: str) -> int | None:
    try:
        return _health(address)
    except grpc.RpcError:
        return None


def _wait_for(condition, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)

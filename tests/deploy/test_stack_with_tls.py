"""The three services as the production overlay configures them, as real processes: mutual TLS everywhere
(generator and trainer present client certificates to the catalog), probes on the plaintext health-only
ports, metrics on their own ports, and the `imagineer` CLI over TLS through a dns:/// target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from harness.certs import make_pki
from harness.processes import (
    ADMIN_TOKEN,
    catalog_process,
    free_port,
    generator_process,
    trainer_process,
    wait_serving,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


def _metrics(port: int) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _tls_env(prefix: str, pki, *, catalog_client: bool) -> dict[str, str]:
    env = {f"{prefix}TLS_CERT_FILE": str(pki.server_cert), f"{prefix}TLS_KEY_FILE": str(pki.server_key),
           f"{prefix}TLS_CLIENT_CA_FILE": str(pki.ca_cert), f"{prefix}HEALTH_PORT": str(free_port()),
           f"{prefix}METRICS_PORT": str(free_port()), "GRPC_VERBOSITY": "ERROR"}
    if catalog_client:
        env |= {f"{prefix}CATALOG_TLS_CA_FILE": str(pki.ca_cert),
                f"{prefix}CATALOG_TLS_CERT_FILE": str(pki.client_cert),
                f"{prefix}CATALOG_TLS_KEY_FILE": str(pki.client_key)}
    return env


def test_services_with_mutual_tls_metrics_and_health_ports(tmp_path):
    pki = make_pki(tmp_path / "pki")
    catalog = catalog_process(tmp_path / "catalog", **_tls_env("IMAGINEER_CATALOG_", pki, catalog_client=False))
    services = [catalog]
    try:
        catalog.start(wait=False)
        wait_serving(f"127.0.0.1:{catalog.env['IMAGINEER_CATALOG_HEALTH_PORT']}", 60, catalog.process)
        catalog_target = f"dns:///localhost:{catalog.port}"
        generator = generator_process(tmp_path / "generator", catalog_target,
                                      **_tls_env("IMAGINEER_GENERATOR_", pki, catalog_client=True))
        trainer = trainer_process(tmp_path / "trainer", catalog_target,
                                  **_tls_env("IMAGINEER_TRAINER_", pki, catalog_client=True))
        services += [generator, trainer]
        generator.start(wait=False)
        trainer.start(wait=False)
        for service, prefix in ((generator, "IMAGINEER_GENERATOR_"), (trainer, "IMAGINEER_TRAINER_")):
            try:
                wait_serving(f"127.0.0.1:{service.env[prefix + 'HEALTH_PORT']}", 180, service.process)
            except Exception:
                raise AssertionError(service.logs()) from None

        def imagineer(*args: str, tls: bool = True) -> subprocess.CompletedProcess:
            env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEER_")}
            if tls:
                env |= {"IMAGINEER_TLS_CA_FILE": str(pki.ca_cert), "IMAGINEER_TLS_CERT_FILE": str(pki.client_cert),
                        "IMAGINEER_TLS_KEY_FILE": str(pki.client_key)}
            command = [sys.executable, "-m", "imagineer_client.cli", "--catalog", catalog_target,
                       "--generator", f"dns:///localhost:{generator.port}", "--token", ADMIN_TOKEN, *args]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

        # The generator renders and stores the image in the catalog through its client certificate.
        result = imagineer("--json", "generate", "a red cube", "--steps", "2", "--seed", "3")
        assert result.returncode == 0, result.stderr + generator.logs()
        job = json.loads(result.stdout)
        assert job["state"] == "JOB_STATE_COMPLETED" and job["images"][0]["image_id"]

        refused = imagineer("--json", "generate", "a red cube", "--steps", "2", tls=False)
        assert refused.returncode == 1 and "UNAVAILABLE" in refused.stdout + refused.stderr

        generated = _metrics(int(generator.env["IMAGINEER_GENERATOR_METRICS_PORT"]))
        assert generated[("imagineer_generator_model_load_seconds", frozenset())] > 0
        assert generated[("imagineer_generator_queue_depth", frozenset())] == 0
        completed = frozenset({"state": "completed"}.items())
        assert generated[("imagineer_generator_job_duration_seconds_count", completed)] == 1
        start = {"grpc_type": "unary", "grpc_service": "imagineer.generator.v1.GeneratorService",
                 "grpc_method": "StartGeneration", "grpc_code": "OK"}
        assert generated[("grpc_server_handled_total", frozenset(start.items()))] == 1

        trained = _metrics(int(trainer.env["IMAGINEER_TRAINER_METRICS_PORT"]))
        assert trained[("imagineer_trainer_model_load_seconds", frozenset())] > 0
        assert trained[("imagineer_trainer_queue_depth", frozenset())] == 0

        catalogued = _metrics(int(catalog.env["IMAGINEER_CATALOG_METRICS_PORT"]))
        upload = {"grpc_type": "client_stream", "grpc_service": "imagineer.catalog.v1.CatalogService",
                  "grpc_method": "UploadImage", "grpc_code": "OK"}
        assert catalogued[("grpc_server_handled_total", frozenset(upload.items()))] == 1
    finally:
        for service in reversed(services):
            service.stop()

"""Contract: the catalog as a process: health, reflection, shutdown, readiness, configuration and crash recovery."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness.catalog_client import artifact_requests, download_artifact, download_image, upload_image
from harness.images import png_bytes
from harness.postgres import temporary_database
from harness.processes import ADMIN_METADATA, catalog_process, free_port

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import catalog_service_pb2_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_common.grpc_errors import error_reason

SERVICE = "imagineer.catalog.v1.CatalogService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request):
    """None (the default SQLite file in the data dir) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with temporary_database() as url:
        yield url


def health_status(address: str, service: str = "", timeout: float = 2.0) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=timeout).status


def wait_for_health(address: str, wanted: int, timeout: float, process: subprocess.Popen | None = None) -> float:
    """Polls health until it reports ``wanted``; returns the seconds it took."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < timeout:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the catalog exited with code {process.returncode}")
        try:
            last = health_status(address)
            if last == wanted:
                return time.monotonic() - started
        except grpc.RpcError as error:
            last = error.code()
        time.sleep(0.1)
    raise AssertionError(f"health did not report {wanted} within {timeout}s (last: {last})")


def run_cli(command: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagineer_catalog", command], env=env, capture_output=True,
                          text=True, timeout=timeout)


# Health and reflection (on the shared catalog of this module)


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_reports_serving(channel, service):
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == SERVING


def test_health_of_an_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.such.Service"),
                                                  timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_needs_no_token_even_with_a_bad_one(channel):
    """Probes and grpcurl work without credentials; a bad token does not break them either."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5,
                                                      metadata=(("authorization", "Bearer wrong"),))
    assert reply.status == SERVING


def _reflect(channel, **request) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]),
                                               timeout=5))
    assert len(responses) == 1
    return responses[0]


def test_reflection_lists_the_catalog_service(channel):
    reply = _reflect(channel, list_services="")
    names = {s.name for s in reply.list_services_response.service}
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


def test_reflection_describes_the_catalog_methods(channel):
    reply = _reflect(channel, file_containing_symbol=SERVICE)
    assert reply.WhichOneof("message_response") == "file_descriptor_response"
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in reply.file_descriptor_response.file_descriptor_proto]
    services = {f"{f.package}.{s.name}": s for f in files for s in f.service}
    methods = {m.name for m in services[SERVICE].method}
    assert {"UploadImage", "CreateTrainingRun", "UpdateScrapeJob", "UploadArtifact", "DownloadArtifact",
            "ImportOutputs"} <= methods
    unknown = _reflect(channel, file_containing_symbol="imagineer.catalog.v1.NoSuchThing")
    assert unknown.WhichOneof("message_response") == "error_response"
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


# Process life cycle


def test_sigterm_stops_the_catalog_cleanly(tmp_path):
    service = catalog_process(tmp_path).start()
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            upload_image(stub, png_bytes(seed=30200), ADMIN_METADATA, filename="before-stop.png")
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        try:
            code = service.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.dump_stacks()
            pytest.fail(f"the catalog did not stop within 10 s of SIGTERM; its log and stacks:\n{service.logs()}")
        elapsed = time.monotonic() - started
    finally:
        service.kill()
    assert code == 0, service.logs()
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert "Traceback" not in service.logs()


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_catalog_goes_on(tmp_path):
    service = catalog_process(tmp_path).start()
    try:
        service.dump_stacks()
        with grpc.insecure_channel(service.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            upload_image(stub, png_bytes(seed=30201), ADMIN_METADATA, filename="after-dump.png")
        logs = service.logs()
    finally:
        service.stop()
    assert "Current thread" in logs and "wait_for_termination" in logs, logs


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    service = catalog_process(data_dir).start()
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            album = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="where am i")),
                                     metadata=ADMIN_METADATA)
    finally:
        assert service.stop() == 0
    database = data_dir / "imagineer.db"
    assert database.is_file()
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        assert connection.execute("SELECT name FROM albums WHERE id = ?", (int(album.id),)).fetchone() == (
            "where am i",)
    assert (data_dir / "blobs").is_dir()


def test_catalog_waits_for_migrations_when_auto_upgrade_is_off(tmp_path, database_url):
    data_dir = tmp_path / "data"
    service = catalog_process(data_dir, database_url, IMAGINEER_CATALOG_AUTO_UPGRADE="false")
    service.start(wait=False)
    try:
        wait_for_health(service.address, NOT_SERVING, timeout=60, process=service.process)
        assert health_status(service.address, SERVICE) == NOT_SERVING
        with grpc.insecure_channel(service.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            calls = [
                lambda: stub.ListTrainingRuns(api.ListTrainingRunsRequest(), metadata=ADMIN_METADATA, timeout=5),
                lambda: stub.ListImages(api.ListImagesRequest(), timeout=5),  # public, anonymous
                lambda: upload_image(stub, png_bytes(seed=30210), ADMIN_METADATA, filename="too-early.png"),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert error_reason(caught.value) == "CATALOG_NOT_READY"
            # Authentication still comes first.
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListTrainingRuns(api.ListTrainingRunsRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # It says why in its log (once its schema check has run) and does not upgrade by itself.
            deadline = time.monotonic() + 30
            while "migrate" not in service.logs() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "not serving" in service.logs() and "migrate" in service.logs()
            assert health_status(service.address) == NOT_SERVING

            migrated = run_cli("migrate", {**os.environ, **service.env})
            assert migrated.returncode == 0, migrated.stderr
            waited = wait_for_health(service.address, SERVING, timeout=15, process=service.process)
            assert waited < 15
            assert health_status(service.address, SERVICE) == SERVING

            data = png_bytes(seed=30211)
            image = upload_image(stub, data, ADMIN_METADATA, filename="after-migrate.png").image
            _, body = download_image(stub, image.id, ADMIN_METADATA)
            assert body == data
        assert service.process.poll() is None  # the same process, never restarted
    finally:
        code = service.stop()
    assert code == 0, service.logs()


def test_production_mode_does_not_upgrade_by_itself(tmp_path):
    service = catalog_process(tmp_path, IMAGINEER_CATALOG_MODE="production")
    service.start(wait=False)
    try:
        wait_for_health(service.address, NOT_SERVING, timeout=60, process=service.process)
        with grpc.insecure_channel(service.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListAlbums(api.ListAlbumsRequest(), metadata=ADMIN_METADATA, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(caught.value) == "CATALOG_NOT_READY"
    finally:
        assert service.stop() == 0


# Configuration errors


@pytest.mark.parametrize("overrides, variable", [
    ({"IMAGINEER_CATALOG_MODE": "production"}, "IMAGINEER_CATALOG_ADMIN_TOKENS"),
    ({"IMAGINEER_CATALOG_MODE": "production", "IMAGINEER_CATALOG_ADMIN_TOKENS": " , "},
     "IMAGINEER_CATALOG_ADMIN_TOKENS"),
    ({"IMAGINEER_CATALOG_PORT": "not-a-port"}, "IMAGINEER_CATALOG_PORT"),
    ({"IMAGINEER_CATALOG_AUTO_UPGRADE": "maybe"}, "IMAGINEER_CATALOG_AUTO_UPGRADE"),
], ids=["production-without-tokens", "production-blank-tokens", "bad-port", "bad-bool"])
def test_bad_configuration_exits_with_code_2_naming_the_variable(tmp_path, overrides, variable):
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINEER_CATALOG_")}
    env.update({"IMAGINEER_CATALOG_DATA_DIR": str(tmp_path / "data"), "IMAGINEER_CATALOG_PORT": str(free_port()),
                "IMAGINEER_CATALOG_LOG_FORMAT": "text", **overrides})
    result = run_cli("serve", env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "imagineer.db").exists()  # refused before touching anything


# Crash recovery


def test_restart_removes_files_a_crash_left_behind(tmp_path, database_url):
    data_dir = tmp_path / "data"
    images = {png_bytes(40, 30, seed=30220): "kept-1.png", png_bytes(seed=30221): "kept-2.png"}
    weights = random.Random(30222).randbytes(200_000)

    first = catalog_process(data_dir, database_url).start()
    try:
        with grpc.insecure_channel(first.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            ids = {upload_image(stub, data, ADMIN_METADATA, filename=name).image.id: data
                   for data, name in images.items()}
            artifact = stub.UploadArtifact(artifact_requests(weights, name="kept-weights", kind=res.ARTIFACT_KIND_LORA,
                                                             filename="w.safetensors"),
                                           metadata=ADMIN_METADATA).artifact
    finally:
        assert first.stop() == 0

    # What a crash between "file renamed into place" and "row committed" (or mid-upload) leaves.
    blobs = data_dir / "blobs"
    orphan = blobs / "sha256" / "aa" / "bb" / ("aabb" + hashlib.sha256(b"orphan").hexdigest()[4:])
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"bytes no row refers to")
    stray = blobs / "tmp" / "upload-crashed"
    stray.write_bytes(b"half an upload")
    stray_dir = blobs / "tmp" / "unfinished"
    stray_dir.mkdir()
    (stray_dir / "part").write_bytes(b"more")
    kept_files = sorted(p for p in (blobs / "sha256").rglob("*") if p.is_file() and p != orphan)

    second = catalog_process(data_dir, database_url).start()
    try:
        assert not orphan.exists()
        assert not stray.exists() and not stray_dir.exists()
        assert (blobs / "tmp").is_dir()
        assert all(p.exists() for p in kept_files)
        with grpc.insecure_channel(second.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            for image_id, data in ids.items():
                image = stub.GetImage(api.GetImageRequest(id=image_id), metadata=ADMIN_METADATA)
                assert image.has_file
                info, body = download_image(stub, image_id, ADMIN_METADATA)
                assert body == data and info.sha256 == hashlib.sha256(data).hexdigest()
                thumb = stub.GetImageThumbnail(api.GetImageThumbnailRequest(id=image_id), metadata=ADMIN_METADATA)
                assert thumb.data[:3] == b"\xff\xd8\xff"
            _, body = download_artifact(stub, artifact.id, ADMIN_METADATA)
            assert body == weights
            # The store keeps working: the orphan's bytes upload as a normal new artifact.
            again = stub.UploadArtifact(artifact_requests(b"bytes no row refers to", name="fresh",
                                                          kind=res.ARTIFACT_KIND_OTHER, filename="fresh.bin"),
                                        metadata=ADMIN_METADATA)
            assert not again.already_existed
            _, body = download_artifact(stub, again.artifact.id, ADMIN_METADATA)
            assert body == b"bytes no row refers to"
    finally:
        assert second.stop() == 0


def test_a_taken_port_is_a_clear_error_not_a_traceback(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "IMAGINEER_CATALOG_DATA_DIR": str(tmp_path), "IMAGINEER_CATALOG_PORT": str(port)}
        result = subprocess.run([sys.executable, "-m", "imagineer_catalog", "serve"], env=env, capture_output=True,
                                text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr

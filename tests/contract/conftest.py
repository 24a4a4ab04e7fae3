"""Contract-test fixtures: a real catalog process per backend, and stubs to call it with; for the generator and
trainer folders, a SQLite catalog per module (the demo model fixture is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from harness.postgres import temporary_database
from harness.processes import ADMIN_METADATA, ServiceProcess, catalog_process

from imagineer.catalog.v1 import catalog_service_pb2_grpc


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_service(request, tmp_path_factory):
    """One catalog process per test module and backend (SQLite file or fresh PostgreSQL database)."""
    data_dir = tmp_path_factory.mktemp(f"catalog-{request.param}")
    if request.param == "sqlite":
        service = catalog_process(data_dir).start()
        yield service
        service.stop()
        return
    with temporary_database() as url:
        service = catalog_process(data_dir, url).start()
        yield service
        service.stop()


@pytest.fixture(scope="module")
def channel(catalog_service):
    with grpc.insecure_channel(catalog_service.address) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel):
    return catalog_service_pb2_grpc.CatalogServiceStub(channel)


@pytest.fixture
def admin():
    """Call metadata of an admin caller."""
    return ADMIN_METADATA


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Iterator[ServiceProcess]:
    """One catalog process (SQLite) per test module, for the generator's and trainer's tests."""
    service = catalog_process(tmp_path_factory.mktemp("catalog")).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def catalog_channel(catalog) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(catalog.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def catalog_stub(catalog_channel) -> catalog_service_pb2_grpc.CatalogServiceStub:
    return catalog_service_pb2_grpc.CatalogServiceStub(catalog_channel)

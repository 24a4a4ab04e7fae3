"""Contract-test fixtures: a real catalog process per backend, and stubs to call it with."""

from __future__ import annotations

import grpc
import pytest
from harness.postgres import temporary_database
from harness.processes import ADMIN_METADATA, catalog_process

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

"""Assembles a running catalog: schema check or upgrade, storage sweep, gRPC server, health."""

from __future__ import annotations

import logging
import threading

from imagineer.catalog.v1 import catalog_service_pb2_grpc as api_grpc
from imagineer_catalog import schema, similar
from imagineer_catalog.blobstore import BlobStore
from imagineer_catalog.config import CatalogSettings
from imagineer_catalog.database import Database, create_catalog_engine
from imagineer_catalog.server import PUBLIC_METHODS, SERVICE_NAME, CatalogServicer, ReadinessGate
from imagineer_catalog.store import Catalog, sweep_storage
from imagineer_common import metrics
from imagineer_common.interceptors import ServiceInterceptor
from imagineer_common.server import RunningServer, start_server, wait_for_termination

log = logging.getLogger("imagineer.catalog")

SCHEMA_RECHECK_SECONDS = 5.0


def open_catalog(settings: CatalogSettings) -> Catalog:
    return Catalog(db=Database(create_catalog_engine(settings.database_url)), blobs=BlobStore(settings.storage_root))


def prepare_schema(settings: CatalogSettings) -> None:
    """Upgrades on start (laptops) or only checks (clusters, where a migration Job upgrades)."""
    if settings.auto_upgrade:
        result = schema.upgrade_to_head(settings.database_url, storage_root=settings.storage_root)
        if result.adopted_legacy:
            log.info("adopted a legacy Imagineer database (copy kept at %s)", result.backup_path)
        if result.before != result.after:
            log.info("database upgraded from %s to %s", result.before or "empty", result.after)
        return
    engine = create_catalog_engine(settings.database_url)
    try:
        schema.ensure_at_head(engine)
    finally:
        engine.dispose()


def _wait_for_schema(settings: CatalogSettings, catalog: Catalog, gate: ReadinessGate,
                     running: RunningServer, stop: threading.Event) -> None:
    """Keeps health NOT_SERVING until a migration Job has brought the database to head."""
    while not stop.wait(SCHEMA_RECHECK_SECONDS):
        try:
            prepare_schema(settings)
        except schema.SchemaNotCurrent as error:
            log.warning("not serving: %s", error)
            continue
        except Exception:  # the database may still be starting; keep trying
            log.exception("schema check failed")
            continue
        _become_ready(catalog, gate, running)
        return


def _become_ready(catalog: Catalog, gate: ReadinessGate, running: RunningServer) -> None:
    temporary, orphans = sweep_storage(catalog)
    if temporary or orphans:
        log.info("storage clean-up: %d unfinished uploads and %d unreferenced files removed", temporary, orphans)
    hashed = similar.backfill_perceptual_hashes(catalog)
    if hashed:
        log.info("computed the perceptual hash of %d images stored without one", hashed)
    gate.open()
    running.set_serving(True)
    log.info("serving on port %d", running.port)


def serve(settings: CatalogSettings) -> None:
    gate = ReadinessGate()
    catalog = open_catalog(settings)
    servicer = CatalogServicer(catalog, gate)
    interceptor = ServiceInterceptor(admin_tokens=settings.admin_tokens, public_methods=PUBLIC_METHODS,
                                     error_domain="catalog.imagineer")
    running = start_server(host=settings.host, port=settings.port,
                           register=[lambda server: api_grpc.add_CatalogServiceServicer_to_server(servicer, server)],
                           service_names=[SERVICE_NAME], interceptor=interceptor, tls=settings.tls,
                           metrics_port=settings.metrics_port, health_port=settings.health_port)
    metrics.gauge("imagineer_catalog_schema_ready",
                  "1 when the database is at the schema this catalog needs and calls are served, else 0.",
                  lambda: 1.0 if gate.is_open else 0.0)
    stop_waiting = threading.Event()
    try:
        prepare_schema(settings)
    except (schema.SchemaNotCurrent, schema.UnrecognisedDatabase) as error:
        log.error("not serving: %s", error)
        gate.close(str(error))
        threading.Thread(target=_wait_for_schema, args=(settings, catalog, gate, running, stop_waiting),
                         daemon=True, name="schema-wait").start()
    else:
        _become_ready(catalog, gate, running)

    def on_stop() -> None:
        stop_waiting.set()
        catalog.db.dispose()

    wait_for_termination(running, on_stop=on_stop)

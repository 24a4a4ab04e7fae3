"""Assembles a running trainer: server first (NOT_SERVING), base model check, recovery, then SERVING."""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

from imagineer.trainer.v1 import scraping_service_pb2_grpc as scraping_grpc
from imagineer.trainer.v1 import trainer_service_pb2_grpc as api_grpc
from imagineer_common.interceptors import ServiceInterceptor
from imagineer_common.server import serve_when_built, start_server, wait_for_termination
from imagineer_trainer.config import TrainerSettings
from imagineer_trainer.labeling_server import LABELING_SERVICE_NAME, build_labeling
from imagineer_trainer.scrape_server import SERVICE_NAME as SCRAPING_SERVICE_NAME
from imagineer_trainer.scrape_server import ScrapingServicer
from imagineer_trainer.server import SERVICE_NAME, TrainerServicer

log = logging.getLogger("imagineer.trainer")

SHUTDOWN_GRACE_SECONDS = 30.0


def build_trainer(settings: TrainerSettings):
    """Loads the base model once (to know it works and its size), recovers interrupted runs, starts the worker."""
    from imagineer_common.catalog_client import TrainingCatalog
    from imagineer_models.loading import load_model
    from imagineer_trainer.runs import RunRegistry
    from imagineer_trainer.service import ModelInfo, Trainer
    from imagineer_trainer.supervisor import Supervisor

    def fresh_model():
        # Each run adapts the model in place, so every run gets its own copy.
        return load_model(settings.model, models_dir=settings.models_dir, device=settings.device,
                          single_file_config=settings.model_config)

    started = time.perf_counter()
    model = fresh_model()
    load_seconds = time.perf_counter() - started
    info = ModelInfo(name=model.name, default_size=model.default_size)
    del model
    catalog = TrainingCatalog(settings.catalog_address, settings.catalog_token, tls=settings.catalog_tls)
    supervisor = Supervisor(load_model=fresh_model, catalog=catalog, runs_dir=settings.runs_dir,
                            capacity=settings.queue_capacity)
    registry = RunRegistry()
    for run in supervisor.recover():
        registry.add(run)
        supervisor.submit(run)
        log.info("training %s will resume", run.id)
    supervisor.start()
    _add_metrics(load_seconds, supervisor, registry)
    return Trainer(info=info, registry=registry, supervisor=supervisor, catalog=catalog)


def _add_metrics(load_seconds: float, supervisor, registry) -> None:
    from imagineer_common import metrics

    metrics.set_value("imagineer_trainer_model_load_seconds", "Seconds the base model took to load at start-up.",
                      load_seconds)
    metrics.gauge("imagineer_trainer_queue_depth", "Training runs waiting for the trainer.", supervisor.waiting)
    metrics.ended_work_durations(
        "imagineer_trainer_run_duration_seconds", "Training runs from start to end, by final state.",
        lambda: [(run.id, run.state, run.started_at, run.ended_at) for run in registry.newest_first()])


def build_scraper(settings: TrainerSettings):
    """Marks scrapes a previous trainer left running as interrupted, then starts the scrape workers (their own
    threads: a scrape never waits for training, nor training for a scrape)."""
    from imagineer_common.catalog_client import ScrapeCatalog
    from imagineer_trainer.scraping.service import Scraper

    scraper = Scraper(settings=settings.scraping, catalog=ScrapeCatalog(settings.catalog_address,
                                                                        settings.catalog_token,
                                                                        tls=settings.catalog_tls))
    interrupted = scraper.recover()
    if interrupted:
        log.info("marked %d scrapes that a previous trainer left running as interrupted", interrupted)
    scraper.start_workers()
    return scraper


def _start_scraping(settings: TrainerSettings, scraping: ScrapingServicer) -> None:
    try:
        scraping.scraper = build_scraper(settings)
    except Exception as error:
        log.exception("scraping could not start; its RPCs answer UNAVAILABLE")
        scraping.load_error = str(error)


def serve(settings: TrainerSettings) -> None:
    scraping = ScrapingServicer()
    servicer = TrainerServicer()
    labeling = build_labeling(settings)
    interceptor = ServiceInterceptor(admin_tokens=settings.admin_tokens, public_methods=(),
                                     error_domain="trainer.imagineer")
    running = start_server(host=settings.host, port=settings.port,
                           register=[lambda server: api_grpc.add_TrainerServiceServicer_to_server(servicer, server),
                                     labeling.register,
                                     lambda server: scraping_grpc.add_ScrapingServiceServicer_to_server(scraping,
                                                                                                        server)],
                           service_names=[SERVICE_NAME, LABELING_SERVICE_NAME, SCRAPING_SERVICE_NAME],
                           interceptor=interceptor, tls=settings.tls, metrics_port=settings.metrics_port,
                           health_port=settings.health_port)

    def start_up() -> None:
        _start_scraping(settings, scraping)  # first: it needs no model, so it is usable while the model loads
        serve_when_built(running, partial(build_trainer, settings), on_built=partial(setattr, servicer, "trainer"),
                         on_failed=partial(setattr, servicer, "load_error"),
                         failure="the trainer could not start; it stays NOT_SERVING")

    threading.Thread(target=start_up, daemon=True, name="trainer-start").start()

    def finish_work() -> None:
        # Running scrapes stop at once and are marked interrupted (they are not resumed).
        if scraping.scraper is not None:
            scraping.scraper.stop(SHUTDOWN_GRACE_SECONDS)
        # The running labeling stops after its image, the running training checkpoints; both are marked
        # interrupted and the next start resumes them.
        labeling.stop(SHUTDOWN_GRACE_SECONDS)
        if servicer.trainer is not None:
            servicer.trainer.supervisor.stop(SHUTDOWN_GRACE_SECONDS)

    def on_stop() -> None:
        labeling.close()
        if servicer.trainer is not None:
            servicer.trainer.catalog.close()
        if scraping.scraper is not None:
            scraping.scraper.catalog.close()

    wait_for_termination(running, before_stop=finish_work, on_stop=on_stop)

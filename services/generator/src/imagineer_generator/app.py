"""Assembles a running generator: server first (health NOT_SERVING), model load, then SERVING."""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

from imagineer.generator.v1 import generator_service_pb2_grpc as api_grpc
from imagineer_common.interceptors import ServiceInterceptor
from imagineer_common.server import serve_when_built, start_server, wait_for_termination
from imagineer_generator.config import GeneratorSettings
from imagineer_generator.server import SERVICE_NAME, GeneratorServicer

log = logging.getLogger("imagineer.generator")

SHUTDOWN_GRACE_SECONDS = 20.0


def build_generator(settings: GeneratorSettings):
    """Loads the model (slow: imports torch) and wires the domain objects around it."""
    from imagineer_common.catalog_client import CatalogClient
    from imagineer_generator.engine import Engine
    from imagineer_generator.jobs import JobRegistry
    from imagineer_generator.journal import JobJournal
    from imagineer_generator.loras import LoraManager
    from imagineer_generator.scheduler import WorkQueue
    from imagineer_generator.service import Generator, ModelInfo
    from imagineer_models.loading import load_model
    from imagineer_models.schedulers import scheduler_names

    started = time.perf_counter()
    model = load_model(settings.model, models_dir=settings.models_dir, device=settings.device,
                       single_file_config=settings.model_config)
    load_seconds = time.perf_counter() - started
    log.info("model %s loaded on %s in %.1f s", model.name, model.device, load_seconds)
    catalog = CatalogClient(settings.catalog_address, settings.catalog_token, tls=settings.catalog_tls)
    queue = WorkQueue(capacity=settings.queue_capacity, max_batch=settings.max_batch)
    loras = LoraManager(catalog, settings.lora_cache_dir, model.name)
    engine = Engine(model=model, queue=queue, catalog=catalog, loras=loras, exact_batches=settings.exact_batches)
    info = ModelInfo(name=model.name, is_demo=model.is_demo, device=model.device, default_size=model.default_size,
                     schedulers=tuple(scheduler_names()))
    journal = JobJournal(settings.data_dir / "generator" / "jobs.jsonl")
    registry = JobRegistry()
    for job in journal.recover(partial(stored_images, catalog)):  # the unfinished ones fail with a reason
        registry.add(job, job.request_id)
    engine.start()
    _add_metrics(load_seconds, queue, registry)
    return Generator(info=info, registry=registry, queue=queue, engine=engine, catalog=catalog, loras=loras,
                     journal=journal)


def stored_images(catalog, job) -> dict[int, str]:
    """Which images of an interrupted job the catalog holds, by task index (its uploads are named
    ``<job id>-<index>.png``); empty when the catalog cannot say (the journal's record stands)."""
    from imagineer_common.catalog_client import CatalogError
    from imagineer_generator.engine import image_filename

    if not job.album_id:
        return {}
    try:
        names = catalog.album_filenames(job.album_id)
    except CatalogError as error:
        log.warning("cannot check which images of job %s reached the catalog: %s", job.id, error)
        return {}
    return {task.index: names[image_filename(job.id, task.index)] for task in job.plan.tasks
            if image_filename(job.id, task.index) in names}


def _add_metrics(load_seconds: float, queue, registry) -> None:
    from imagineer_common import metrics

    metrics.set_value("imagineer_generator_model_load_seconds", "Seconds the model took to load at start-up.",
                      load_seconds)
    metrics.gauge("imagineer_generator_queue_depth", "Jobs waiting for or in generation.", lambda: len(queue))
    metrics.ended_work_durations(
        "imagineer_generator_job_duration_seconds", "Generation jobs from start to end, by final state.",
        lambda: [(job.id, job.state, job.started_at, job.ended_at) for job in registry.newest_first()])


def serve(settings: GeneratorSettings) -> None:
    servicer = GeneratorServicer()
    interceptor = ServiceInterceptor(admin_tokens=settings.admin_tokens, public_methods=(),
                                     error_domain="generator.imagineer")
    running = start_server(host=settings.host, port=settings.port,
                           register=[lambda server: api_grpc.add_GeneratorServiceServicer_to_server(servicer, server)],
                           service_names=[SERVICE_NAME], interceptor=interceptor, tls=settings.tls,
                           metrics_port=settings.metrics_port, health_port=settings.health_port)

    def load_model_then_serve() -> None:
        serve_when_built(running, partial(build_generator, settings), on_built=partial(setattr, servicer, "generator"),
                         on_failed=partial(setattr, servicer, "load_error"),
                         failure="the model could not be loaded; the generator stays NOT_SERVING")

    threading.Thread(target=load_model_then_serve, daemon=True, name="model-load").start()

    def finish_work() -> None:
        # Ends the running batch and fails waiting jobs first, so every watch stream can close.
        if servicer.generator is not None:
            servicer.generator.engine.stop(SHUTDOWN_GRACE_SECONDS)

    def on_stop() -> None:
        if servicer.generator is not None:
            servicer.generator.catalog.close()

    wait_for_termination(running, before_stop=finish_work, on_stop=on_stop)

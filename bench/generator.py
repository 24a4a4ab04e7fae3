"""Generator benchmark: service overhead against the raw pipeline, and concurrent against sequential load.

1. Overhead: a job of N images through the gRPC service end to end (queueing, rendering, PNG encoding, the
   catalog upload and album bookkeeping), timed from StartGeneration to the job's finished event, against the
   same diffusers pipeline called directly in this process for the same N images, one call per image. The two
   alternate in rounds (the service is idle while the baseline runs: two torch processes at once slow each
   other down badly on a small machine). ``overhead_ratio`` = service seconds per image / raw seconds per image
   (goal: <= 1.10 at 64x64 with the default model).
2. Concurrency: J one-image jobs from 8 concurrent clients against the same J jobs one at a time (each client
   waits for its job before sending the next). ``concurrency_speedup`` = concurrent images/s / sequential
   images/s (goal: >= 1.5).

A missed goal is reported, never turned into a failing exit status. The last line of output is one JSON object.

    .venv/bin/python bench/generator.py            # 16 images per round, 3 rounds, 24 jobs, 10 steps
    .venv/bin/python bench/generator.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the services' process harness
from harness.processes import ADMIN_METADATA, catalog_process, generator_process

from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as api
from imagineer.generator.v1 import generator_service_pb2_grpc as api_grpc

OVERHEAD_GOAL = 1.10
SPEEDUP_GOAL = 1.5
PROMPT = "a lighthouse on a cliff at dusk, oil painting"

console = Console(stderr=True)
out = Console()


def run_job(stub, *, seed: int, images: int, steps: int, size: int) -> float:
    """Starts a job and follows it to the end; returns the seconds it took and checks it completed."""
    started = time.perf_counter()
    job = stub.StartGeneration(api.StartGenerationRequest(
        parameters=common_pb2.GenerationParameters(prompt=PROMPT, seed=seed, steps=steps, width=size, height=size,
                                                   scheduler="euler"),
        image_count=images), metadata=ADMIN_METADATA)
    last = None
    for event in stub.WatchGeneration(api.WatchGenerationRequest(id=job.id), metadata=ADMIN_METADATA):
        last = event
    elapsed = time.perf_counter() - started
    if last is None or last.finished.state != common_pb2.JOB_STATE_COMPLETED:
        raise RuntimeError(f"job {job.id} did not complete: {last}")
    return elapsed


def raw_pipeline_seconds(model, *, seeds: list[int], steps: int, size: int) -> float:
    """The same images straight from the diffusers pipeline, one call each, as a script would do it."""
    import torch

    from imagineer_models.schedulers import make_scheduler

    pipeline = model.pipeline
    started = time.perf_counter()
    for seed in seeds:
        pipeline.scheduler = make_scheduler("euler", pipeline.scheduler.config)
        pipeline(prompt=PROMPT, num_inference_steps=steps, width=size, height=size, guidance_scale=7.5,
                 generator=torch.Generator(device="cpu").manual_seed(seed))
    return time.perf_counter() - started


def run_clients(stub, *, jobs: int, clients: int, steps: int, size: int, first_seed: int) -> float:
    seeds = iter(range(first_seed, first_seed + jobs))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                seed = next(seeds, None)
            if seed is None:
                return
            try:
                run_job(stub, seed=seed, images=1, steps=steps, size=size)
            except BaseException as error:  # reported after the threads end
                failures.append(error)
                return

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - started


@dataclass
class Figures:
    service_per_image: list[float]
    raw_per_image: list[float]
    sequential_seconds: float
    concurrent_seconds: float
    jobs: int


def measure(args: argparse.Namespace, workdir: Path, stack: ExitStack) -> Figures:
    catalog = catalog_process(workdir / "catalog")
    (workdir / "catalog").mkdir()
    catalog.start()
    stack.callback(catalog.stop)
    (workdir / "generator").mkdir()
    generator = generator_process(workdir / "generator", catalog.address,
                                  IMAGINEER_GENERATOR_QUEUE_CAPACITY=str(max(64, args.jobs)),
                                  IMAGINEER_GENERATOR_MAX_BATCH=str(args.max_batch))
    generator.start(timeout=180)
    stack.callback(generator.stop)
    channel = grpc.insecure_channel(generator.address)
    stack.callback(channel.close)
    stub = api_grpc.GeneratorServiceStub(channel)

    os.environ["HF_HUB_OFFLINE"] = "1"
    from imagineer_models.loading import load_model

    model = load_model(None, models_dir=workdir / "generator" / "models")  # the folder the service built
    run_job(stub, seed=1, images=1, steps=args.steps, size=args.size)  # warm both up
    raw_pipeline_seconds(model, seeds=[1], steps=args.steps, size=args.size)

    service, raw = [], []
    for round_number in range(args.rounds):
        seeds = list(range(1000 * (round_number + 1), 1000 * (round_number + 1) + args.images))
        service.append(run_job(stub, seed=seeds[0], images=args.images, steps=args.steps,
                               size=args.size) / args.images)
        raw.append(raw_pipeline_seconds(model, seeds=seeds, steps=args.steps, size=args.size) / args.images)
        console.log(f"round {round_number + 1}: service {service[-1] * 1000:.0f} ms/image, "
                    f"raw pipeline {raw[-1] * 1000:.0f} ms/image")

    sequential = run_clients(stub, jobs=args.jobs, clients=1, steps=args.steps, size=args.size, first_seed=50_000)
    concurrent = run_clients(stub, jobs=args.jobs, clients=args.clients, steps=args.steps, size=args.size,
                             first_seed=60_000)
    console.log(f"{args.jobs} jobs: one at a time {sequential:.1f} s, {args.clients} clients {concurrent:.1f} s")
    return Figures(service, raw, sequential, concurrent, args.jobs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per overhead round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=24, help="one-image jobs in the concurrency part")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=4, help="IMAGINEER_GENERATOR_MAX_BATCH of the service")
    parser.add_argument("--quick", action="store_true", help="4 images x 2 rounds, 8 jobs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.jobs = 4, 2, 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="imagineer-bench-generator-"))
    try:
        with ExitStack() as stack:
            figures = measure(args, workdir, stack)
    except Exception as error:
        console.print(f"[red]benchmark failed:[/red] {error}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    service = statistics.median(figures.service_per_image)
    raw = statistics.median(figures.raw_per_image)
    overhead = service / raw
    speedup = figures.sequential_seconds / figures.concurrent_seconds
    table = Table("measure", "value", "goal")
    table.add_row("service, per image", f"{service * 1000:.0f} ms", "")
    table.add_row("raw pipeline, per image", f"{raw * 1000:.0f} ms", "")
    table.add_row("overhead_ratio", f"{overhead:.3f}",
                  f"<= {OVERHEAD_GOAL}: {'met' if overhead <= OVERHEAD_GOAL else 'missed'}")
    table.add_row("sequential", f"{figures.jobs / figures.sequential_seconds:.2f} images/s", "")
    table.add_row(f"{args.clients} concurrent clients", f"{figures.jobs / figures.concurrent_seconds:.2f} images/s",
                  "")
    table.add_row("concurrency_speedup", f"{speedup:.3f}",
                  f">= {SPEEDUP_GOAL}: {'met' if speedup >= SPEEDUP_GOAL else 'missed'}")
    out.print(table)
    print(json.dumps({"bench": "generator", "overhead_ratio": round(overhead, 4),
                      "concurrency_speedup": round(speedup, 4), "service_ms_per_image": round(service * 1000, 1),
                      "raw_ms_per_image": round(raw * 1000, 1), "steps": args.steps, "size": args.size,
                      "images_per_round": args.images, "rounds": args.rounds, "jobs": args.jobs,
                      "clients": args.clients, "max_batch": args.max_batch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

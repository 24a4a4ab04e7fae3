"""Catalog benchmark: ingest through UploadImage, and ListImages deep paging, each against a baseline.

1. Ingest: N distinct tiny PNGs (with a generation record) are uploaded through the UploadImage RPC of a
   real catalog process by a few concurrent client threads. The baseline inserts the same image rows with
   plain SQLAlchemy, one ImageRow per transaction, one after the other, into a separate fresh database of the
   same kind (engine settings as the catalog's). The two alternate in rounds, so a change of load on the
   machine weighs on both. ``ingest_ratio`` = RPC images/s / SQLAlchemy rows/s (goal: >= 0.5).
2. Deep paging: the catalog is topped up, while its process is stopped, with legacy-style rows (no file,
   content_hash NULL) bulk-inserted with SQLAlchemy until it holds M images. ListImages (page_size 50) is
   timed on the first page and on a page deep in the listing, reached once by following next_page_token;
   the same token is then reused for every timed call. ``deep_page_ratio`` = deep median / first median
   (goal: <= 1.5).

A missed goal is reported, never turned into a failing exit status; only errors exit non-zero. The last
line of output is one JSON object with the figures.

    .venv/bin/python bench/catalog.py                 # SQLite, 10,000 uploads, 100,000-image catalog
    .venv/bin/python bench/catalog.py --quick         # 1,000 uploads, 10,000-image catalog
    .venv/bin/python bench/catalog.py --database-url postgresql://postgres@127.0.0.1:5432/test

With ``--database-url`` the bench connects to that PostgreSQL server, creates two throw-away databases
next to the one named (the catalog's and the baseline's) and drops them at the end; the role needs the
CREATEDB privilege.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the services' process harness
from harness.processes import ADMIN_METADATA, catalog_process

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as api_grpc
from imagineer.common.v1 import common_pb2
from imagineer_catalog.blobstore import key_for
from imagineer_catalog.database import create_catalog_engine
from imagineer_catalog.models import ImageRow
from imagineer_catalog.schema import upgrade_to_head

INGEST_GOAL = 0.5  # ingest_ratio must be at least this
DEEP_PAGE_GOAL = 1.5  # deep_page_ratio must be at most this
PAGE_SIZE = 50
WALK_PAGE_SIZE = 500  # the server's maximum; AIP-158 lets page_size change between calls
WARMUP_UPLOADS = 20
WARMUP_CALLS = 5
BULK_BATCH = 5_000
IMAGE_SIDE = 8

console = Console(stderr=True)  # progress and notes; the table and the JSON line go to stdout
out = Console()


# --- the catalog as a separate process -----------------------------------------------------------------------


# --- databases --------------------------------------------------------------------------------------------------


@contextmanager
def bench_databases(database_url: str | None, workdir: Path) -> Iterator[tuple[str, str, str]]:
    """Yields (catalog URL, baseline URL, backend name): two empty databases of the same kind."""
    if not database_url:
        yield f"sqlite:///{workdir / 'catalog.db'}", f"sqlite:///{workdir / 'baseline.db'}", "sqlite"
        return
    import psycopg  # only needed for PostgreSQL

    url = make_url(database_url)
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    stem = f"imagineer_bench_{secrets.token_hex(4)}"
    names = [f"{stem}_catalog", f"{stem}_baseline"]
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        urls = [url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
                for name in names]
        yield urls[0], urls[1], "postgresql"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the images -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchImage:
    filename: str
    data: bytes
    sha256: str
    seed: int


def make_image(index: int, prefix: str) -> BenchImage:
    """A distinct 8x8 PNG: its pixels are hashes of the index."""
    pixels = b"".join(hashlib.sha256(f"{prefix}-{index}-{part}".encode()).digest() for part in range(6))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (IMAGE_SIDE, IMAGE_SIDE), pixels[: IMAGE_SIDE * IMAGE_SIDE * 3]).save(buffer, "PNG")
    data = buffer.getvalue()
    return BenchImage(filename=f"{prefix}_{index:07d}.png", data=data, sha256=hashlib.sha256(data).hexdigest(),
                      seed=1_000_000 + index)


def generation_fields(image: BenchImage) -> dict:
    """The generation record every bench image carries (in the RPC and in the baseline's rows)."""
    return {"prompt": f"a lighthouse on a cliff at dusk, study {image.seed}", "negative_prompt": "blurry, low quality",
            "seed": image.seed, "steps": 30, "guidance_scale": 7.5, "scheduler": "euler",
            "base_model": "imagineer/tiny-sd", "width": IMAGE_SIDE, "height": IMAGE_SIDE}


# --- phase 1: ingest ------------------------------------------------------------------------------------------


def upload_requests(image: BenchImage) -> Iterator[api.UploadImageRequest]:
    yield api.UploadImageRequest(metadata=api.ImageUploadMetadata(
        filename=image.filename, generation=common_pb2.GenerationParameters(**generation_fields(image)),
        is_public=True))
    yield api.UploadImageRequest(chunk_data=image.data)


def run_threads(count: int, work: Callable[[int], None]) -> float:
    """Runs ``work(thread_index)`` on ``count`` threads started together; returns the wall time in seconds."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count + 1)

    def target(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self.value += amount


@contextmanager
def progress_bars(*bars: tuple[str, int, Counter]) -> Iterator[None]:
    """Bars on stderr, one per (description, total, counter), following the counters while the block runs."""
    stop = threading.Event()
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        tasks = [(progress.add_task(description, total=total), counter) for description, total, counter in bars]

        def follow() -> None:
            while not stop.wait(0.2):
                for task, counter in tasks:
                    progress.update(task, completed=counter.value)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            yield
        finally:
            stop.set()
            follower.join()


def rpc_ingest(address: str, admin: tuple, images: list[BenchImage], clients: int, done: Counter) -> float:
    """Uploads ``images`` over ``clients`` threads, each with its own channel; returns the wall time."""

    def work(index: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = api_grpc.CatalogServiceStub(channel)
            for image in images[index::clients]:
                reply = stub.UploadImage(upload_requests(image), metadata=admin, timeout=60)
                if reply.already_existed or reply.image.sha256 != image.sha256:
                    raise RuntimeError(f"unexpected reply for {image.filename}: {reply}")
                done.add()

    return run_threads(clients, work)


def image_row(image: BenchImage, now: datetime) -> ImageRow:
    """The row the catalog writes for an upload, with the same metadata."""
    fields = generation_fields(image)
    return ImageRow(filename=image.filename, prompt=fields["prompt"], negative_prompt=fields["negative_prompt"],
                    seed=fields["seed"], steps=fields["steps"], guidance_scale=fields["guidance_scale"],
                    scheduler=fields["scheduler"], base_model=fields["base_model"], width=IMAGE_SIDE,
                    height=IMAGE_SIDE, is_public=True, is_nsfw=False, created_at=now, updated_at=now,
                    content_hash=image.sha256, content_type="image/png", size_bytes=len(image.data),
                    blob_key=key_for(image.sha256),
                    thumbnail_key=key_for(hashlib.sha256(image.sha256.encode()).hexdigest()))


def sqlalchemy_ingest(engine: Engine, images: list[BenchImage], done: Counter) -> float:
    """Inserts one ImageRow per transaction, one after the other; returns the wall time."""
    started = time.perf_counter()
    for image in images:
        with Session(engine) as session, session.begin():
            session.add(image_row(image, datetime.now(UTC).replace(tzinfo=None)))
        done.add()
    return time.perf_counter() - started


@dataclass
class IngestResult:
    rpc_seconds: list[float]  # per round
    sql_seconds: list[float]
    round_sizes: list[int]

    @property
    def rpc_rate(self) -> float:
        return sum(self.round_sizes) / sum(self.rpc_seconds)

    @property
    def sql_rate(self) -> float:
        return sum(self.round_sizes) / sum(self.sql_seconds)

    def round_ratios(self) -> list[float]:
        return [sql / rpc for rpc, sql in zip(self.rpc_seconds, self.sql_seconds, strict=True)]


def measure_ingest(address: str, admin: tuple, baseline_url: str, images: list[BenchImage], clients: int,
                   rounds: int) -> IngestResult:
    """Alternates RPC uploads and SQLAlchemy inserts in rounds, so a change of load on the machine
    during the run weighs on both alike."""
    upgrade_to_head(baseline_url)
    engine = create_catalog_engine(baseline_url)
    try:
        warmup = [make_image(i, "warmup") for i in range(WARMUP_UPLOADS)]
        rpc_ingest(address, admin, warmup, clients, Counter())
        sqlalchemy_ingest(engine, warmup, Counter())
        size = -(-len(images) // rounds)
        chunks = [images[i:i + size] for i in range(0, len(images), size)]
        result = IngestResult([], [], [len(chunk) for chunk in chunks])
        rpc_done, sql_done = Counter(), Counter()
        with progress_bars(("UploadImage", len(images), rpc_done), ("SQLAlchemy", len(images), sql_done)):
            for chunk in chunks:
                result.rpc_seconds.append(rpc_ingest(address, admin, chunk, clients, rpc_done))
                result.sql_seconds.append(sqlalchemy_ingest(engine, chunk, sql_done))
        return result
    finally:
        engine.dispose()


# --- phase 2: deep paging -------------------------------------------------------------------------------------


def top_up(database_url: str, target: int) -> int:
    """Bulk-inserts legacy-style rows (no file, content_hash NULL) until the catalog holds ``target`` images."""
    engine = create_catalog_engine(database_url)
    try:
        with Session(engine) as session:
            existing = session.scalar(select(func.count()).select_from(ImageRow)) or 0
        missing = max(0, target - existing)
        start = datetime.now(UTC).replace(tzinfo=None)
        done = Counter()
        with progress_bars(("bulk insert", missing, done)):
            for first in range(0, missing, BULK_BATCH):
                rows = []
                for index in range(first, min(first + BULK_BATCH, missing)):
                    created = start + timedelta(milliseconds=index)
                    rows.append({"filename": f"legacy_{index:07d}.png", "prompt": f"legacy prompt {index}",
                                 "negative_prompt": None, "seed": index, "steps": 25, "guidance_scale": 7.0,
                                 "width": 512, "height": 512, "lora_config": None, "is_nsfw": index % 10 == 0,
                                 "is_public": index % 3 != 0, "created_at": created, "updated_at": created,
                                 "file_path": f"/srv/imagineer/outputs/legacy_{index:07d}.png"})
                with engine.begin() as connection:
                    connection.execute(insert(ImageRow), rows)
                done.add(len(rows))
        return existing + missing
    finally:
        engine.dispose()


def timed_list(stub, admin: tuple, token: str) -> tuple[float, api.ListImagesResponse]:
    request = api.ListImagesRequest(page_size=PAGE_SIZE, page_token=token)
    started = time.perf_counter()
    reply = stub.ListImages(request, metadata=admin, timeout=30)
    return (time.perf_counter() - started) * 1000, reply


def deep_token(stub, admin: tuple, depth: int) -> str:
    """Follows next_page_token from the start until ``depth`` images have been served."""
    served, token = 0, ""
    while served < depth:
        size = WALK_PAGE_SIZE if depth - served >= WALK_PAGE_SIZE else PAGE_SIZE
        reply = stub.ListImages(api.ListImagesRequest(page_size=size, page_token=token), metadata=admin, timeout=30)
        served += len(reply.images)
        token = reply.next_page_token
        if not token:
            raise RuntimeError(f"the listing ended after {served} images, before the deep page at {depth}")
    return token


@dataclass
class PagingResult:
    first_ms: list[float]
    deep_ms: list[float]
    depth: int


def measure_paging(address: str, admin: tuple, catalog_size: int, repeats: int, deep_fraction: float) -> PagingResult:
    depth = max(PAGE_SIZE, int(catalog_size * deep_fraction) // PAGE_SIZE * PAGE_SIZE)
    if depth + PAGE_SIZE > catalog_size:
        raise RuntimeError(f"a catalog of {catalog_size} images has no deep page; use --catalog-size {2 * PAGE_SIZE} "
                           "or more")
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.CatalogServiceStub(channel)
        token = deep_token(stub, admin, depth)
        for _ in range(WARMUP_CALLS):
            timed_list(stub, admin, "")
            _, reply = timed_list(stub, admin, token)
        if len(reply.images) != PAGE_SIZE:
            raise RuntimeError(f"the deep page has {len(reply.images)} images, expected {PAGE_SIZE}")
        first, deep = [], []
        for _ in range(repeats):  # interleaved, so drift affects both alike
            first.append(timed_list(stub, admin, "")[0])
            deep.append(timed_list(stub, admin, token)[0])
    return PagingResult(first_ms=first, deep_ms=deep, depth=depth)


# --- the run --------------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, help="images to upload through the RPC (default 10000)")
    parser.add_argument("--catalog-size", type=int, help="images in the catalog for paging (default 100000)")
    parser.add_argument("--quick", action="store_true", help="1000 uploads and a 10000-image catalog")
    parser.add_argument("--clients", type=int, default=4, help="concurrent upload threads (default 4)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="ingest rounds, alternating RPC uploads and SQLAlchemy inserts (default 5)")
    parser.add_argument("--repeats", type=int, default=50, help="timed ListImages calls per page (default 50)")
    parser.add_argument("--deep-fraction", type=float, default=0.9,
                        help="how deep the deep page is, as a fraction of the catalog (default 0.9)")
    parser.add_argument("--database-url", help="a PostgreSQL server to run on (throw-away databases are made "
                                               "there); default: SQLite files in a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)")
    args = parser.parse_args(argv)
    if args.images is None:
        args.images = 1_000 if args.quick else 10_000
    if args.catalog_size is None:
        args.catalog_size = 10_000 if args.quick else 100_000
    if min(args.images, args.catalog_size, args.clients, args.rounds, args.repeats) < 1:
        parser.error("--images, --catalog-size, --clients, --rounds and --repeats must be at least 1")
    if not 0 < args.deep_fraction < 1:
        parser.error("--deep-fraction must be between 0 and 1")
    if args.database_url:
        try:
            backend = make_url(args.database_url).get_backend_name()
        except ArgumentError:
            parser.error(f"--database-url {args.database_url!r} is not a database URL")
        if backend != "postgresql":
            parser.error(f"--database-url must be a PostgreSQL URL, not {backend!r} (SQLite is the default)")
    return args


@dataclass
class Report:
    backend: str
    ingest: IngestResult
    paging: PagingResult
    catalog_size: int


def run(args: argparse.Namespace) -> Report:
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="imagineer-bench-"))
        if args.keep:
            console.log(f"keeping {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        catalog_url, baseline_url, backend = stack.enter_context(bench_databases(args.database_url, workdir))
        admin = ADMIN_METADATA
        (workdir / "catalog").mkdir()
        catalog = catalog_process(workdir / "catalog", catalog_url)
        stack.callback(catalog.stop)

        images = [make_image(i, "bench") for i in range(args.images)]
        catalog.start()
        console.log(f"{backend}: catalog serving at {catalog.address}; {args.images} uploads by {args.clients} "
                    f"clients, alternating with SQLAlchemy inserts in {args.rounds} rounds")
        ingest = measure_ingest(catalog.address, admin, baseline_url, images, args.clients, args.rounds)
        catalog.stop()
        console.log(f"UploadImage {ingest.rpc_rate:.1f} images/s, SQLAlchemy {ingest.sql_rate:.1f} rows/s")

        catalog_size = top_up(catalog_url, args.catalog_size)
        catalog.start()
        console.log(f"catalog restarted with {catalog_size} images; timing ListImages")
        paging = measure_paging(catalog.address, admin, catalog_size, args.repeats, args.deep_fraction)
        catalog.stop()
        return Report(backend=backend, ingest=ingest, paging=paging, catalog_size=catalog_size)


def render(args: argparse.Namespace, report: Report) -> dict:
    ingest, paging = report.ingest, report.paging
    first_ms, deep_ms = statistics.median(paging.first_ms), statistics.median(paging.deep_ms)
    ingest_ratio = ingest.rpc_rate / ingest.sql_rate
    deep_ratio = deep_ms / first_ms
    per_round = ingest.round_ratios()

    def verdict(met: bool) -> str:
        return "[green]goal met[/]" if met else "[red]goal missed[/]"

    table = Table(title=f"Catalog benchmark: {report.backend}, {args.images} uploads by {args.clients} clients, "
                        f"{report.catalog_size} images listed")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("UploadImage RPC", f"{ingest.rpc_rate:.1f} images/s", f"{IMAGE_SIDE}x{IMAGE_SIDE} PNG with a "
                  "generation record")
    table.add_row("plain SQLAlchemy inserts", f"{ingest.sql_rate:.1f} rows/s", "one ImageRow per transaction")
    table.add_row("ingest_ratio", f"{ingest_ratio:.3f}",
                  f">= {INGEST_GOAL}: {verdict(ingest_ratio >= INGEST_GOAL)}; per round "
                  f"{min(per_round):.3f}-{max(per_round):.3f}")
    table.add_section()
    table.add_row("ListImages first page", f"{first_ms:.2f} ms",
                  f"median of {len(paging.first_ms)}, p90 {percentile(paging.first_ms, 0.9):.2f} ms")
    table.add_row("ListImages deep page", f"{deep_ms:.2f} ms",
                  f"median of {len(paging.deep_ms)}, p90 {percentile(paging.deep_ms, 0.9):.2f} ms; "
                  f"after {paging.depth} images")
    table.add_row("deep_page_ratio", f"{deep_ratio:.3f}",
                  f"<= {DEEP_PAGE_GOAL}: {verdict(deep_ratio <= DEEP_PAGE_GOAL)}")
    out.print(table)
    return {
        "bench": "catalog",
        "ingest_ratio": round(ingest_ratio, 4),
        "deep_page_ratio": round(deep_ratio, 4),
        "rpc_ingest_per_s": round(ingest.rpc_rate, 2),
        "sqlalchemy_ingest_per_s": round(ingest.sql_rate, 2),
        "first_page_ms": round(first_ms, 3),
        "deep_page_ms": round(deep_ms, 3),
        "images": args.images,
        "catalog_size": report.catalog_size,
        "backend": report.backend,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as error:  # any failure of the service or the database is an error of the run
        console.print(f"[red]error:[/] {escape(f'{type(error).__name__}: {error}')}")
        return 1
    figures = render(args, report)
    sys.stderr.flush()
    out.file.flush()
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

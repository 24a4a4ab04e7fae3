"""Near-duplicate search benchmark: the catalog's in-memory hash index against reading every row.

A scrape asks the catalog "is this picture already here?" once per image it finds, so the search runs against
the whole catalog many times. A SQLite catalog is filled with N images with random perceptual hashes (a few
hundred of them close to the probe). Each round times, on the same database:

* the baseline: what a search without the index has to do, reading every (id, hash) row and comparing in
  Python (the catalog's first implementation);
* the index: ``HashIndex.near`` after its first load (which is timed on its own, as ``cold_ms``).

Rounds alternate the two so that a change of load on the machine weighs on both. ``similar_ratio`` = index
median / baseline median (goal: <= 0.1). Both must find the same images; a difference is an error.

    .venv/bin/python bench/similar.py            # 100,000 images
    .venv/bin/python bench/similar.py --quick    # 20,000 images
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, select

from imagineer_catalog.database import Database, create_catalog_engine
from imagineer_catalog.hashindex import HashIndex
from imagineer_catalog.models import ImageRow
from imagineer_catalog.schema import upgrade_to_head
from imagineer_common.perceptual import distance, is_perceptual_hash

GOAL = 0.1
MAX_DISTANCE = 5  # the scraper's default near-duplicate distance


def fill(database: Database, count: int, probe: int, rng: random.Random) -> None:
    rows = []
    for n in range(count):
        value = rng.getrandbits(64)
        if n % 500 == 0:  # a near copy of the probe now and then
            value = probe
            for bit in rng.sample(range(64), rng.randrange(0, 8)):
                value ^= 1 << bit
        rows.append({"filename": f"bench-{n}.png", "perceptual_hash": f"{value:016x}"})
    with database.write() as session:
        for start in range(0, len(rows), 10_000):
            session.execute(insert(ImageRow), rows[start:start + 10_000])


def scan(database: Database, wanted: str, max_distance: int) -> set[int]:
    found = set()
    with database.read() as session:
        for image_id, value in session.execute(select(ImageRow.id, ImageRow.perceptual_hash).where(
                ImageRow.perceptual_hash.is_not(None))):
            if is_perceptual_hash(value) and distance(wanted, value) <= max_distance:
                found.add(image_id)
    return found


def indexed(database: Database, index: HashIndex, wanted: str, max_distance: int) -> set[int]:
    with database.read() as session:
        return {image_id for image_id, _ in index.near(session, wanted, max_distance)}


def timed(work) -> tuple[float, set[int]]:
    started = time.perf_counter()
    result = work()
    return (time.perf_counter() - started) * 1000, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="20,000 images, 5 rounds")
    args = parser.parse_args(argv)
    count, rounds = (20_000, 5) if args.quick else (args.images, args.rounds)
    console = Console(stderr=True)
    rng = random.Random(2026)
    probe = rng.getrandbits(64)
    wanted = f"{probe:016x}"
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as folder:
        url = f"sqlite:///{Path(folder) / 'catalog.db'}"
        upgrade_to_head(url)
        database = Database(create_catalog_engine(url))
        try:
            with console.status(f"filling a catalog with {count:,} images"):
                fill(database, count, probe, rng)
            index = HashIndex()
            cold_ms, first = timed(lambda: indexed(database, index, wanted, MAX_DISTANCE))
            scan_ms, index_ms = [], []
            for _ in range(rounds):
                elapsed, expected = timed(lambda: scan(database, wanted, MAX_DISTANCE))
                scan_ms.append(elapsed)
                elapsed, got = timed(lambda: indexed(database, index, wanted, MAX_DISTANCE))
                index_ms.append(elapsed)
                if got != expected or first != expected:
                    console.print("[red]the index and the scan disagree[/red]")
                    return 1
        finally:
            database.engine.dispose()
    ratio = statistics.median(index_ms) / statistics.median(scan_ms)
    table = Table("figure", "value", "note")
    table.add_row("images", f"{count:,}", f"{len(first)} within {MAX_DISTANCE} bits of the probe")
    table.add_row("scan_ms (baseline)", f"{statistics.median(scan_ms):.1f}", "median, every row read and compared")
    table.add_row("index_ms", f"{statistics.median(index_ms):.2f}", "median, after the first load")
    table.add_row("cold_ms", f"{cold_ms:.1f}", "the first search, which loads the index")
    table.add_row("similar_ratio", f"{ratio:.4f}", f"<= {GOAL}: {'met' if ratio <= GOAL else 'MISSED'}")
    console.print(table)
    print(json.dumps({"images": count, "scan_ms": round(statistics.median(scan_ms), 2),
                      "index_ms": round(statistics.median(index_ms), 3), "cold_ms": round(cold_ms, 1),
                      "similar_ratio": round(ratio, 5), "goal": GOAL, "met": ratio <= GOAL}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the trainer offers for scraping, independent of gRPC: start, get, list, cancel and watch scrapes, run
them on a small pool of workers of their own (training never waits for a scrape), keep the catalog's
scrape-job records current, and mark scrapes a previous trainer left running as interrupted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from imagineer_common.catalog_client import CatalogError, ScrapeCatalog, ScrapeJobInfo
from imagineer_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from imagineer_common.eventlog import Event
from imagineer_trainer.jobqueue import JobQueue
from imagineer_trainer.scraping.addresses import AddressGuard
from imagineer_trainer.scraping.crawler import CREATED_BY, SOURCE_MODEL, Crawl, Limits
from imagineer_trainer.scraping.fetch import Fetcher, FetchError, HostRateLimiter, Stopped
from imagineer_trainer.scraping.jobs import (
    CANCELLED,
    COMPLETED,
    ENDED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    ScrapeJob,
    ScrapeRegistry,
    ScrapeSnapshot,
    not_found,
    now,
    require_cancellable,
    require_id,
)
from imagineer_trainer.scraping.request import ScrapeRequest, complete
from imagineer_trainer.scraping.robots import MAX_ROBOTS_BYTES, RobotsRules
from imagineer_trainer.scraping.settings import ROBOTS_AGENT, ScrapeSettings

log = logging.getLogger("imagineer.trainer.scraping")

WATCH_POLL_SECONDS = 1.0
CATALOG_UPDATE_SECONDS = 1.0  # counters reach the catalog at most this often while crawling, and at the end
MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE = 500, 50


def _catalog_unavailable(error: CatalogError) -> Unavailable:
    return Unavailable(f"the catalog cannot be reached: {error}", reason="CATALOG_UNAVAILABLE")


def snapshot_of(info: ScrapeJobInfo) -> ScrapeSnapshot:
    """A scrape as the catalog recorded it (one that is not running in this trainer)."""
    try:
        request = ScrapeRequest.from_config({**info.config, "source_url": info.source_url})
    except (TypeError, ValueError):
        request = ScrapeRequest(source_url=info.source_url)
    return ScrapeSnapshot(
        id=info.id, request=request, state=info.state, stage=info.stage, pages_seen=info.pages_seen,
        images_found=info.images_found, images_kept=info.images_kept, images_skipped=info.images_skipped,
        skip_reasons=dict(info.skip_reasons), error_count=info.error_count, error=info.error_message,
        album_id=info.album_id, created_at=info.create_time, started_at=info.start_time, ended_at=info.end_time)


def counters(job: ScrapeJob) -> dict:
    snapshot = job.snapshot()
    return {"stage": snapshot.stage, "pages_seen": snapshot.pages_seen, "images_found": snapshot.images_found,
            "images_kept": snapshot.images_kept, "images_skipped": snapshot.images_skipped,
            "skip_reasons": snapshot.skip_reasons, "error_count": snapshot.error_count,
            "error_message": snapshot.error[:2000]}


class CatalogSink:
    """The crawl's results, written through the catalog API."""

    def __init__(self, catalog: ScrapeCatalog) -> None:
        self.catalog = catalog
        self._last_update = 0.0

    def duplicate_of(self, sha256: str, perceptual_hash: str, max_distance: int) -> str | None:
        matches = self.catalog.find_similar(sha256=sha256, perceptual_hash=perceptual_hash,
                                            max_distance=max_distance)
        if any(match.sha256 == sha256 for match in matches):
            return "duplicate"
        return "near_duplicate" if matches else None

    def import_image(self, data: bytes, filename: str, album_id: str) -> tuple[str, bool]:
        return self.catalog.import_image(data=data, filename=filename, album_id=album_id)

    def add_label(self, image_id: str, text: str, label_type: str, source_prompt: str) -> None:
        self.catalog.add_label(image_id=image_id, text=text, label_type=label_type, source_model=SOURCE_MODEL,
                               source_prompt=source_prompt, created_by=CREATED_BY)

    def progress(self, job: ScrapeJob) -> None:
        if time.monotonic() - self._last_update < CATALOG_UPDATE_SECONDS:
            return
        self._last_update = time.monotonic()
        try:
            self.catalog.update_scrape_job(job.id, **counters(job))
        except CatalogError as error:  # progress is best effort; the final record is not
            log.warning("could not report progress of scrape %s: %s", job.id, error)


class Scraper:
    def __init__(self, *, settings: ScrapeSettings, catalog: ScrapeCatalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.registry = ScrapeRegistry()
        self.guard = AddressGuard(settings.allowed_networks)
        self.limiter = HostRateLimiter(settings.host_interval_seconds)
        self.limits = Limits(max_page_bytes=settings.max_page_bytes, max_image_bytes=settings.max_image_bytes,
                             near_duplicate_bits=settings.near_duplicate_bits, max_aspect=settings.max_aspect)
        self._start_lock = threading.Lock()
        self.queue: JobQueue[ScrapeJob] = JobQueue(
            name="scraper", what="scrape", capacity=settings.queue_capacity, run=self._run, workers=settings.workers,
            crashed=lambda job, error: self._end(job, FAILED, f"the scrape failed: {type(error).__name__}: {error}"))

    # --- life cycle ----------------------------------------------------------------------------------------------

    def recover(self) -> int:
        """Marks the scrapes the catalog shows as unfinished (a previous trainer stopped while they ran) as
        interrupted, with the reason; returns how many. A scrape is not resumed: its album keeps what it had."""
        count = 0
        for info in self.catalog.scrape_jobs(["pending", "queued", "running"]):
            if info.state == "pending":
                self.catalog.update_scrape_job(info.id, state="queued")
            self.catalog.update_scrape_job(
                info.id, state=INTERRUPTED, stage="interrupted",
                error_message=f"the trainer stopped while this scrape was {info.state}; the {info.images_kept} "
                              "images it imported are kept; start a new scrape to continue")
            count += 1
        return count

    def start_workers(self) -> None:
        self.queue.start()

    def stop(self, grace_seconds: float) -> None:
        """Running scrapes stop before their next request and are marked interrupted, as are waiting ones."""
        def stop_running() -> None:
            for job in self.registry.live():
                job.stop.set()

        self.queue.stop(grace_seconds, before_join=stop_running, withdrawn=lambda job: self._end(
            job, INTERRUPTED, "the trainer shut down before this scrape started"))

    # --- the API -------------------------------------------------------------------------------------------------

    def start(self, request: ScrapeRequest) -> ScrapeSnapshot:
        request = complete(request)
        with self._start_lock:
            if request.request_id:
                earlier = self.registry.find_request(request.request_id)
                if earlier is not None:
                    return earlier.snapshot()
            self.queue.check_room()  # before the catalog records a scrape that could not run
            key = f"scraper-{hashlib.sha256(request.request_id.encode()).hexdigest()}" if request.request_id else ""
            try:
                record = self.catalog.create_scrape_job(name=request.album_name, source_url=request.source_url,
                                                        config=request.to_config(), request_id=key)
            except CatalogError as error:
                raise _catalog_unavailable(error) from None
            known = self.registry.find(record.id)
            if known is not None:
                return known.snapshot()
            if record.state != "queued" or record.stage != "queued":  # a retry of a scrape an earlier trainer ran
                return snapshot_of(record)
            job = self.registry.add(ScrapeJob(id=record.id, request=request, created_at=record.create_time or now()))
            self.queue.submit(job, admit=lambda: job.emit("stage", stage="queued"))
            return job.snapshot()

    def _record(self, job_id: str) -> ScrapeJobInfo:
        require_id(job_id)
        try:
            return self.catalog.scrape_job(job_id)
        except CatalogError as error:
            if error.code in ("NOT_FOUND", "INVALID_ARGUMENT"):
                raise not_found(job_id) from None
            raise _catalog_unavailable(error) from None

    def get(self, job_id: str) -> ScrapeSnapshot:
        job = self.registry.find(job_id)
        return job.snapshot() if job is not None else snapshot_of(self._record(job_id))

    def list(self, page_size: int, page_token: str) -> tuple[list[ScrapeSnapshot], str]:
        if page_size < 0:
            raise InvalidArgument.for_field("page_size", "must not be negative")
        try:
            records, token = self.catalog.scrape_jobs_page(
                states=[], page_size=min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), page_token=page_token)
        except CatalogError as error:
            if error.code == "INVALID_ARGUMENT":
                raise InvalidArgument.for_field("page_token", "is not a token of this list") from None
            raise _catalog_unavailable(error) from None
        snapshots = []
        for record in records:
            live = self.registry.find(record.id)
            snapshots.append(live.snapshot() if live is not None else snapshot_of(record))
        return snapshots, token

    def cancel(self, job_id: str) -> ScrapeSnapshot:
        job = self.registry.find(job_id)
        if job is None:
            record = self._record(job_id)
            if record.state in ENDED:
                raise FailedPrecondition(f"scrape {job_id} has already ended ({record.state})",
                                         reason="SCRAPE_FINISHED")
            raise FailedPrecondition(f"scrape {job_id} is not running in this trainer", reason="SCRAPE_NOT_HERE")
        require_cancellable(job)
        job.cancel_requested.set()
        job.stop.set()
        if self.queue.withdraw(job):
            self._end(job, CANCELLED, "cancelled by request before it started")
        return job.snapshot()

    def watch(self, job_id: str, after_sequence: int,
              is_active: Callable[[], bool]) -> Iterator[Event[ScrapeSnapshot]]:
        if after_sequence < 0:
            raise InvalidArgument.for_field("after_sequence", "must not be negative")
        job = self.registry.find(job_id)
        if job is None:
            snapshot = snapshot_of(self._record(job_id))
            if after_sequence < 1:
                kind = "finished" if snapshot.state in ENDED else "stage"
                yield Event(sequence=1, kind=kind, data={"state": snapshot.state, "reason": snapshot.error,
                                                         "stage": snapshot.stage}, snapshot=snapshot)
            return
        yield from job.log.follow(after_sequence, is_active, WATCH_POLL_SECONDS)

    # --- the workers ---------------------------------------------------------------------------------------------

    def _robots_fetch(self, fetcher: Fetcher, job: ScrapeJob, url: str) -> tuple[int, bytes]:
        response = fetcher.get(url, max_bytes=MAX_ROBOTS_BYTES, stop=job.stop, accept_errors=True)
        return response.status, response.body

    def _run(self, job: ScrapeJob) -> None:
        request = job.request
        fetcher = Fetcher(self.guard, self.limiter, user_agent=self.settings.user_agent,
                          timeout_seconds=self.settings.timeout_seconds)
        try:
            self.catalog.update_scrape_job(job.id, state=RUNNING, stage="crawling")
            album_id = self.catalog.create_scraped_album(
                name=request.album_name, description=f"Images scraped from {request.source_url} (scrape {job.id})",
                config={"scrape_job_id": job.id, **request.to_config()}, request_id=f"scrape-{job.id}-album")
            self.catalog.update_scrape_job(job.id, album_id=album_id)
            job.update("stage", {"stage": "crawling"}, state=RUNNING, stage="crawling", started_at=now(),
                       album_id=album_id)
            robots = RobotsRules(lambda url: self._robots_fetch(fetcher, job, url), ROBOTS_AGENT)
            Crawl(job, fetcher, robots, CatalogSink(self.catalog), self.limits).run()
        except Stopped:
            pass
        except (FetchError, CatalogError) as error:
            self._end(job, FAILED, str(error))
            return
        finally:
            fetcher.close()
        kept = f"{job.images_kept} images kept" + (f" in album {job.album_id}" if job.album_id else "")
        if job.cancel_requested.is_set():
            self._end(job, CANCELLED, f"cancelled by request; {kept}")
        elif job.stop.is_set():
            self._end(job, INTERRUPTED, f"the trainer shut down while this scrape ran; {kept}")
        else:
            self._end(job, COMPLETED)

    def _end(self, job: ScrapeJob, state: str, reason: str = "") -> None:
        # The catalog first: a watcher who sees the end and then asks the catalog must find it there too.
        if job.ended:
            return
        record = {**counters(job), "stage": "done", "state": state}
        if reason or state != COMPLETED:
            record["error_message"] = reason[:2000]
        try:
            self.catalog.update_scrape_job(job.id, **record)
        except CatalogError as error:
            log.error("could not record the end of scrape %s in the catalog: %s", job.id, error)
        job.finish(state, reason)

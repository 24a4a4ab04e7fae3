"""One scrape's crawl: pages breadth-first from the start URL, and every new image on them fetched, checked,
deduplicated against the whole catalog and imported with its alt text and title as labels.

The catalog is reached through a ``Sink`` (the scrape service gives it one backed by the catalog client), so
this module knows nothing of gRPC. Every request honours robots.txt and the address guard (see fetch.py).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

from imagineer_trainer.scraping import validate
from imagineer_trainer.scraping.extract import ImageRef, decode_html, parse_page
from imagineer_trainer.scraping.fetch import Fetcher, FetchError
from imagineer_trainer.scraping.jobs import ScrapeJob
from imagineer_trainer.scraping.request import SAME_SITE
from imagineer_trainer.scraping.robots import RobotsRules

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
FAILED_REQUEST_REASONS = frozenset({"http_error", "blocked_address", "too_large"})
SOURCE_MODEL = "scraper"
CREATED_BY = "imagineer-scraper"


class Sink(Protocol):
    """Where a crawl's results go (the catalog)."""

    def duplicate_of(self, sha256: str, perceptual_hash: str, max_distance: int) -> str | None:
        """"duplicate" (same bytes), "near_duplicate" (same picture) or None, across the whole catalog."""

    def import_image(self, data: bytes, filename: str, album_id: str) -> tuple[str, bool]:
        """Stores the image in the album; returns its id and whether the bytes were already stored."""

    def add_label(self, image_id: str, text: str, label_type: str, source_prompt: str) -> None:
        """Adds a label (label_type "caption" or "tag") recorded as made by the scraper."""

    def progress(self, job: ScrapeJob) -> None:
        """The job's counters changed (the sink decides how often to pass that on)."""


@dataclass(frozen=True)
class Limits:
    max_page_bytes: int
    max_image_bytes: int
    near_duplicate_bits: int
    max_aspect: float


def filename_for(url: str, picture_format: str) -> str:
    """A plain file name from the URL's last path segment, with the extension of the real format."""
    stem = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:100] or "image"
    return f"{stem}.{validate.EXTENSIONS[picture_format]}"


class Crawl:
    def __init__(self, job: ScrapeJob, fetcher: Fetcher, robots: RobotsRules, sink: Sink, limits: Limits) -> None:
        self.job = job
        self.request = job.request
        self.fetcher = fetcher
        self.robots = robots
        self.sink = sink
        self.limits = limits
        self.rules = validate.Rules(min_width=self.request.min_width, min_height=self.request.min_height,
                                    max_aspect=limits.max_aspect, formats=frozenset(self.request.allowed_formats))
        self._images_seen: set[str] = set()

    def _follows(self, url: str) -> bool:
        return self.request.link_policy != SAME_SITE or (urlsplit(url).hostname or "").lower() == self.request.host

    def _full(self) -> bool:
        return self.job.images_kept >= self.request.max_images

    def run(self) -> None:
        """Crawls until the queue is empty or a limit is reached; raises fetch.Stopped on cancel or shutdown."""
        start = self.request.source_url
        queue: deque[tuple[str, int]] = deque([(start, 0)])
        queued = {start}
        while queue and self.job.pages_seen < self.request.max_pages and not self._full():
            url, depth = queue.popleft()
            links = self._page(url, depth)
            if depth < self.request.max_depth:
                for link in links:
                    if link not in queued and self._follows(link):
                        queued.add(link)
                        queue.append((link, depth + 1))
            self.sink.progress(self.job)

    def _page(self, url: str, depth: int) -> list[str]:
        try:
            response = self.fetcher.get(url, max_bytes=self.limits.max_page_bytes, stop=self.job.stop,
                                        allowed=self.robots.allows)
        except FetchError as error:
            if error.reason in FAILED_REQUEST_REASONS:
                self.job.failed_request(str(error))
            self.job.emit("page", url=url, depth=depth, skip_reason=error.reason)
            return []
        if response.content_type not in HTML_TYPES:
            self.job.emit("page", url=url, depth=depth, skip_reason="not_html")
            return []
        page = parse_page(decode_html(response.body), response.url)
        fresh = [image for image in page.images if image.url not in self._images_seen]
        self._images_seen.update(image.url for image in fresh)
        self.job.update("page", {"url": url, "depth": depth, "skip_reason": ""},
                        pages_seen=self.job.pages_seen + 1, images_found=self.job.images_found + len(fresh))
        for image in fresh:
            if self._full():
                break
            self._image(image, response.url)
        return page.links

    def _image(self, image: ImageRef, page_url: str) -> None:
        job = self.job
        try:
            response = self.fetcher.get(image.url, max_bytes=self.limits.max_image_bytes, stop=job.stop,
                                        allowed=self.robots.allows)
        except FetchError as error:
            if error.reason in FAILED_REQUEST_REASONS:
                job.failed_request(str(error))
            job.skip(image.url, error.reason)
            return
        checked = validate.check(response.body, self.rules)
        if isinstance(checked, str):
            job.skip(image.url, checked)
            return
        sha256 = hashlib.sha256(response.body).hexdigest()
        duplicate = self.sink.duplicate_of(sha256, checked.perceptual_hash, self.limits.near_duplicate_bits)
        if duplicate:
            job.skip(image.url, duplicate)
            return
        image_id, existed = self.sink.import_image(response.body, filename_for(image.url, checked.format),
                                                   job.album_id)
        if existed:  # stored by someone else since we looked
            job.skip(image.url, "duplicate")
            return
        provenance = f"{image.url} on {page_url}"
        if image.alt:
            self.sink.add_label(image_id, image.alt, "caption", f"img alt text of {provenance}")
        if image.title and image.title != image.alt:
            self.sink.add_label(image_id, image.title, "tag", f"img title of {provenance}")
        job.update("image", {"url": image.url, "image_id": image_id, "skip_reason": ""},
                   images_kept=job.images_kept + 1)

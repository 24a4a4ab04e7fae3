"""A scrape request, validated and with defaults applied (no gRPC)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from imagineer_common.errors import ViolationCollector
from imagineer_trainer.scraping.validate import FORMATS

SAME_SITE, FOLLOW_ALL = "same_site", "follow_all"
LINK_POLICIES = (SAME_SITE, FOLLOW_ALL)
DEFAULT_FORMATS = ("png", "jpeg", "webp", "gif")
DEFAULT_DEPTH, MAX_DEPTH = 2, 10
DEFAULT_PAGES, MAX_PAGES = 20, 1000
DEFAULT_IMAGES, MAX_IMAGES = 100, 10_000
DEFAULT_MIN_SIDE, MAX_SIDE = 256, 16384
MAX_URL = 2000


@dataclass
class ScrapeRequest:
    source_url: str = ""
    max_depth: int | None = None
    max_pages: int = 0
    max_images: int = 0
    link_policy: str = SAME_SITE
    min_width: int = 0
    min_height: int = 0
    allowed_formats: list[str] = field(default_factory=list)
    album_name: str = ""
    request_id: str = ""

    def to_config(self) -> dict[str, Any]:
        """What the catalog's scrape-job record keeps (numbers come back as floats)."""
        data = asdict(self)
        data.pop("request_id")
        return data

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> ScrapeRequest:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        request = cls(**known)
        for name in ("max_pages", "max_images", "min_width", "min_height"):
            setattr(request, name, int(getattr(request, name) or 0))
        request.max_depth = None if request.max_depth is None else int(request.max_depth)
        request.allowed_formats = list(request.allowed_formats or [])
        return request

    @property
    def host(self) -> str:
        return (urlsplit(self.source_url).hostname or "").lower()


def complete(request: ScrapeRequest) -> ScrapeRequest:
    """Checks every field (all problems at once) and fills in the defaults."""
    errors = ViolationCollector()
    url = request.source_url.strip()
    parts = urlsplit(url)
    if not url:
        errors.add("source_url", "is required")
    elif len(url) > MAX_URL:
        errors.add("source_url", f"must be at most {MAX_URL} characters")
    elif parts.scheme not in ("http", "https"):
        errors.add("source_url", "must be an absolute http:// or https:// URL")
    elif not parts.hostname:
        errors.add("source_url", "must name a host")
    else:
        try:
            parts.port  # noqa: B018 - raises for a bad port
        except ValueError:
            errors.add("source_url", "has an invalid port")
    errors.check(request.max_depth is None or 0 <= request.max_depth <= MAX_DEPTH, "max_depth",
                 f"must be between 0 and {MAX_DEPTH}")
    errors.check(0 <= request.max_pages <= MAX_PAGES, "max_pages", f"must be between 1 and {MAX_PAGES} (0 = default)")
    errors.check(0 <= request.max_images <= MAX_IMAGES, "max_images",
                 f"must be between 1 and {MAX_IMAGES} (0 = default)")
    errors.check(request.link_policy in LINK_POLICIES, "link_policy", "is not a known link policy")
    for name in ("min_width", "min_height"):
        errors.check(0 <= getattr(request, name) <= MAX_SIDE, name, f"must be between 0 and {MAX_SIDE}")
    for index, name in enumerate(request.allowed_formats):
        errors.check(name.strip().lower() in FORMATS, f"allowed_formats[{index}]",
                     f"{name!r} is not one of {', '.join(FORMATS)}")
    errors.check(len(request.album_name) <= 255, "album_name", "must be at most 255 characters")
    errors.check(len(request.request_id) <= 128, "request_id", "must be at most 128 characters")
    errors.raise_if_any()
    formats = list(dict.fromkeys(name.strip().lower() for name in request.allowed_formats)) or list(DEFAULT_FORMATS)
    host = (parts.hostname or "").lower()
    return ScrapeRequest(
        source_url=url, max_depth=DEFAULT_DEPTH if request.max_depth is None else request.max_depth,
        max_pages=request.max_pages or DEFAULT_PAGES, max_images=request.max_images or DEFAULT_IMAGES,
        link_policy=request.link_policy, min_width=request.min_width or DEFAULT_MIN_SIDE,
        min_height=request.min_height or DEFAULT_MIN_SIDE, allowed_formats=formats,
        album_name=request.album_name.strip() or f"Scraped from {host}", request_id=request.request_id)

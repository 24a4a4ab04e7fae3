"""Scraping settings, read once at start-up from IMAGINEER_TRAINER_SCRAPE_* variables (see docs/trainer.md)."""

from __future__ import annotations

from dataclasses import dataclass

from imagineer_common import env
from imagineer_trainer.scraping.addresses import IPNetwork, parse_networks

USER_AGENT = "ImagineerScraper/0.1 (self-hosted image collector for LoRA training; honours robots.txt)"
ROBOTS_AGENT = "ImagineerScraper"  # the product token robots.txt rules are matched against


@dataclass(frozen=True)
class ScrapeSettings:
    allowed_networks: tuple[IPNetwork, ...] = ()
    host_interval_seconds: float = 1.0
    timeout_seconds: float = 20.0
    max_page_bytes: int = 5 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    near_duplicate_bits: int = 5
    max_aspect: float = 4.0
    workers: int = 2
    queue_capacity: int = 16
    user_agent: str = USER_AGENT

    @classmethod
    def from_env(cls, prefix: str) -> ScrapeSettings:
        p = prefix + "SCRAPE_"
        try:
            networks = parse_networks(env.read_list(p + "ALLOWED_NETWORKS"))
        except ValueError as error:
            raise env.SettingError(f"{p}ALLOWED_NETWORKS: {error}") from None
        return cls(
            allowed_networks=networks,
            host_interval_seconds=env.read_float(p + "HOST_INTERVAL_SECONDS", 1.0, minimum=0.0, maximum=3600.0),
            timeout_seconds=env.read_float(p + "TIMEOUT_SECONDS", 20.0, minimum=0.1, maximum=600.0),
            max_page_bytes=env.read_int(p + "MAX_PAGE_BYTES", 5 * 1024 * 1024, minimum=1024, maximum=2**30),
            max_image_bytes=env.read_int(p + "MAX_IMAGE_BYTES", 20 * 1024 * 1024, minimum=1024, maximum=2**31),
            near_duplicate_bits=env.read_int(p + "NEAR_DUPLICATE_BITS", 5, minimum=0, maximum=16),
            max_aspect=env.read_float(p + "MAX_ASPECT", 4.0, minimum=1.0, maximum=100.0),
            workers=env.read_int(p + "WORKERS", 2, minimum=1, maximum=32),
            queue_capacity=env.read_int(p + "QUEUE_CAPACITY", 16, minimum=1, maximum=1000),
            user_agent=env.read_str(p + "USER_AGENT", USER_AGENT))

"""robots.txt, fetched once per origin (scheme, host, port) and consulted before every page and image.

Missing (404 and other 4xx) means everything is allowed; 401 and 403 mean nothing is; a server error, a
network error or a refused address also mean nothing is, for now (a scrape never guesses in the site's
disfavour). Rules are read with the standard library's parser for our product token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from imagineer_trainer.scraping.fetch import Stopped

MAX_ROBOTS_BYTES = 512 * 1024
ALLOW_ALL, DENY_ALL = "allow", "deny"

# (status, body); raises any exception when the file cannot be fetched.
RobotsFetch = Callable[[str], tuple[int, bytes]]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def rules_from(status: int, body: bytes) -> RobotFileParser | str:
    """The parsed rules for a robots.txt answer, or ALLOW_ALL / DENY_ALL."""
    if status in (401, 403):
        return DENY_ALL
    if 400 <= status < 500:
        return ALLOW_ALL
    if status >= 500 or status < 200:
        return DENY_ALL
    parser = RobotFileParser()
    parser.parse(body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace").splitlines())
    return parser


class RobotsRules:
    """The robots.txt of every origin a scrape touches, fetched on first use."""

    def __init__(self, fetch: RobotsFetch, agent: str) -> None:
        self._fetch = fetch
        self._agent = agent
        self._rules: dict[str, RobotFileParser | str] = {}
        self._lock = threading.Lock()

    def _for(self, origin: str) -> RobotFileParser | str:
        with self._lock:
            known = self._rules.get(origin)
        if known is not None:
            return known
        try:
            status, body = self._fetch(origin + "/robots.txt")
            rules = rules_from(status, body)
        except Stopped:
            raise
        except Exception:  # the site cannot tell us what it allows: assume nothing
            rules = DENY_ALL
        with self._lock:
            return self._rules.setdefault(origin, rules)

    def allows(self, url: str) -> bool:
        rules = self._for(origin_of(url))
        if isinstance(rules, str):
            return rules == ALLOW_ALL
        return rules.can_fetch(self._agent, url)

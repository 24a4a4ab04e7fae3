"""HTTP GET for a scrape: guarded addresses, redirects followed by hand (each hop checked again), per-host
rate limiting, timeouts, size limits, and a stop that takes effect at once, even while a server is silent.

The connection goes to the address the guard checked (the URL's host is replaced by it), while the Host
header and the TLS server name stay the original host name, so certificates are verified as usual and a
DNS answer that changes between check and connect (rebinding) has no effect. Proxies from the environment
are ignored: they would connect on our behalf to addresses we never checked.

Each exchange runs on a helper thread while the caller waits on it and on the stop: a cancelled scrape does
not wait for a silent server's timeout. The abandoned exchange ends by itself (at its timeout at the latest);
its thread is a daemon, so it never holds up the trainer's exit either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from imagineer_trainer.scraping.addresses import AddressGuard, BlockedAddress

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
READ_CHUNK = 64 * 1024
STOP_POLL_SECONDS = 0.1


class Stopped(Exception):
    """The scrape was asked to stop (cancel or shutdown) while waiting or reading."""


class FetchError(Exception):
    """A request did not give a usable answer; ``reason`` is a stable skip reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Response:
    url: str  # after redirects
    status: int
    content_type: str  # lowercase, without parameters
    body: bytes


class HostRateLimiter:
    """At most one request per ``interval`` seconds to each host, across every scrape of this trainer."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str, stop: threading.Event) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.interval
        delay = slot - time.monotonic()
        if delay > 0 and stop.wait(delay):
            raise Stopped()


class Fetcher:
    def __init__(self, guard: AddressGuard, limiter: HostRateLimiter, *, user_agent: str,
                 timeout_seconds: float) -> None:
        self.guard = guard
        self.limiter = limiter
        self.user_agent = user_agent
        self._client = httpx.Client(trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout_seconds),
                                    headers={"User-Agent": user_agent}, verify=True)

    def close(self) -> None:
        self._client.close()

    def get(self, url: str, *, max_bytes: int, stop: threading.Event,
            allowed: Callable[[str], bool] = lambda _url: True, accept_errors: bool = False) -> Response:
        """Fetches ``url``. Every hop must pass the address guard and ``allowed`` (robots). Raises FetchError
        (reasons robots, blocked_address, http_error, too_large) or Stopped. With ``accept_errors`` an HTTP
        error status is returned instead of raised."""
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError("http_error", f"{url}: only http and https URLs can be fetched")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                address = self.guard.check(parts.hostname, port)
            except BlockedAddress as error:
                raise FetchError("blocked_address", f"{url}: {error}") from None
            except ValueError:
                raise FetchError("http_error", f"{url}: invalid port") from None
            # The address first: robots.txt of a refused host is never fetched.
            if not allowed(url):
                raise FetchError("robots", f"{url}: robots.txt does not allow it")
            if stop.is_set():
                raise Stopped()
            self.limiter.wait(parts.hostname, stop)
            exchange = partial(self._exchange, url, parts, address, max_bytes, stop, accept_errors)
            answer = _wait(_in_background(exchange), stop)
            if isinstance(answer, str):  # a redirect: the next hop is checked like the first
                url = answer
                continue
            return answer
        raise FetchError("http_error", f"{url}: more than {MAX_REDIRECTS} redirects")

    def _exchange(self, url: str, parts: SplitResult, address: str, max_bytes: int, stop: threading.Event,
                  accept_errors: bool) -> Response | str:
        """One request to the checked ``address``: the response, or the absolute URL a redirect points to."""
        target = httpx.URL(url).copy_with(host=address)
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        try:
            with self._client.stream("GET", target, headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
                                     extensions=extensions) as response:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    return urljoin(url, location.strip())
                if response.status_code >= 400 and not accept_errors:
                    raise FetchError("http_error", f"{url}: HTTP {response.status_code}")
                body = self._read(response, url, max_bytes, stop)
                content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                return Response(url=url, status=response.status_code, content_type=content_type, body=body)
        except httpx.HTTPError as error:
            raise FetchError("http_error", f"{url}: {type(error).__name__}: {error}") from None

    @staticmethod
    def _read(response: httpx.Response, url: str, max_bytes: int, stop: threading.Event) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError("too_large", f"{url}: {declared} bytes, more than the limit of {max_bytes}")
        parts: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes(READ_CHUNK):
            if stop.is_set():
                raise Stopped()
            size += len(chunk)
            if size > max_bytes:
                raise FetchError("too_large", f"{url}: more than the limit of {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)


def _in_background(work: Callable[[], Response | str]) -> Future:
    """Runs ``work`` on a daemon thread; its result or exception arrives in the returned future."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as error:  # handed to the waiting caller, who raises it
            future.set_exception(error)

    threading.Thread(target=run, daemon=True, name="scrape-http").start()
    return future


def _wait(exchange: Future, stop: threading.Event) -> Response | str:
    """The exchange's result, or Stopped as soon as ``stop`` is set (the exchange is left to end by itself)."""
    while True:
        try:
            return exchange.result(timeout=STOP_POLL_SECONDS)
        except FutureTimeout:
            if stop.is_set():
                exchange.cancel()
                raise Stopped() from None

"""Scraping domain code on its own: the address guard, robots.txt rules, request checks, HTML extraction and
image validation (no network beyond the loopback, no catalog)."""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time

import pytest
from PIL import Image

from imagineer_common.errors import InvalidArgument
from imagineer_trainer.scraping import validate
from imagineer_trainer.scraping.addresses import AddressGuard, BlockedAddress, is_public, parse_networks
from imagineer_trainer.scraping.extract import parse_page
from imagineer_trainer.scraping.fetch import Fetcher, FetchError, HostRateLimiter, Stopped
from imagineer_trainer.scraping.request import ScrapeRequest, complete
from imagineer_trainer.scraping.robots import RobotsRules, rules_from

# --- the address guard -------------------------------------------------------------------------------------------

REFUSED = ["127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
           "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.10", "198.18.0.1",
           "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1",
           "2001:db8::1", "64:ff9b::a00:1", "2002:a00:1::1", "fec0::1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", REFUSED)
def test_special_addresses_are_refused(text):
    address = ipaddress.ip_address(text)
    assert not is_public(address)
    with pytest.raises(BlockedAddress, match="IMAGINEER_TRAINER_SCRAPE_ALLOWED_NETWORKS"):
        AddressGuard().check(text, 80)


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text):
    assert AddressGuard().check(text, 443) == str(ipaddress.ip_address(text))


def test_the_allow_list_opens_exactly_its_networks():
    guard = AddressGuard(parse_networks(["127.0.0.0/8", "fd00::/8", "10.1.2.3"]))
    assert guard.check("127.0.0.1", 80) == "127.0.0.1"
    assert guard.check("[fd00::5]", 80) == "fd00::5"
    assert guard.check("10.1.2.3", 80) == "10.1.2.3"
    assert guard.check("::ffff:127.0.0.2", 80) == "::ffff:7f00:2"  # IPv4-mapped, judged as IPv4
    for refused in ("10.1.2.4", "169.254.169.254", "::1", "fe80::1", "192.168.0.1"):
        with pytest.raises(BlockedAddress):
            guard.check(refused, 80)


def test_a_name_is_refused_when_any_of_its_addresses_is():
    answers = {"mixed.example": ["93.184.216.34", "10.0.0.7"], "public.example": ["93.184.216.34"],
               "nowhere.example": []}
    guard = AddressGuard(resolve=lambda host, port: answers[host])
    assert guard.check("public.example", 80) == "93.184.216.34"
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.7"):
        guard.check("mixed.example", 80)
    with pytest.raises(BlockedAddress, match="does not resolve"):
        guard.check("nowhere.example", 80)


def test_bad_networks_are_named():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/33"])


def test_a_refused_host_is_never_connected_to():
    """The fetcher checks before it connects: a refused address gives blocked_address, and robots.txt of that
    host is not even asked for."""
    asked = []
    fetcher = Fetcher(AddressGuard(), HostRateLimiter(0), user_agent="test", timeout_seconds=1)
    try:
        with pytest.raises(FetchError) as caught:
            fetcher.get("http://169.254.169.254/latest/meta-data", max_bytes=100, stop=threading.Event(),
                        allowed=lambda url: asked.append(url) or True)
    finally:
        fetcher.close()
    assert caught.value.reason == "blocked_address" and asked == []


def test_a_rate_limited_wait_ends_at_once_on_stop():
    limiter = HostRateLimiter(60)
    stop = threading.Event()
    limiter.wait("example.org", stop)  # the first request goes at once
    stop.set()
    with pytest.raises(Stopped):
        limiter.wait("example.org", stop)


def test_a_stop_ends_a_request_to_a_silent_server_without_waiting_for_its_timeout():
    """A server that accepts and never answers: the scrape's cancel must not wait the 30 s timeout out."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    fetcher = Fetcher(AddressGuard(parse_networks(["127.0.0.0/8"])), HostRateLimiter(0), user_agent="test",
                      timeout_seconds=30)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(Stopped):
            fetcher.get(f"http://127.0.0.1:{port}/slow", max_bytes=100, stop=stop)
        waited = time.monotonic() - started
        abandoned = [thread for thread in threading.enumerate() if thread.name == "scrape-http"]
        assert abandoned and all(thread.daemon for thread in abandoned), "an abandoned request never delays exit"
    finally:
        fetcher.close()
        listener.close()
        for connection, _ in accepted:
            connection.close()
    assert accepted, "the request reached the server"
    assert waited < 15, f"the stop took {waited:.1f} s: it waited for the request's timeout"


# --- robots.txt --------------------------------------------------------------------------------------------------

ROBOTS = b"""User-agent: *
Disallow: /private/

User-agent: ImagineerScraper
Disallow: /no-scrapers/
Disallow: /private/
"""


def test_robots_rules_are_read_for_our_token():
    rules = RobotsRules(lambda url: (200, ROBOTS), "ImagineerScraper")
    assert rules.allows("http://site.test/index.html")
    assert not rules.allows("http://site.test/private/cat.png")
    assert not rules.allows("http://site.test/no-scrapers/page.html")
    assert not rules.allows("http://other.test/no-scrapers/page.html")  # its own robots.txt, same answer here


def test_robots_answers_without_rules():
    assert rules_from(404, b"") == "allow"
    assert rules_from(410, b"") == "allow"
    assert rules_from(401, b"") == "deny" and rules_from(403, b"") == "deny"
    assert rules_from(503, b"") == "deny"


def test_robots_is_fetched_once_per_origin_and_a_failure_denies():
    fetched = []

    def fetch(url):
        fetched.append(url)
        if "down.test" in url:
            raise OSError("connection refused")
        return 200, ROBOTS

    rules = RobotsRules(fetch, "ImagineerScraper")
    assert rules.allows("http://site.test/a") and rules.allows("http://site.test/b")
    assert not rules.allows("https://down.test/a")
    assert fetched == ["http://site.test/robots.txt", "https://down.test/robots.txt"]


def test_a_stop_while_reading_robots_is_not_taken_for_a_missing_file():
    def fetch(url):
        raise Stopped()

    with pytest.raises(Stopped):
        RobotsRules(fetch, "ImagineerScraper").allows("http://site.test/")


# --- requests, pages, images -------------------------------------------------------------------------------------


def test_request_defaults():
    request = complete(ScrapeRequest(source_url="https://Example.org/gallery"))
    assert (request.max_depth, request.max_pages, request.max_images) == (2, 20, 100)
    assert (request.min_width, request.min_height) == (256, 256)
    assert request.allowed_formats == ["png", "jpeg", "webp", "gif"]
    assert request.album_name == "Scraped from example.org" and request.link_policy == "same_site"
    assert complete(ScrapeRequest(source_url="http://a.test/", max_depth=0)).max_depth == 0


@pytest.mark.parametrize(("fields", "field"), [
    ({"source_url": ""}, "source_url"), ({"source_url": "ftp://a.test/"}, "source_url"),
    ({"source_url": "file:///etc/passwd"}, "source_url"), ({"source_url": "a.test/page"}, "source_url"),
    ({"source_url": "http://a.test:99999/"}, "source_url"), ({"max_depth": -1}, "max_depth"),
    ({"max_depth": 11}, "max_depth"), ({"max_pages": -1}, "max_pages"), ({"max_images": -5}, "max_images"),
    ({"min_width": -1}, "min_width"), ({"min_height": 20000}, "min_height"),
    ({"allowed_formats": ["png", "svg"]}, "allowed_formats[1]"), ({"album_name": "x" * 256}, "album_name"),
    ({"link_policy": "everything"}, "link_policy")])
def test_request_problems_name_the_field(fields, field):
    with pytest.raises(InvalidArgument) as caught:
        complete(ScrapeRequest(**{"source_url": "http://a.test/", **fields}))
    assert field in [violation.field for violation in caught.value.violations]


def test_links_and_images_are_resolved_and_keep_alt_and_title():
    html = """<html><head><base href="/gallery/"></head><body>
      <a href="page2.html#top">next</a> <a href="mailto:x@y.z">mail</a> <a href="javascript:void(0)">js</a>
      <a href="https://other.test/x">other</a> <a href="page2.html">again</a>
      <img src="cat.png" alt="  A grey   cat " title="Cat">
      <img src="cat.png" alt="" title="ignored, seen before">
      <img src="data:image/png;base64,AAAA"> <img src="//cdn.test/dog.jpg" title="Dog">
    </body></html>"""
    page = parse_page(html, "http://site.test/index.html")
    assert page.links == ["http://site.test/gallery/page2.html", "https://other.test/x"]
    assert [(i.url, i.alt, i.title) for i in page.images] == [
        ("http://site.test/gallery/cat.png", "A grey cat", "Cat"), ("http://cdn.test/dog.jpg", "", "Dog")]


def _encoded(width, height, fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_validation_gives_stable_reasons():
    rules = validate.Rules(min_width=32, min_height=32, max_aspect=3.0, formats=frozenset({"png", "jpeg"}))
    picture = validate.check(_encoded(64, 48), rules)
    assert isinstance(picture, validate.Picture) and (picture.format, picture.width, picture.height) == ("PNG", 64, 48)
    assert validate.check(_encoded(64, 48, "WEBP"), rules) == "format"
    assert validate.check(_encoded(16, 48), rules) == "too_small"
    assert validate.check(_encoded(200, 40), rules) == "bad_aspect"
    assert validate.check(b"<html>not an image</html>", rules) == "undecodable"
    assert validate.check(_encoded(64, 48)[:60], rules) == "undecodable"

"""Contract: the trainer's ScrapingService against a small local website and the real catalog.

The site (tests/harness/website.py, on 127.0.0.1, which the trainer's allow-list names) has three reachable
pages and a deeper one, images in four formats and several sizes, an exact duplicate, a re-encoded and
resized near duplicate, two pictures that were in the catalog before the scrape, a too-small, a too-thin, a
broken and a BMP image, a robots.txt that forbids /private/, a missing image, and redirects to addresses the
allow-list does not name (10.0.0.1, 169.254.169.254 and a trap server on [::1] that must never be reached).
The counts of what is kept and why the rest is skipped are exact.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import grpc
import pytest
from harness.catalog_client import upload_image
from harness.concurrency import expect_error
from harness.images import picture, picture_bytes
from harness.processes import ADMIN_METADATA
from harness.website import Resource, Website, page

from imagineer.catalog.v1 import catalog_service_pb2 as cat_api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import scraping_service_pb2 as api
from imagineer.trainer.v1 import scraping_service_pb2_grpc
from imagineer_common.grpc_errors import error_reason, field_violations
from imagineer_common.perceptual import distance, perceptual_hash

COMPLETED, CANCELLED = common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_CANCELLED
RUNNING, INTERRUPTED = common_pb2.JOB_STATE_RUNNING, common_pb2.JOB_STATE_INTERRUPTED
SCRAPE_ENV = {"IMAGINEER_TRAINER_SCRAPE_ALLOWED_NETWORKS": "127.0.0.0/8",
              "IMAGINEER_TRAINER_SCRAPE_HOST_INTERVAL_SECONDS": "0",
              "IMAGINEER_TRAINER_SCRAPE_TIMEOUT_SECONDS": "5"}
ROBOTS = b"User-agent: *\nDisallow: /private/\n"


def _jpeg(image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class ScrapeClient:
    stub: scraping_service_pb2_grpc.ScrapingServiceStub
    metadata: tuple = ADMIN_METADATA

    def start(self, source_url: str, **fields) -> api.Scrape:
        return self.stub.StartScrape(api.StartScrapeRequest(source_url=source_url, **fields), metadata=self.metadata,
                                     timeout=30)

    def get(self, scrape_id: str) -> api.Scrape:
        return self.stub.GetScrape(api.GetScrapeRequest(id=scrape_id), metadata=self.metadata, timeout=10)

    def list(self, page_size: int = 0, page_token: str = "") -> api.ListScrapesResponse:
        return self.stub.ListScrapes(api.ListScrapesRequest(page_size=page_size, page_token=page_token),
                                     metadata=self.metadata, timeout=10)

    def cancel(self, scrape_id: str) -> api.Scrape:
        return self.stub.CancelScrape(api.CancelScrapeRequest(id=scrape_id), metadata=self.metadata, timeout=10)

    def watch(self, scrape_id: str, after_sequence: int = 0, timeout: float = 120):
        return self.stub.WatchScrape(api.WatchScrapeRequest(id=scrape_id, after_sequence=after_sequence),
                                     metadata=self.metadata, timeout=timeout)

    def events(self, scrape_id: str, after_sequence: int = 0) -> list[api.WatchScrapeResponse]:
        return list(self.watch(scrape_id, after_sequence))

    def finish(self, scrape_id: str) -> api.Scrape:
        events = self.events(scrape_id)
        assert events and events[-1].WhichOneof("event") == "finished", "the watch stream ended early"
        return events[-1].scrape

    def wait_for(self, scrape_id: str, matches, timeout: float = 60) -> api.WatchScrapeResponse:
        stream = self.watch(scrape_id, timeout=timeout)
        try:
            for event in stream:
                if matches(event):
                    return event
        finally:
            stream.cancel()
        raise AssertionError(f"scrape {scrape_id} ended without such an event")


def _client(service) -> tuple[ScrapeClient, grpc.Channel]:
    channel = grpc.insecure_channel(service.address)
    return ScrapeClient(scraping_service_pb2_grpc.ScrapingServiceStub(channel)), channel


@pytest.fixture(scope="module")
def scraper_trainer(module_trainers):
    """A trainer whose allow-list names the loopback network and that does not rate-limit (tests are local)."""
    return module_trainers(**SCRAPE_ENV)


@pytest.fixture(scope="module")
def scr(scraper_trainer):
    client, channel = _client(scraper_trainer.service)
    yield client
    channel.close()


def _album(cat, album_id: str) -> res.Album:
    return cat.stub.GetAlbum(cat_api.GetAlbumRequest(id=album_id), metadata=cat.metadata, timeout=10)


def _album_images(cat, album_id: str) -> list[res.Image]:
    reply = cat.stub.ListAlbumImages(cat_api.ListAlbumImagesRequest(album_id=album_id, page_size=500),
                                     metadata=cat.metadata, timeout=10)
    return [entry.image for entry in reply.album_images]


def _labels(cat, image_id: str) -> list[tuple[str, int, str]]:
    reply = cat.stub.ListLabels(cat_api.ListLabelsRequest(image_id=image_id), metadata=cat.metadata, timeout=10)
    return [(label.text, label.label_type, label.source_model) for label in reply.labels]


def _record(cat, scrape_id: str) -> res.ScrapeJob:
    return cat.stub.GetScrapeJob(cat_api.GetScrapeJobRequest(id=scrape_id), metadata=cat.metadata, timeout=10)


# --- the small site ----------------------------------------------------------------------------------------------

RED, BLUE, TINY, GREEN, YELLOW, ALREADY, ALREADY_NEAR, BANNER, BMP, DEEP, HIDDEN = range(300, 311)


@pytest.fixture(scope="module")
def trap():
    """A server on the IPv6 loopback, which the allow-list (127.0.0.0/8) does not name: nothing may reach it."""
    trap_picture = Resource(body=picture_bytes(seed=999), content_type="image/png")
    site = Website(host="::1", resources={"/trap.png": trap_picture})
    yield site.start()
    site.stop()


@pytest.fixture(scope="module")
def site(trap, cat):
    pictures = {seed: perceptual_hash(picture(120, 90, seed)) for seed in (RED, BLUE, GREEN, YELLOW, ALREADY,
                                                                            ALREADY_NEAR, DEEP, HIDDEN)}
    assert min(distance(a, b) for a in pictures.values() for b in pictures.values() if a != b) > 10
    red = picture_bytes(120, 90, RED)
    already = picture_bytes(120, 90, ALREADY)
    # In the catalog before the scrape: one with the very bytes the site serves, one as a PNG that the site
    # serves re-encoded and resized.
    upload_image(cat.stub, already, cat.metadata, filename="already.png")
    upload_image(cat.stub, picture_bytes(120, 90, ALREADY_NEAR), cat.metadata, filename="already-near.png")
    png, jpeg = "image/png", "image/jpeg"
    website = Website()
    website.resources = {
        "/robots.txt": Resource(body=ROBOTS, content_type="text/plain"),
        "/index.html": page(
            links=["/a.html", "/b.html", "/private/secret.html", "/index.html#top", "mailto:someone@example.org"],
            images=[("/img/red.png", "A red wave", "Red"), ("/img/blue.jpg", "Blue waves over sand", ""),
                    ("/img/tiny.png", "tiny", ""), ("/img/broken.png", "broken", ""),
                    ("/private/hidden.png", "hidden", ""), ("/redirect/private.png", "", ""),
                    ("/redirect/metadata.png", "", ""), ("/redirect/v6.png", "", ""), ("/img/missing.png", "", ""),
                    ("/img/banner.png", "a banner", "")]),
        "/a.html": page(
            links=["/c.html", "/index.html"],
            images=[("/img/green.webp", "Green", "Green"), ("/img/red-copy.png", "copy", ""),
                    ("/img/red-resized.jpg", "resized", ""), ("/img/red.png", "again", "")]),
        "/b.html": page(
            links=["/a.html"],  # "/offsite.html" on another host name is added below
            images=[("/img/yellow.gif", "", "Yellow"), ("/img/already.png", "", ""),
                    ("/img/already-near.jpg", "", ""), ("/img/bitmap.bmp", "", "")]),
        "/c.html": page(images=[("/img/deep.png", "too deep", "")]),
        "/private/secret.html": page(images=[("/img/secret.png", "", "")]),
        "/private/hidden.png": Resource(body=picture_bytes(120, 90, HIDDEN), content_type=png),
        "/img/red.png": Resource(body=red, content_type=png),
        "/img/red-copy.png": Resource(body=red, content_type=png),
        "/img/red-resized.jpg": Resource(body=_jpeg(picture(120, 90, RED).resize((108, 81))), content_type=jpeg),
        "/img/blue.jpg": Resource(body=picture_bytes(120, 90, BLUE, fmt="JPEG", quality=90), content_type=jpeg),
        "/img/green.webp": Resource(body=picture_bytes(120, 90, GREEN, fmt="WEBP"), content_type="image/webp"),
        "/img/yellow.gif": Resource(body=picture_bytes(120, 90, YELLOW, fmt="GIF"), content_type="image/gif"),
        "/img/tiny.png": Resource(body=picture_bytes(16, 16, TINY), content_type=png),
        "/img/banner.png": Resource(body=picture_bytes(400, 40, BANNER), content_type=png),
        "/img/broken.png": Resource(body=red[:200], content_type=png),
        "/img/bitmap.bmp": Resource(body=picture_bytes(120, 90, BMP, fmt="BMP"), content_type="image/bmp"),
        "/img/already.png": Resource(body=already, content_type=png),
        "/img/already-near.jpg": Resource(body=_jpeg(picture(120, 90, ALREADY_NEAR).resize((100, 75))),
                                          content_type=jpeg),
        "/img/deep.png": Resource(body=picture_bytes(120, 90, DEEP), content_type=png),
        "/redirect/private.png": Resource(status=302, location="http://10.0.0.1/x.png"),
        "/redirect/metadata.png": Resource(status=301, location="http://169.254.169.254/latest/meta-data/"),
        "/redirect/v6.png": Resource(status=307, location=trap.url("/trap.png")),
    }
    website.start()
    website.resources["/b.html"] = page(links=["/a.html", f"http://localhost:{website.port}/offsite.html"],
                                        images=[("/img/yellow.gif", "", "Yellow"), ("/img/already.png", "", ""),
                                                ("/img/already-near.jpg", "", ""), ("/img/bitmap.bmp", "", "")])
    yield website
    website.stop()


EXPECTED_SKIPS = {"too_small": 1, "undecodable": 1, "robots": 1, "blocked_address": 3, "http_error": 1,
                  "bad_aspect": 1, "duplicate": 2, "near_duplicate": 2, "format": 1}


def test_a_scrape_keeps_exactly_the_new_valid_images_and_says_why_it_skipped_the_rest(scr, cat, site, trap):
    scrape = scr.start(site.url("/index.html"), max_depth=1, min_width=32, min_height=32, album_name="Waves")
    assert scrape.state in (common_pb2.JOB_STATE_QUEUED, RUNNING) and scrape.id
    events = scr.events(scrape.id)
    final = events[-1]
    assert final.WhichOneof("event") == "finished", [e.WhichOneof("event") for e in events]
    done = final.scrape
    assert done.state == COMPLETED, done.error_message
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))

    assert done.pages_seen == 3  # index, a and b; c is too deep, /private/ is forbidden, localhost is off-site
    assert done.images_found == 17
    assert done.images_kept == 4
    assert dict(done.skip_reasons) == EXPECTED_SKIPS
    assert done.images_skipped == sum(EXPECTED_SKIPS.values()) == 13
    assert done.error_count == 4  # three refused addresses and one 404

    skipped = {e.image.url.removeprefix(site.base): e.image.skip_reason for e in events
               if e.WhichOneof("event") == "image" and e.image.skip_reason}
    assert skipped["/img/red-copy.png"] == "duplicate" and skipped["/img/already.png"] == "duplicate"
    assert skipped["/img/red-resized.jpg"] == "near_duplicate"
    assert skipped["/img/already-near.jpg"] == "near_duplicate"
    assert skipped["/private/hidden.png"] == "robots" and skipped["/img/bitmap.bmp"] == "format"
    assert skipped["/redirect/v6.png"] == "blocked_address"
    pages = {e.page.url.removeprefix(site.base): e.page.skip_reason for e in events if e.WhichOneof("event") == "page"}
    assert pages == {"/index.html": "", "/a.html": "", "/b.html": "", "/private/secret.html": "robots"}

    # Nothing forbidden, refused or too deep was asked for; the trap behind the redirect was never reached.
    assert trap.requests == []
    assert not {"/private/secret.html", "/private/hidden.png", "/c.html", "/img/deep.png", "/offsite.html"} & set(
        site.requests)
    assert site.requests.count("/robots.txt") == 1
    assert all("ImagineerScraper" in agent for agent in site.user_agents)

    # The album: new, scraped, private, with the kept images (private too) and their labels.
    album = _album(cat, done.album_id)
    assert album.album_type == res.ALBUM_TYPE_SCRAPED and not album.is_public and album.name == "Waves"
    images = _album_images(cat, done.album_id)
    assert len(images) == album.image_count == 4
    assert not any(image.is_public for image in images)
    by_name = {image.filename.split(".")[0]: image for image in images}
    assert sorted(by_name) == ["blue", "green", "red", "yellow"]
    assert by_name["green"].content_type == "image/webp" and by_name["yellow"].content_type == "image/gif"
    caption, tag = res.LABEL_TYPE_CAPTION, res.LABEL_TYPE_TAG
    assert _labels(cat, by_name["red"].id) == [("A red wave", caption, "scraper"), ("Red", tag, "scraper")]
    assert _labels(cat, by_name["blue"].id) == [("Blue waves over sand", caption, "scraper")]
    assert _labels(cat, by_name["green"].id) == [("Green", caption, "scraper")]  # a title equal to alt adds nothing
    assert _labels(cat, by_name["yellow"].id) == [("Yellow", tag, "scraper")]

    # The catalog's record says the same.
    record = _record(cat, scrape.id)
    assert record.state == COMPLETED and record.album_id == done.album_id and record.stage == "done"
    assert (record.pages_seen, record.images_found, record.images_kept, record.images_skipped,
            record.error_count) == (3, 17, 4, 13, 4)
    assert dict(record.skip_reasons) == EXPECTED_SKIPS
    assert record.source_url == site.url("/index.html")
    assert scr.get(scrape.id) == done


def test_scraping_the_same_site_again_keeps_nothing(scr, cat, site):
    """Deduplication is across the whole catalog: everything kept the first time is a duplicate now."""
    done = scr.finish(scr.start(site.url("/index.html"), max_depth=1, min_width=32, min_height=32).id)
    assert done.state == COMPLETED and done.images_kept == 0 and done.images_found == 17
    assert dict(done.skip_reasons) == {**EXPECTED_SKIPS, "duplicate": 6}
    assert _album(cat, done.album_id).image_count == 0


def test_list_get_and_a_late_watcher(scr, site):
    done = scr.finish(scr.start(site.url("/c.html"), min_width=32, min_height=32).id)
    listed = scr.list(page_size=500).scrapes
    assert listed[0].id == done.id and listed[0] == done
    assert [int(s.id) for s in listed] == sorted((int(s.id) for s in listed), reverse=True)
    first = scr.list(page_size=1)
    assert len(first.scrapes) == 1 and first.next_page_token
    assert scr.list(page_size=1, page_token=first.next_page_token).scrapes[0].id == listed[1].id
    # Joining late gives every event again; resuming after the last one gives nothing more.
    events = scr.events(done.id)
    assert events[-1].WhichOneof("event") == "finished" and events[-1].finished.state == COMPLETED
    assert scr.events(done.id, after_sequence=events[-1].sequence) == []
    assert [e.sequence for e in scr.events(done.id, after_sequence=2)] == [e.sequence for e in events[2:]]


def test_a_retry_with_the_same_request_id_returns_the_first_scrape(scr, site):
    first = scr.start(site.url("/c.html"), request_id="scrape-once-123")
    count = len(scr.list(page_size=500).scrapes)
    again = scr.start(site.url("/c.html"), request_id="scrape-once-123")
    assert again.id == first.id
    assert len(scr.list(page_size=500).scrapes) == count
    scr.finish(first.id)


@pytest.mark.parametrize(("fields", "field"), [
    ({"source_url": "ftp://example.org/"}, "source_url"), ({"source_url": "file:///etc/passwd"}, "source_url"),
    ({"source_url": ""}, "source_url"), ({"source_url": "example.org/page"}, "source_url"),
    ({"max_depth": -1}, "max_depth"), ({"max_pages": -1}, "max_pages"), ({"max_images": -3}, "max_images"),
    ({"min_width": -1}, "min_width"), ({"min_height": -1}, "min_height"),
    ({"allowed_formats": ["png", "tiff"]}, "allowed_formats[1]"), ({"link_policy": 9}, "link_policy")])
def test_bad_requests_name_the_field(scr, fields, field):
    request = {"source_url": "http://127.0.0.1:9/", **fields}
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, scr.start, **request)
    assert field in field_violations(error), error.details()


def test_unknown_and_malformed_ids(scr):
    assert error_reason(expect_error(grpc.StatusCode.NOT_FOUND, scr.get, "987654321")) == "SCRAPE_NOT_FOUND"
    assert "id" in field_violations(expect_error(grpc.StatusCode.INVALID_ARGUMENT, scr.get, ""))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, scr.get, "abc")
    expect_error(grpc.StatusCode.NOT_FOUND, scr.cancel, "987654321")
    with pytest.raises(grpc.RpcError) as caught:
        scr.events("987654321")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "page_size" in field_violations(expect_error(grpc.StatusCode.INVALID_ARGUMENT, scr.list, -1))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, scr.list, 10, "not-a-token")


def test_a_finished_scrape_cannot_be_cancelled(scr, site):
    done = scr.finish(scr.start(site.url("/c.html")).id)
    error = expect_error(grpc.StatusCode.FAILED_PRECONDITION, scr.cancel, done.id)
    assert error_reason(error) == "SCRAPE_FINISHED"


def test_calls_need_the_admin_token(scr):
    with pytest.raises(grpc.RpcError) as caught:
        scr.stub.ListScrapes(api.ListScrapesRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- cancel and restart ------------------------------------------------------------------------------------------

def slow_site(first_seed: int, pages: int = 30, delay: float = 0.4) -> Website:
    """An index linking to ``pages`` slow pages, each with one new picture."""
    resources = {"/robots.txt": Resource(status=404),
                 "/index.html": page(links=[f"/p{i}.html" for i in range(pages)])}
    for i in range(pages):
        resources[f"/p{i}.html"] = page(images=[(f"/img/{i}.png", f"picture {i}", "")])
        resources[f"/p{i}.html"].delay = delay
        resources[f"/img/{i}.png"] = Resource(body=picture_bytes(64, 64, first_seed + i), content_type="image/png")
    return Website(resources=resources).start()


def _kept_one(event) -> bool:
    return event.scrape.images_kept >= 1


def test_cancel_stops_promptly_and_keeps_what_was_imported(scr, cat):
    website = slow_site(9100)
    try:
        scrape = scr.start(website.url("/index.html"), max_depth=1, max_pages=40, min_width=32, min_height=32)
        scr.wait_for(scrape.id, _kept_one)
        asked = time.monotonic()
        cancelled = scr.cancel(scrape.id)
        assert cancelled.id == scrape.id
        done = scr.finish(scrape.id)
        assert time.monotonic() - asked < 5
        requests_at_end = len(website.requests)
        time.sleep(1)
        assert len(website.requests) == requests_at_end  # nothing more after the end
    finally:
        website.stop()
    assert done.state == CANCELLED and "cancelled" in done.error_message
    assert 1 <= done.images_kept and done.pages_seen < 31
    assert _album(cat, done.album_id).image_count == done.images_kept
    record = _record(cat, scrape.id)
    assert record.state == CANCELLED and record.images_kept == done.images_kept
    assert error_reason(expect_error(grpc.StatusCode.FAILED_PRECONDITION, scr.cancel, scrape.id)) == "SCRAPE_FINISHED"


@pytest.mark.slow
def test_a_trainer_restart_marks_a_running_scrape_interrupted(trainers, cat):
    website = slow_site(9140, pages=25)
    first = trainers(**SCRAPE_ENV)
    client, channel = _client(first.service)
    try:
        scrape = client.start(website.url("/index.html"), max_depth=1, max_pages=40, min_width=32, min_height=32)
        client.wait_for(scrape.id, _kept_one)
        channel.close()
        first.service.kill()  # a crash: nobody records the end
        assert _record(cat, scrape.id).state == RUNNING

        second = trainers(**SCRAPE_ENV)
        client, channel = _client(second.service)
        record = _record(cat, scrape.id)
        assert record.state == INTERRUPTED and "trainer stopped" in record.error_message
        seen = client.get(scrape.id)
        assert seen.state == INTERRUPTED and seen.error_message == record.error_message
        assert seen.request.source_url == website.url("/index.html") and seen.request.max_pages == 40
        assert [e.WhichOneof("event") for e in client.events(scrape.id)] == ["finished"]
        assert _album(cat, record.album_id).image_count >= max(1, record.images_kept)

        # A shutdown (SIGTERM) ends a running scrape as interrupted too, with the reason.
        other = client.start(website.url("/index.html"), max_depth=1, max_pages=3, min_width=32, min_height=32)
        client.wait_for(other.id, lambda event: event.scrape.pages_seen >= 1)
        stopped = threading.Event()
        threading.Thread(target=lambda: (second.service.stop(), stopped.set()), daemon=True).start()
        assert stopped.wait(30)
        record = _record(cat, other.id)
        assert record.state == INTERRUPTED and "shut down" in record.error_message
    finally:
        channel.close()
        website.stop()

"""`imagineer scrape start | list | watch | cancel` against a running trainer and catalog, with a local site."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from harness.images import picture_bytes
from harness.processes import ADMIN_TOKEN
from harness.website import Resource, Website, page

SCRAPE_ENV = {"IMAGINEER_TRAINER_SCRAPE_ALLOWED_NETWORKS": "127.0.0.0/8",
              "IMAGINEER_TRAINER_SCRAPE_HOST_INTERVAL_SECONDS": "0"}


@pytest.fixture(scope="module")
def scraper_trainer(module_trainers):
    return module_trainers(**SCRAPE_ENV).service


@pytest.fixture(scope="module")
def site():
    website = Website(resources={
        "/robots.txt": Resource(status=404),
        "/index.html": page(images=[("/one.png", "first picture", ""), ("/two.jpg", "", "second"),
                                    ("/small.png", "", "")]),
        "/one.png": Resource(body=picture_bytes(120, 90, seed=8801), content_type="image/png"),
        "/two.jpg": Resource(body=picture_bytes(120, 90, seed=8802, fmt="JPEG"), content_type="image/jpeg"),
        "/small.png": Resource(body=picture_bytes(10, 10, seed=8803), content_type="image/png"),
        "/slow.html": Resource(body=b"<html><body>slow</body></html>", delay=4.0),
    }).start()
    yield website
    website.stop()


def imagineer(catalog, trainer, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "imagineer_client.cli", "--catalog", catalog.address, "--trainer",
               trainer.address, "--token", ADMIN_TOKEN, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_scrape_start_waits_and_reports_counts(catalog, scraper_trainer, site):
    result = imagineer(catalog, scraper_trainer, "--json", "scrape", "start", site.url("/index.html"),
                       "--min-width", "32", "--min-height", "32", "--album-name", "cli scrape")
    assert result.returncode == 0, result.stderr + result.stdout
    scrape = json.loads(result.stdout)
    assert scrape["state"] == "JOB_STATE_COMPLETED"
    assert (scrape["pages_seen"], scrape["images_found"], scrape["images_kept"]) == (1, 3, 2)
    assert scrape["skip_reasons"] == {"too_small": 1} and scrape["album_id"]

    listing = imagineer(catalog, scraper_trainer, "--json", "scrape", "list")
    assert listing.returncode == 0 and json.loads(listing.stdout)[0]["id"] == scrape["id"]
    watched = imagineer(catalog, scraper_trainer, "scrape", "watch", scrape["id"])
    assert watched.returncode == 0 and "completed" in watched.stdout and "too_small 1" in watched.stdout
    # Cancelling an ended scrape is refused: exit code 2, the reason shown.
    cancel = imagineer(catalog, scraper_trainer, "scrape", "cancel", scrape["id"])
    assert cancel.returncode == 2 and "FAILED_PRECONDITION" in cancel.stdout


def test_a_refused_scrape_exits_2_and_names_the_field(catalog, scraper_trainer):
    result = imagineer(catalog, scraper_trainer, "scrape", "start", "ftp://example.org/", "--max-pages", "-1")
    assert result.returncode == 2
    assert "source_url" in result.stdout and "max_pages" in result.stdout


def test_a_scrape_that_does_not_complete_exits_1(catalog, scraper_trainer, site):
    started = imagineer(catalog, scraper_trainer, "--json", "scrape", "start", site.url("/slow.html"), "--no-wait")
    assert started.returncode == 0, started.stderr
    scrape_id = json.loads(started.stdout)["id"]
    cancel = imagineer(catalog, scraper_trainer, "--json", "scrape", "cancel", scrape_id)
    assert cancel.returncode == 0, cancel.stdout  # the page takes four seconds: the scrape still runs
    watched = imagineer(catalog, scraper_trainer, "--json", "scrape", "watch", scrape_id)
    assert watched.returncode == 1
    assert json.loads(watched.stdout)["state"] == "JOB_STATE_CANCELLED"

"""From the web to a LoRA through the public API: scrape a site into a private album, caption it with the
trainer's AI labeler, mark it as a training source, train on it."""

from __future__ import annotations

import io

import pytest
from harness.images import picture
from harness.platform import start_platform
from harness.website import Resource, Website, page

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2

pytestmark = pytest.mark.slow

COMPLETED = common_pb2.JOB_STATE_COMPLETED


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    picture(96, 96, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site():
    """Two pages, five distinct pictures (one of them twice), alt texts on some."""
    website = Website(resources={
        "/": page(links=["/more.html"], images=[("/a.png", "a red kite", ""), ("/b.png", "", "blue boat"),
                                                ("/c.png", "a green tree", "")]),
        "/more.html": page(images=[("/d.png", "a yellow house", ""), ("/e.png", "", ""), ("/a.png", "again", "")]),
        **{f"/{name}.png": Resource(body=png(seed), content_type="image/png")
           for seed, name in enumerate("abcde", start=11)},
    }).start()
    yield website
    website.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, demo_model_dir):
    running = start_platform(tmp_path_factory.mktemp("dataset"), demo_model_dir,
                             IMAGINEER_TRAINER_SCRAPE_ALLOWED_NETWORKS="127.0.0.0/8",
                             IMAGINEER_TRAINER_SCRAPE_HOST_INTERVAL_SECONDS="0")
    yield running
    running.stop()


def test_scrape_label_train(platform, site):
    with platform.client() as client:
        scrape = client.start_scrape(site.url("/"), max_depth=1, min_width=64, min_height=64,
                                     album_name="e2e scrape")
        for event in client.watch_scrape(scrape.id):
            scrape = event.scrape
        assert scrape.state == COMPLETED, scrape.error_message
        assert (scrape.pages_seen, scrape.images_kept) == (2, 5), dict(scrape.skip_reasons)
        album = client.get_album(scrape.album_id)
        assert album.album_type == res.ALBUM_TYPE_SCRAPED and not album.is_public and album.image_count == 5
        members = client.album_images(scrape.album_id)
        alt_captions = {label.text for member in members for label in client.list_labels(member.image.id)
                        if label.label_type == res.LABEL_TYPE_CAPTION and label.source_model == "scraper"}
        assert {"a red kite", "a green tree", "a yellow house"} <= alt_captions

        labeling = client.label(album_id=scrape.album_id)
        for event in client.watch_labeling(labeling.id):
            labeling = event.labeling
        assert labeling.state == COMPLETED and labeling.summary.labeled == 5, labeling.error_message
        for member in members:
            sources = {label.source_model for label in client.list_labels(member.image.id)
                       if label.label_type == res.LABEL_TYPE_CAPTION}
            assert labeling.source_model in sources  # the AI caption sits beside the scraped alt text

        client.update_album(scrape.album_id, is_training_source=True)
        training = client.train_and_wait([scrape.album_id], steps=6, rank=4, batch_size=2, resolution=64,
                                         seed=3, checkpoint_interval=6)
        assert training.state == COMPLETED, training.error_message
        assert training.image_count == 5 and training.artifact_id

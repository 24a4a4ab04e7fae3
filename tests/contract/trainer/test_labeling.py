"""Contract tests of the trainer's LabelingService: both labelers against a real catalog, through the stubs.

The hosted labeler talks to a local fake of the Anthropic Messages API; the local labeler loads a tiny BLIP
captioner built once per session in a subprocess (torch stays out of the test process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import fake_anthropic as fake
from harness.concurrency import expect_error
from harness.processes import ADMIN_METADATA

from imagineer.catalog.v1 import catalog_service_pb2 as cat_api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import labeling_service_pb2 as api
from imagineer.trainer.v1 import labeling_service_pb2_grpc
from imagineer_common.grpc_errors import error_reason, field_violations

pytestmark = pytest.mark.slow

API_KEY = "sk-contract-test-key"
MODEL = "claude-contract"
COMPLETED = common_pb2.JOB_STATE_COMPLETED
LABELED, FAILED, SKIPPED = api.IMAGE_OUTCOME_LABELED, api.IMAGE_OUTCOME_FAILED, api.IMAGE_OUTCOME_SKIPPED


@pytest.fixture(scope="session")
def captioner_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("captioner") / "tiny-blip"
    result = subprocess.run([sys.executable, "-m", "imagineer_trainer.labelers.tiny_captioner", str(folder)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def anthropic_api() -> Iterator[fake.FakeAnthropic]:
    server = fake.FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def api_fake(anthropic_api) -> fake.FakeAnthropic:
    anthropic_api.reset()
    return anthropic_api


@pytest.fixture(scope="module")
def labeling_trainer(module_trainers, anthropic_api, captioner_dir):
    return module_trainers(
        IMAGINEER_TRAINER_LABELER="anthropic",
        IMAGINEER_TRAINER_LABELER_ANTHROPIC_API_KEY=API_KEY,
        IMAGINEER_TRAINER_LABELER_ANTHROPIC_BASE_URL=anthropic_api.base_url,
        IMAGINEER_TRAINER_LABELER_ANTHROPIC_MODEL=MODEL,
        IMAGINEER_TRAINER_LABELER_ANTHROPIC_MAX_ATTEMPTS="2",
        IMAGINEER_TRAINER_LABELER_ANTHROPIC_BACKOFF_SECONDS="0.01",
        IMAGINEER_TRAINER_LABELER_LOCAL_MODEL=str(captioner_dir),
        IMAGINEER_TRAINER_LABELER_LOCAL_DEVICE="cpu",
        IMAGINEER_TRAINER_LABELER_LOCAL_MAX_TOKENS="8")


@pytest.fixture(scope="module")
def channel(labeling_trainer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(labeling_trainer.service.address) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel) -> labeling_service_pb2_grpc.LabelingServiceStub:
    return labeling_service_pb2_grpc.LabelingServiceStub(channel)


def start(stub, *, image_id: str = "", album_id: str = "", labeler: str = "", request_id: str = "") -> api.Labeling:
    request = api.StartLabelingRequest(labeler=labeler, request_id=request_id)
    if image_id:
        request.image_id = image_id
    if album_id:
        request.album_id = album_id
    return stub.StartLabeling(request, metadata=ADMIN_METADATA, timeout=30)


def events(stub, labeling_id: str, after: int = 0) -> list[api.WatchLabelingResponse]:
    return list(stub.WatchLabeling(api.WatchLabelingRequest(id=labeling_id, after_sequence=after),
                                   metadata=ADMIN_METADATA, timeout=120))


def run(stub, **target) -> tuple[api.Labeling, list[api.WatchLabelingResponse]]:
    labeling = start(stub, **target)
    seen = events(stub, labeling.id)
    assert seen[-1].WhichOneof("event") == "finished", seen[-1]
    return seen[-1].labeling, seen


def labels(cat, image_id: str) -> list[res.Label]:
    return list(cat.stub.ListLabels(cat_api.ListLabelsRequest(image_id=image_id, page_size=1000),
                                    metadata=ADMIN_METADATA, timeout=10).labels)


def by_type(found: list[res.Label], label_type: int) -> list[res.Label]:
    return [label for label in found if label.label_type == label_type]


# --- the hosted labeler ----------------------------------------------------------------------------------------------

def test_one_image_gets_caption_whole_tags_rating_and_the_nsfw_flag(stub, cat, api_fake):
    api_fake.default = fake.good("a woman on a beach at sunset, oil painting", ("oil painting", "Sandy_Beach", "sunset",
                                                                              "sunset"), "adult")
    image = cat.upload()
    labeling, seen = run(stub, image_id=image.id)
    assert labeling.state == COMPLETED and labeling.source_model == f"anthropic:{MODEL}"
    assert labeling.request.image_id == image.id and labeling.request.labeler == "anthropic"
    assert (labeling.summary.labeled, labeling.summary.failed, labeling.summary.skipped) == (1, 0, 0)
    kinds = [event.WhichOneof("event") for event in seen]
    assert kinds == ["queued", "started", "image", "finished"] and seen[1].started.total_images == 1
    image_event = seen[2].image
    assert image_event.outcome == LABELED and image_event.nsfw_rating == api.NSFW_RATING_ADULT
    assert image_event.nsfw_flag_set and list(image_event.tags) == ["oil painting", "sandy beach", "sunset"]
    found = labels(cat, image.id)
    assert [label.text for label in by_type(found, res.LABEL_TYPE_CAPTION)] == [
        "a woman on a beach at sunset, oil painting"]
    assert sorted(label.text for label in by_type(found, res.LABEL_TYPE_TAG)) == ["oil painting", "sandy beach",
                                                                                  "sunset"]
    assert [label.text for label in by_type(found, res.LABEL_TYPE_AI_GENERATED)] == ["nsfw:adult"]
    assert all(label.source_model == f"anthropic:{MODEL}" and "JSON" in label.source_prompt for label in found)
    assert cat.image(image.id).is_nsfw
    (request,) = api_fake.requests
    assert request.headers["x-api-key"] == API_KEY and request.body["model"] == MODEL
    assert request.image_bytes() == cat.image_bytes(image.id)


def test_an_album_with_a_malformed_and_a_refused_answer_completes_with_exact_counts(stub, cat, api_fake):
    album = cat.create_album("to label")
    images = [cat.upload(album.id) for _ in range(5)]
    api_fake.answer_image(cat.image_bytes(images[1].id), fake.malformed())
    api_fake.answer_image(cat.image_bytes(images[2].id), fake.refusal())
    api_fake.answer_image(cat.image_bytes(images[3].id), fake.good("a nude figure", ("nude",), "explicit"))
    api_fake.answer_image(cat.image_bytes(images[4].id), fake.good("a dress", ("red dress",), "suggestive"))
    labeling, seen = run(stub, album_id=album.id)
    assert labeling.state == COMPLETED, labeling.error_message
    assert labeling.total_images == 5 and labeling.images_done == 5
    summary = labeling.summary
    assert (summary.labeled, summary.failed, summary.skipped) == (3, 2, 0)
    problems = {problem.image_id: problem for problem in summary.problems}
    assert set(problems) == {images[1].id, images[2].id}
    assert "malformed JSON" in problems[images[1].id].reason and "refused" in problems[images[2].id].reason
    assert [event.image.index for event in seen if event.WhichOneof("event") == "image"] == [1, 2, 3, 4, 5]
    assert seen[-1].finished.summary == summary
    assert not labels(cat, images[1].id) and not labels(cat, images[2].id)
    assert [cat.image(image.id).is_nsfw for image in images] == [False, False, False, True, False]


def test_relabeling_replaces_the_labelers_labels_and_keeps_manual_ones(stub, cat, api_fake):
    image = cat.upload()
    manual = cat.label(image.id, "my favourite fox", res.LABEL_TYPE_MANUAL)
    api_fake.default = fake.good("a fox", ("red fox", "snow"), "safe")
    run(stub, image_id=image.id)
    first = labels(cat, image.id)
    assert len(first) == 1 + 1 + 2 + 1
    api_fake.default = fake.good("a fox in the snow", ("red fox", "winter forest"), "safe")
    _, seen = run(stub, image_id=image.id)
    assert seen[2].image.labels_replaced == 2  # the old caption and the "snow" tag
    second = labels(cat, image.id)
    assert len(second) == len(first)
    assert sorted(label.text for label in second) == sorted(
        ["my favourite fox", "a fox in the snow", "red fox", "winter forest", "nsfw:safe"])
    assert [label for label in second if label.id == manual.id] == [manual]


def test_server_errors_beyond_the_retry_budget_fail_that_image(stub, cat, api_fake):
    api_fake.default = fake.error(500)
    labeling, _ = run(stub, image_id=cat.upload().id)
    assert labeling.state == COMPLETED and labeling.summary.failed == 1
    assert "failed 2 times; the last: HTTP 500" in labeling.summary.problems[0].reason
    assert len(api_fake.requests) == 2


def test_a_rate_limit_is_waited_out(stub, cat, api_fake):
    api_fake.queue.append(fake.error(429, retry_after="1", kind="rate_limit_error"))
    labeling, _ = run(stub, image_id=cat.upload().id)
    assert labeling.summary.labeled == 1 and len(api_fake.requests) == 2


def test_cancel_stops_between_images_and_keeps_what_was_written(stub, cat, api_fake):
    album = cat.create_album("slow")
    for _ in range(6):
        cat.upload(album.id)
    api_fake.delay_seconds = 0.5
    labeling = start(stub, album_id=album.id)
    stream = stub.WatchLabeling(api.WatchLabelingRequest(id=labeling.id), metadata=ADMIN_METADATA, timeout=60)
    for event in stream:
        if event.WhichOneof("event") == "image":
            break
    stream.cancel()
    stub.CancelLabeling(api.CancelLabelingRequest(id=labeling.id), metadata=ADMIN_METADATA, timeout=10)
    seen = events(stub, labeling.id)
    final = seen[-1].labeling
    assert final.state == common_pb2.JOB_STATE_CANCELLED and 1 <= final.summary.labeled < 6
    assert final.images_done == final.summary.labeled
    error = expect_error(grpc.StatusCode.FAILED_PRECONDITION, stub.CancelLabeling,
                         api.CancelLabelingRequest(id=labeling.id), metadata=ADMIN_METADATA, timeout=10)
    assert error_reason(error) == "LABELING_FINISHED"
    # Resuming a watch after the end returns nothing new.
    assert events(stub, labeling.id, after=seen[-1].sequence) == []


# --- the local labeler -----------------------------------------------------------------------------------------------

def test_the_local_captioner_labels_an_image_and_an_album_and_relabels_in_place(stub, cat, api_fake):
    album = cat.create_album("local")
    images = [cat.upload(album.id) for _ in range(3)]
    run(stub, image_id=images[0].id)  # the hosted labeler first: the local one must leave its labels alone
    hosted = labels(cat, images[0].id)
    labeling, _ = run(stub, album_id=album.id, labeler="local")
    assert labeling.state == COMPLETED and labeling.source_model == "local:tiny-blip"
    assert (labeling.summary.labeled, labeling.summary.failed) == (3, 0)
    for image in images:
        mine = [label for label in labels(cat, image.id) if label.source_model == "local:tiny-blip"]
        assert [label.label_type for label in mine] == [res.LABEL_TYPE_CAPTION]  # no tags, no rating
        assert mine[0].text.startswith("a picture of") and mine[0].source_prompt == "a picture of"
        assert not cat.image(image.id).is_nsfw
    before = labels(cat, images[0].id)
    _, seen = run(stub, image_id=images[0].id, labeler="local")
    assert seen[2].image.nsfw_rating == api.NSFW_RATING_UNSPECIFIED and not seen[2].image.tags
    after = labels(cat, images[0].id)
    assert len(after) == len(before) == len(hosted) + 1
    assert {label.id for label in hosted} <= {label.id for label in after}


# --- restart ---------------------------------------------------------------------------------------------------------

def test_a_crashed_labeling_resumes_on_restart_and_labels_each_image_once(trainers, tmp_path, cat, api_fake):
    album = cat.create_album("interrupted")
    images = [cat.upload(album.id) for _ in range(6)]
    api_fake.delay_seconds = 1.0  # slow enough that the crash comes long before the sixth image
    settings = {"IMAGINEER_TRAINER_LABELER_ANTHROPIC_API_KEY": API_KEY,
                "IMAGINEER_TRAINER_LABELER_ANTHROPIC_BASE_URL": api_fake.base_url}
    first = trainers(tmp_path / "trainer", **settings)
    with grpc.insecure_channel(first.service.address) as chan:
        own = labeling_service_pb2_grpc.LabelingServiceStub(chan)
        labeling = start(own, album_id=album.id)
        stream = own.WatchLabeling(api.WatchLabelingRequest(id=labeling.id), metadata=ADMIN_METADATA, timeout=60)
        # The second image's event: by then the first image is on record, whatever the timing.
        images_seen = 0
        for event in stream:
            images_seen += event.WhichOneof("event") == "image"
            if images_seen == 2:
                break
        stream.cancel()
    first.service.kill()  # a crash: nothing gets to record the end
    asked_before = len(api_fake.requests)
    api_fake.delay_seconds = 0.1

    second = trainers(tmp_path / "trainer", **settings)
    with grpc.insecure_channel(second.service.address) as chan:
        own = labeling_service_pb2_grpc.LabelingServiceStub(chan)
        seen = events(own, labeling.id)
    kinds = [event.WhichOneof("event") for event in seen]
    done_before = seen[kinds.index("started")].started.images_done
    assert 1 <= done_before < 6, "it goes on after the images the first trainer finished"
    assert kinds == ["queued", "started", *["image"] * (6 - done_before), "finished"]
    assert [event.image.index for event in seen if event.HasField("image")] == list(range(done_before + 1, 7))
    final = seen[-1].labeling
    assert final.state == common_pb2.JOB_STATE_COMPLETED and not final.error_message, final.error_message
    assert (final.total_images, final.images_done, final.summary.labeled) == (6, 6, 6)
    assert len(api_fake.requests) - asked_before == 6 - done_before, "finished images are not sent again"
    for image in images:  # the image the crash cut short was labeled again, which replaced its labels
        assert len(by_type(labels(cat, image.id), res.LABEL_TYPE_CAPTION)) == 1


# --- requests, errors, listing, auth ---------------------------------------------------------------------------------

def test_validation_errors_name_the_field(stub, cat):
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.StartLabeling, api.StartLabelingRequest(),
                         metadata=ADMIN_METADATA, timeout=10)
    assert "target" in field_violations(error)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.StartLabeling,
                         api.StartLabelingRequest(album_id=""), metadata=ADMIN_METADATA, timeout=10)
    assert "album_id" in field_violations(error)
    error = expect_error(grpc.StatusCode.NOT_FOUND, start, stub, album_id="999999")
    assert error_reason(error) == "ALBUM_NOT_FOUND" and "album_id" in error.details()
    error = expect_error(grpc.StatusCode.NOT_FOUND, start, stub, image_id="999999")
    assert error_reason(error) == "IMAGE_NOT_FOUND"
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, start, stub, image_id=cat.upload().id, labeler="gpt")
    assert "labeler" in field_violations(error)
    error = expect_error(grpc.StatusCode.FAILED_PRECONDITION, start, stub, album_id=cat.create_album("empty").id)
    assert error_reason(error) == "ALBUM_EMPTY"
    for method, request in [("GetLabeling", api.GetLabelingRequest(id="nope")),
                            ("CancelLabeling", api.CancelLabelingRequest(id="nope"))]:
        error = expect_error(grpc.StatusCode.NOT_FOUND, getattr(stub, method), request, metadata=ADMIN_METADATA,
                             timeout=10)
        assert error_reason(error) == "LABELING_NOT_FOUND"
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.GetLabeling, api.GetLabelingRequest(),
                         metadata=ADMIN_METADATA, timeout=10)
    assert "id" in field_violations(error)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListLabelings, api.ListLabelingsRequest(page_size=-1),
                         metadata=ADMIN_METADATA, timeout=10)
    assert "page_size" in field_violations(error)


def test_get_list_and_idempotent_start(stub, cat):
    image = cat.upload()
    first = start(stub, image_id=image.id, request_id="label-once")
    again = start(stub, image_id=image.id, request_id="label-once")
    assert again.id == first.id
    events(stub, first.id)
    got = stub.GetLabeling(api.GetLabelingRequest(id=first.id), metadata=ADMIN_METADATA, timeout=10)
    assert got.state == COMPLETED and got.end_time.seconds > 0 and got.summary.labeled == 1
    listed = stub.ListLabelings(api.ListLabelingsRequest(page_size=1), metadata=ADMIN_METADATA, timeout=10)
    assert [labeling.id for labeling in listed.labelings] == [first.id] and listed.next_page_token


def test_health_names_the_labeling_service(labeling_trainer):
    with grpc.insecure_channel(labeling_trainer.service.address) as chan:
        reply = health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(service="imagineer.trainer.v1.LabelingService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


RPCS = [
    ("StartLabeling", api.StartLabelingRequest(album_id="1")),
    ("GetLabeling", api.GetLabelingRequest(id="nope")),
    ("ListLabelings", api.ListLabelingsRequest()),
    ("CancelLabeling", api.CancelLabelingRequest(id="nope")),
    ("WatchLabeling", api.WatchLabelingRequest(id="nope")),
]


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong-token"),)], ids=["no-token", "wrong-token"])
@pytest.mark.parametrize(("method", "request_message"), RPCS, ids=[name for name, _ in RPCS])
def test_every_rpc_requires_the_admin_token(stub, method, request_message, metadata):
    def call():
        reply = getattr(stub, method)(request_message, metadata=metadata, timeout=10)
        if method == "WatchLabeling":
            list(reply)

    expect_error(grpc.StatusCode.UNAUTHENTICATED, call)


# --- the command line ------------------------------------------------------------------------------------------------

def imagineer(catalog, trainer_address: str, *args: str):
    import subprocess

    from harness.processes import ADMIN_TOKEN

    command = [sys.executable, "-m", "imagineer_client.cli", "--catalog", catalog.address, "--trainer",
               trainer_address, "--token", ADMIN_TOKEN, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_cli_labels_an_album_and_lists_watches_and_cancels(catalog, labeling_trainer, cat, api_fake):
    address = labeling_trainer.service.address
    album = cat.create_album("cli")
    images = [cat.upload(album.id) for _ in range(3)]
    api_fake.answer_image(cat.image_bytes(images[1].id), fake.malformed())
    result = imagineer(catalog, address, "--json", "label", "album", album.id)
    assert result.returncode == 0, result.stderr
    labeling = json.loads(result.stdout)
    assert labeling["state"] == "JOB_STATE_COMPLETED"
    assert labeling["summary"]["labeled"] == 2 and labeling["summary"]["failed"] == 1
    table = imagineer(catalog, address, "label", "image", images[0].id, "--labeler", "local")
    assert table.returncode == 0 and "completed" in table.stdout and "1 labeled" in table.stdout, table.stdout
    listing = imagineer(catalog, address, "--json", "labeling", "list")
    assert labeling["id"] in [item["id"] for item in json.loads(listing.stdout)]
    watched = imagineer(catalog, address, "--json", "labeling", "watch", labeling["id"])
    assert watched.returncode == 0 and json.loads(watched.stdout)["summary"]["failed"] == 1
    cancelled = imagineer(catalog, address, "labeling", "cancel", labeling["id"])
    assert cancelled.returncode == 2 and "FAILED_PRECONDITION" in cancelled.stdout
    refused = imagineer(catalog, address, "label", "album", "987654")
    assert refused.returncode == 2 and "NOT_FOUND" in refused.stdout

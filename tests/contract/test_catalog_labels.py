"""Contract: labels on images (create, list, delete) and finding images by label text."""

from __future__ import annotations

import math

import grpc
import pytest
from harness.catalog_client import upload_image
from harness.concurrency import expect_error, race
from harness.images import png_bytes

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_common.grpc_errors import error_reason, field_violations

UNKNOWN_ID = "987654321"
LABEL_TYPES = [res.LABEL_TYPE_CAPTION, res.LABEL_TYPE_TAG, res.LABEL_TYPE_MANUAL, res.LABEL_TYPE_USER,
               res.LABEL_TYPE_AI_GENERATED]


def make_image(stub, admin, seed: int, **fields) -> str:
    return upload_image(stub, png_bytes(seed=seed), admin, filename=f"label-{seed}.png", **fields).image.id


def label(stub, admin, image_id: str, text: str, label_type: int = res.LABEL_TYPE_TAG, **fields) -> res.Label:
    return stub.CreateLabel(api.CreateLabelRequest(image_id=image_id, label=res.Label(text=text, label_type=label_type,
                                                                                      **fields)), metadata=admin)


def all_labels(stub, admin, image_id: str, page_size: int = 0, **filters) -> list[res.Label]:
    labels: list[res.Label] = []
    token = ""
    while True:
        page = stub.ListLabels(api.ListLabelsRequest(image_id=image_id, page_size=page_size, page_token=token,
                                                     **filters), metadata=admin)
        if page_size:
            assert len(page.labels) <= page_size
        labels.extend(page.labels)
        token = page.next_page_token
        if not token:
            return labels


def images_labelled(stub, metadata, text: str) -> set[str]:
    reply = stub.ListImages(api.ListImagesRequest(label_text=text, page_size=500), metadata=metadata)
    assert not reply.next_page_token
    return {i.id for i in reply.images}


# CreateLabel


@pytest.mark.parametrize("label_type", LABEL_TYPES, ids=[res.LabelType.Name(t) for t in LABEL_TYPES])
def test_create_label_of_each_type_keeps_every_field(stub, admin, label_type):
    image_id = make_image(stub, admin, 20000 + label_type)
    created = label(stub, admin, image_id, "a fox in the snow", label_type, confidence=0.75,
                    source_model="blip-tiny", source_prompt="describe the image", created_by="ann@example.com")
    assert created.id and created.image_id == image_id
    assert created.text == "a fox in the snow"
    assert created.label_type == label_type
    assert created.HasField("confidence") and created.confidence == pytest.approx(0.75)
    assert created.source_model == "blip-tiny" and created.source_prompt == "describe the image"
    assert created.created_by == "ann@example.com"
    assert created.HasField("create_time")
    assert all_labels(stub, admin, image_id) == [created]


def test_create_label_without_confidence_leaves_it_unset(stub, admin):
    image_id = make_image(stub, admin, 20010)
    created = label(stub, admin, image_id, "no confidence", res.LABEL_TYPE_MANUAL)
    assert not created.HasField("confidence")
    assert not all_labels(stub, admin, image_id)[0].HasField("confidence")


@pytest.mark.parametrize("confidence", [0.0, 1.0, 0.5])
def test_confidence_bounds_are_inclusive(stub, admin, confidence):
    image_id = make_image(stub, admin, 20020 + int(confidence * 2))
    created = label(stub, admin, image_id, f"sure {confidence}", confidence=confidence)
    assert created.HasField("confidence") and created.confidence == pytest.approx(confidence)
    listed = all_labels(stub, admin, image_id)
    assert [(lb.id, lb.HasField("confidence")) for lb in listed] == [(created.id, True)]
    assert listed[0].confidence == pytest.approx(confidence)


@pytest.mark.parametrize("seed, confidence", list(enumerate([-0.01, 1.01, 2.0, -1.0, math.inf, math.nan], start=20030)))
def test_confidence_outside_zero_to_one_is_invalid(stub, admin, seed, confidence):
    image_id = make_image(stub, admin, seed)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, label, stub, admin, image_id, "unsure",
                         confidence=confidence)
    assert field_violations(error) == ["label.confidence"]
    assert all_labels(stub, admin, image_id) == []


@pytest.mark.parametrize("seed, text", list(enumerate(["", "   ", "x" * 10_001], start=20040)))
def test_label_text_is_required_and_bounded(stub, admin, seed, text):
    image_id = make_image(stub, admin, seed)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, label, stub, admin, image_id, text)
    assert field_violations(error) == ["label.text"]
    assert all_labels(stub, admin, image_id) == []


def test_label_text_of_the_maximum_length_is_accepted(stub, admin):
    image_id = make_image(stub, admin, 20045)
    created = label(stub, admin, image_id, "y" * 10_000, res.LABEL_TYPE_CAPTION)
    assert len(created.text) == 10_000


@pytest.mark.parametrize("seed, label_type", [(20050, res.LABEL_TYPE_UNSPECIFIED), (20051, 99)])
def test_label_type_must_be_a_known_type(stub, admin, seed, label_type):
    image_id = make_image(stub, admin, seed)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, label, stub, admin, image_id, "typed", label_type)
    assert field_violations(error) == ["label.label_type"]
    assert all_labels(stub, admin, image_id) == []


def test_every_bad_field_is_reported_at_once(stub, admin):
    image_id = make_image(stub, admin, 20055)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, label, stub, admin, image_id, "", confidence=3.0)
    assert set(field_violations(error)) == {"label.text", "label.confidence"}


def test_identical_label_twice_returns_the_first(stub, admin):
    image_id = make_image(stub, admin, 20060)
    first = label(stub, admin, image_id, "red fox", res.LABEL_TYPE_TAG, source_model="tagger", confidence=0.9)
    second = label(stub, admin, image_id, "red fox", res.LABEL_TYPE_TAG, source_model="tagger", confidence=0.4)
    assert second.id == first.id
    assert second == first  # the existing label, unchanged
    assert [lb.id for lb in all_labels(stub, admin, image_id)] == [first.id]


def test_same_text_with_another_type_or_source_is_another_label(stub, admin):
    image_id = make_image(stub, admin, 20070)
    tag = label(stub, admin, image_id, "fox", res.LABEL_TYPE_TAG)
    manual = label(stub, admin, image_id, "fox", res.LABEL_TYPE_MANUAL)
    other_model = label(stub, admin, image_id, "fox", res.LABEL_TYPE_TAG, source_model="other-tagger")
    assert len({tag.id, manual.id, other_model.id}) == 3
    assert [lb.id for lb in all_labels(stub, admin, image_id)] == [tag.id, manual.id, other_model.id]
    # The same label on another image is that image's own label.
    other_image = make_image(stub, admin, 20071)
    elsewhere = label(stub, admin, other_image, "fox", res.LABEL_TYPE_TAG)
    assert elsewhere.id not in {tag.id, manual.id, other_model.id} and elsewhere.image_id == other_image


@pytest.mark.parametrize("image_id, code, field", [
    (UNKNOWN_ID, grpc.StatusCode.NOT_FOUND, None),
    ("", grpc.StatusCode.INVALID_ARGUMENT, "image_id"),
    ("abc", grpc.StatusCode.INVALID_ARGUMENT, "image_id"),
])
def test_create_label_on_an_unknown_image(stub, admin, image_id, code, field):
    error = expect_error(code, label, stub, admin, image_id, "orphan")
    if field is None:
        assert error_reason(error) == "IMAGE_NOT_FOUND"
    else:
        assert field_violations(error) == [field]


# ListLabels


def test_list_labels_all_oldest_first_and_by_type(stub, admin):
    image_id = make_image(stub, admin, 20100)
    other_image = make_image(stub, admin, 20101)
    created = [
        label(stub, admin, image_id, "a cat on a sofa", res.LABEL_TYPE_CAPTION),
        label(stub, admin, image_id, "cat", res.LABEL_TYPE_TAG),
        label(stub, admin, image_id, "sofa", res.LABEL_TYPE_TAG),
        label(stub, admin, image_id, "safe", res.LABEL_TYPE_AI_GENERATED, confidence=0.99),
        label(stub, admin, image_id, "my cat", res.LABEL_TYPE_MANUAL),
    ]
    label(stub, admin, other_image, "dog", res.LABEL_TYPE_TAG)
    assert all_labels(stub, admin, image_id) == created
    assert [lb.text for lb in all_labels(stub, admin, image_id, label_type=res.LABEL_TYPE_TAG)] == ["cat", "sofa"]
    assert [lb.id for lb in all_labels(stub, admin, image_id, label_type=res.LABEL_TYPE_CAPTION)] == [created[0].id]
    assert all_labels(stub, admin, image_id, label_type=res.LABEL_TYPE_USER) == []
    assert all(lb.image_id == image_id for lb in all_labels(stub, admin, image_id))


def test_list_labels_of_an_image_without_labels_is_empty(stub, admin):
    image_id = make_image(stub, admin, 20110)
    reply = stub.ListLabels(api.ListLabelsRequest(image_id=image_id), metadata=admin)
    assert not reply.labels and not reply.next_page_token


def test_list_labels_pages_cover_everything_once(stub, admin):
    image_id = make_image(stub, admin, 20120)
    created = [label(stub, admin, image_id, f"tag {n}").id for n in range(5)]
    label(stub, admin, image_id, "a caption", res.LABEL_TYPE_CAPTION)
    pages = []
    token = ""
    while True:
        page = stub.ListLabels(api.ListLabelsRequest(image_id=image_id, page_size=2, page_token=token,
                                                     label_type=res.LABEL_TYPE_TAG), metadata=admin)
        pages.append([lb.id for lb in page.labels])
        token = page.next_page_token
        if not token:
            break
    assert pages == [created[0:2], created[2:4], created[4:5]]
    assert len(all_labels(stub, admin, image_id, page_size=1)) == 6


@pytest.mark.parametrize("seed, request_fields, field", [(20130 + n, *case) for n, case in enumerate([
    ({"page_size": -1}, "page_size"),
    ({"page_token": "garbage!"}, "page_token"),
    ({"label_type": 99}, "label_type"),
    ({"image_id": ""}, "image_id"),
    ({"image_id": "1.5"}, "image_id"),
])])
def test_list_labels_rejects_bad_arguments(stub, admin, seed, request_fields, field):
    image_id = make_image(stub, admin, seed)
    fields = {"image_id": image_id, **request_fields}
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListLabels, api.ListLabelsRequest(**fields),
                         metadata=admin)
    assert field in field_violations(error)


def test_list_labels_page_token_of_another_type_is_refused(stub, admin):
    image_id = make_image(stub, admin, 20140)
    for n in range(3):
        label(stub, admin, image_id, f"t{n}")
    page = stub.ListLabels(api.ListLabelsRequest(image_id=image_id, page_size=1, label_type=res.LABEL_TYPE_TAG),
                           metadata=admin)
    assert page.next_page_token
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListLabels,
                         api.ListLabelsRequest(image_id=image_id, page_size=1, page_token=page.next_page_token),
                         metadata=admin)
    assert field_violations(error) == ["page_token"]


def test_list_labels_of_an_unknown_image_is_not_found(stub, admin):
    error = expect_error(grpc.StatusCode.NOT_FOUND, stub.ListLabels, api.ListLabelsRequest(image_id=UNKNOWN_ID),
                         metadata=admin)
    assert error_reason(error) == "IMAGE_NOT_FOUND"


# DeleteLabel


def test_delete_label_removes_only_that_label(stub, admin):
    image_id = make_image(stub, admin, 20200)
    keep = label(stub, admin, image_id, "keep")
    drop = label(stub, admin, image_id, "drop")
    stub.DeleteLabel(api.DeleteLabelRequest(id=drop.id), metadata=admin)
    assert all_labels(stub, admin, image_id) == [keep]
    error = expect_error(grpc.StatusCode.NOT_FOUND, stub.DeleteLabel, api.DeleteLabelRequest(id=drop.id),
                         metadata=admin)
    assert error_reason(error) == "LABEL_NOT_FOUND"
    again = label(stub, admin, image_id, "drop")  # may be added again, as a new label
    assert [(lb.id, lb.text) for lb in all_labels(stub, admin, image_id)] == [(keep.id, "keep"), (again.id, "drop")]


def test_ids_of_deleted_labels_are_not_reused(stub, admin):
    # A retried DeleteLabel (its first answer lost) must not delete a label created in the meantime.
    image_id = make_image(stub, admin, 20205)
    deleted = label(stub, admin, image_id, "first")
    stub.DeleteLabel(api.DeleteLabelRequest(id=deleted.id), metadata=admin)
    newer = label(stub, admin, image_id, "second")
    assert newer.id != deleted.id
    with pytest.raises(grpc.RpcError):
        stub.DeleteLabel(api.DeleteLabelRequest(id=deleted.id), metadata=admin)  # the retry
    assert [lb.id for lb in all_labels(stub, admin, image_id)] == [newer.id]


@pytest.mark.parametrize("label_id, code", [
    (UNKNOWN_ID, grpc.StatusCode.NOT_FOUND),
    ("", grpc.StatusCode.INVALID_ARGUMENT),
    ("abc", grpc.StatusCode.INVALID_ARGUMENT),
    ("0", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_delete_unknown_or_malformed_label(stub, admin, label_id, code):
    error = expect_error(code, stub.DeleteLabel, api.DeleteLabelRequest(id=label_id), metadata=admin)
    if code == grpc.StatusCode.NOT_FOUND:
        assert error_reason(error) == "LABEL_NOT_FOUND"
    else:
        assert field_violations(error) == ["id"]


def test_deleting_an_image_deletes_its_labels(stub, admin):
    image_id = make_image(stub, admin, 20210)
    created = label(stub, admin, image_id, "ephemeral-20210")
    assert images_labelled(stub, admin, "ephemeral-20210") == {image_id}
    stub.DeleteImage(api.DeleteImageRequest(id=image_id), metadata=admin)
    expect_error(grpc.StatusCode.NOT_FOUND, stub.ListLabels, api.ListLabelsRequest(image_id=image_id), metadata=admin)
    expect_error(grpc.StatusCode.NOT_FOUND, stub.DeleteLabel, api.DeleteLabelRequest(id=created.id), metadata=admin)
    assert images_labelled(stub, admin, "ephemeral-20210") == set()


# ListImages by label text


def test_label_text_filter_is_a_case_insensitive_exact_match(stub, admin):
    exact = make_image(stub, admin, 20300, is_public=True)
    shouting = make_image(stub, admin, 20301, is_public=True)
    longer = make_image(stub, admin, 20302, is_public=True)
    shorter = make_image(stub, admin, 20303, is_public=True)
    private = make_image(stub, admin, 20304, is_public=False)
    label(stub, admin, exact, "Striped Zebra", res.LABEL_TYPE_TAG)
    label(stub, admin, shouting, "STRIPED ZEBRA", res.LABEL_TYPE_CAPTION)
    label(stub, admin, longer, "striped zebra foal", res.LABEL_TYPE_TAG)
    label(stub, admin, shorter, "zebra", res.LABEL_TYPE_TAG)
    label(stub, admin, private, "striped zebra", res.LABEL_TYPE_MANUAL)
    for query in ("striped zebra", "Striped Zebra", "STRIPED zebra", "  striped zebra  "):
        assert images_labelled(stub, admin, query) == {exact, shouting, private}
    assert images_labelled(stub, admin, "zebra") == {shorter}
    assert images_labelled(stub, admin, "striped") == set()
    assert images_labelled(stub, admin, "striped%") == set()
    assert images_labelled(stub, admin, "striped_zebra") == set()
    assert images_labelled(stub, (), "striped zebra") == {exact, shouting}  # anonymous: public images only


def test_label_text_filter_folds_non_ascii_case(stub, admin):
    image_id = make_image(stub, admin, 20310)
    label(stub, admin, image_id, "ÉTÉ À PARIS", res.LABEL_TYPE_TAG)
    assert images_labelled(stub, admin, "ÉTÉ À PARIS") == {image_id}
    assert images_labelled(stub, admin, "été à paris") == {image_id}


def test_label_text_filter_follows_deleted_labels(stub, admin):
    image_id = make_image(stub, admin, 20320)
    created = label(stub, admin, image_id, "Gone Soon")
    assert images_labelled(stub, admin, "gone soon") == {image_id}
    stub.DeleteLabel(api.DeleteLabelRequest(id=created.id), metadata=admin)
    assert images_labelled(stub, admin, "gone soon") == set()


def test_an_image_with_several_matching_labels_is_listed_once(stub, admin):
    image_id = make_image(stub, admin, 20330)
    label(stub, admin, image_id, "twin", res.LABEL_TYPE_TAG)
    label(stub, admin, image_id, "TWIN", res.LABEL_TYPE_MANUAL)
    reply = stub.ListImages(api.ListImagesRequest(label_text="Twin", page_size=500), metadata=admin)
    assert [i.id for i in reply.images] == [image_id]


# Authentication


@pytest.mark.parametrize("seed, call", list(enumerate([
    lambda stub, image_id, label_id: stub.CreateLabel(api.CreateLabelRequest(
        image_id=image_id, label=res.Label(text="anonymous", label_type=res.LABEL_TYPE_TAG))),
    lambda stub, image_id, label_id: stub.CreateLabel(api.CreateLabelRequest(
        image_id=UNKNOWN_ID, label=res.Label(text="anonymous", label_type=res.LABEL_TYPE_TAG))),
    lambda stub, image_id, label_id: stub.ListLabels(api.ListLabelsRequest(image_id=image_id)),
    lambda stub, image_id, label_id: stub.DeleteLabel(api.DeleteLabelRequest(id=label_id)),
    lambda stub, image_id, label_id: stub.DeleteLabel(api.DeleteLabelRequest(id=UNKNOWN_ID)),
], start=20400)), ids=["create", "create-unknown-image", "list", "delete", "delete-unknown"])
def test_labels_need_an_admin_token(stub, admin, seed, call):
    image_id = make_image(stub, admin, seed, is_public=True)
    existing = label(stub, admin, image_id, "admin only")
    error = expect_error(grpc.StatusCode.UNAUTHENTICATED, call, stub, image_id, existing.id)
    assert error_reason(error) == "ADMIN_TOKEN_REQUIRED"
    assert all_labels(stub, admin, image_id) == [existing]


def test_labels_with_a_wrong_token_are_unauthenticated(stub, admin):
    image_id = make_image(stub, admin, 20410)
    error = expect_error(grpc.StatusCode.UNAUTHENTICATED, label, stub, (("authorization", "Bearer wrong"),),
                         image_id, "nope")
    assert error_reason(error) == "INVALID_TOKEN"
    assert all_labels(stub, admin, image_id) == []


# Concurrency


def test_concurrent_identical_labels_make_one_label(stub, admin):
    image_id = make_image(stub, admin, 20500)
    for attempt in range(5):  # several rounds, so a race that needs luck to show still shows
        text = f"race {attempt}"
        results = race([lambda text=text: label(stub, admin, image_id, text, source_model="m").id] * 6)
        assert len(set(results)) == 1, results
        assert [lb.id for lb in all_labels(stub, admin, image_id) if lb.text == text] == results[:1]

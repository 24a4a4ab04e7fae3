"""Contract: image upload, read, list, update, delete, download and thumbnails."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from google.protobuf import field_mask_pb2
from harness.catalog_client import download_image, upload_image, upload_requests
from harness.images import png_bytes

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer_common.grpc_errors import error_reason, field_violations


def test_upload_stores_file_with_generation_record(stub, admin):
    data = png_bytes(24, 16, seed=101)
    generation = common_pb2.GenerationParameters(
        prompt="a red fox", negative_prompt="blurry", seed=2**40 + 7, steps=20, guidance_scale=7.5,
        scheduler="euler", width=24, height=16, base_model="imagineer/tiny-sd",
        loras=[common_pb2.LoraWeight(artifact_id="", name="styles/ink", weight=0.6)])
    reply = upload_image(stub, data, admin, filename="fox.png", generation=generation, is_public=True)
    image = reply.image
    assert not reply.already_existed
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.size_bytes == len(data)
    assert image.content_type == "image/png"
    assert image.generation.prompt == "a red fox"
    assert image.generation.seed == 2**40 + 7
    assert image.generation.loras[0].name == "styles/ink"
    assert image.generation.loras[0].weight == pytest.approx(0.6)
    assert (image.generation.width, image.generation.height) == (24, 16)
    assert image.has_file and image.is_public

    fetched = stub.GetImage(api.GetImageRequest(id=image.id), metadata=admin)
    assert fetched == image
    info, body = download_image(stub, image.id, admin)
    assert body == data and info.sha256 == image.sha256 and info.size_bytes == len(data)


def test_same_bytes_twice_give_the_same_image(stub, admin):
    data = png_bytes(seed=102)
    first = upload_image(stub, data, admin, filename="twice.png")
    second = upload_image(stub, data, admin, filename="other-name.png")
    assert second.already_existed
    assert second.image.id == first.image.id
    assert second.image.filename == "twice.png"


def test_same_filename_different_bytes_gets_a_unique_name(stub, admin):
    first = upload_image(stub, png_bytes(seed=103), admin, filename="dup.png")
    second = upload_image(stub, png_bytes(seed=104), admin, filename="dup.png")
    assert first.image.id != second.image.id
    assert second.image.filename != "dup.png" and second.image.filename.endswith(".png")


@pytest.mark.parametrize("make_requests, field", [
    (lambda: iter([api.UploadImageRequest(chunk_data=b"abc")]), "metadata"),
    (lambda: upload_requests(png_bytes(seed=105), filename=""), "metadata.filename"),
    (lambda: upload_requests(png_bytes(seed=105), filename="../evil.png"), "metadata.filename"),
    (lambda: upload_requests(b"definitely not an image", filename="x.png"), "chunk_data"),
    (lambda: upload_requests(b"", filename="x.png"), "chunk_data"),
    (lambda: upload_requests(png_bytes(seed=105), filename="x.png", expected_sha256="0" * 64),
     "metadata.expected_sha256"),
    (lambda: upload_requests(png_bytes(seed=105), filename="x.png",
                             generation=common_pb2.GenerationParameters(width=512, height=512)),
     "metadata.generation.width"),
    (lambda: upload_requests(png_bytes(seed=105), filename="x.png", album_id="abc"), "metadata.album_id"),
])
def test_bad_uploads_are_invalid_argument_naming_the_field(stub, admin, make_requests, field):
    before = stub.ListImages(api.ListImagesRequest(page_size=500), metadata=admin)
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadImage(make_requests(), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
    after = stub.ListImages(api.ListImagesRequest(page_size=500), metadata=admin)
    assert len(after.images) == len(before.images)  # nothing half-written


def test_upload_to_unknown_album_is_not_found(stub, admin):
    with pytest.raises(grpc.RpcError) as caught:
        upload_image(stub, png_bytes(seed=106), admin, album_id="999999")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "ALBUM_NOT_FOUND"


def test_upload_needs_admin(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadImage(upload_requests(png_bytes(seed=107)))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_token_is_unauthenticated_even_for_public_reads(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListImages(api.ListImagesRequest(), metadata=(("authorization", "Bearer wrong"),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(caught.value) == "INVALID_TOKEN"


def test_anonymous_callers_see_only_public_safe_images(stub, admin):
    public = upload_image(stub, png_bytes(seed=110), admin, filename="pub.png", is_public=True).image
    private = upload_image(stub, png_bytes(seed=111), admin, filename="priv.png", is_public=False).image
    nsfw = upload_image(stub, png_bytes(seed=112), admin, filename="nsfw.png", is_public=True, is_nsfw=True).image

    assert stub.GetImage(api.GetImageRequest(id=public.id)).id == public.id
    for hidden in (private, nsfw):
        for call in (lambda i: stub.GetImage(api.GetImageRequest(id=i)),
                     lambda i: download_image(stub, i),
                     lambda i: stub.GetImageThumbnail(api.GetImageThumbnailRequest(id=i))):
            with pytest.raises(grpc.RpcError) as caught:
                call(hidden.id)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = {i.id for i in stub.ListImages(api.ListImagesRequest(page_size=500)).images}
    assert public.id in listed and private.id not in listed and nsfw.id not in listed
    _, body = download_image(stub, public.id)
    assert body


def test_thumbnail_is_a_small_jpeg(stub, admin):
    image = upload_image(stub, png_bytes(600, 300, seed=120), admin, filename="wide.png").image
    thumb = stub.GetImageThumbnail(api.GetImageThumbnailRequest(id=image.id), metadata=admin)
    assert thumb.content_type == "image/jpeg"
    assert thumb.data[:3] == b"\xff\xd8\xff"
    assert (thumb.width, thumb.height) == (256, 128)


def test_list_pages_cover_everything_once_in_order(stub, admin):
    ids = [upload_image(stub, png_bytes(seed=200 + n), admin, filename=f"page{n}.png").image.id for n in range(7)]
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListImages(api.ListImagesRequest(page_size=3, page_token=token), metadata=admin)
        assert len(page.images) <= 3
        seen.extend(i.id for i in page.images)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in ids] == list(reversed(ids))  # newest first
    ascending = stub.ListImages(api.ListImagesRequest(page_size=500, order_by="create_time asc"), metadata=admin)
    assert [i.id for i in ascending.images if i.id in ids] == ids


@pytest.mark.parametrize("request_fields, field", [
    ({"page_size": -1}, "page_size"),
    ({"page_token": "garbage!"}, "page_token"),
    ({"order_by": "filename"}, "order_by"),
    ({"album_id": "x"}, "album_id"),
])
def test_list_rejects_bad_arguments(stub, admin, request_fields, field):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListImages(api.ListImagesRequest(**request_fields), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)


def test_page_token_of_other_filters_is_refused(stub, admin):
    for n in range(3):
        upload_image(stub, png_bytes(seed=300 + n), admin, filename=f"tok{n}.png", is_public=True)
    page = stub.ListImages(api.ListImagesRequest(page_size=1, is_public=True), metadata=admin)
    assert page.next_page_token
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListImages(api.ListImagesRequest(page_size=1, page_token=page.next_page_token, is_public=False),
                        metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_update_changes_only_masked_fields(stub, admin):
    image = upload_image(stub, png_bytes(seed=400), admin, filename="upd.png",
                         generation=common_pb2.GenerationParameters(prompt="old", steps=10)).image
    changed = stub.UpdateImage(api.UpdateImageRequest(
        image=res.Image(id=image.id, is_nsfw=True, generation=common_pb2.GenerationParameters(prompt="new",
                                                                                               steps=99)),
        update_mask=field_mask_pb2.FieldMask(paths=["is_nsfw", "generation.prompt"])), metadata=admin)
    assert changed.is_nsfw and changed.generation.prompt == "new"
    assert changed.generation.steps == 10


@pytest.mark.parametrize("paths, image_fields, field", [
    ([], {}, "update_mask"),
    (["sha256"], {}, "update_mask"),
    (["filename"], {"filename": "a/b.png"}, "image.filename"),
])
def test_update_rejects_bad_masks(stub, admin, paths, image_fields, field):
    image = upload_image(stub, png_bytes(seed=401), admin, filename="upd2.png").image
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateImage(api.UpdateImageRequest(image=res.Image(id=image.id, **image_fields),
                                                update_mask=field_mask_pb2.FieldMask(paths=paths)), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)


def test_update_unknown_image_is_not_found(stub, admin):
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateImage(api.UpdateImageRequest(image=res.Image(id="987654", is_nsfw=True),
                                                update_mask=field_mask_pb2.FieldMask(paths=["is_nsfw"])),
                         metadata=admin)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_removes_image_and_then_not_found(stub, admin):
    image = upload_image(stub, png_bytes(seed=500), admin, filename="del.png").image
    stub.DeleteImage(api.DeleteImageRequest(id=image.id), metadata=admin)
    for call in (lambda: stub.GetImage(api.GetImageRequest(id=image.id), metadata=admin),
                 lambda: stub.DeleteImage(api.DeleteImageRequest(id=image.id), metadata=admin)):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The same bytes can come back as a new image afterwards.
    again = upload_image(stub, png_bytes(seed=500), admin, filename="del.png")
    assert not again.already_existed and again.image.id != image.id  # ids are never reused
    _, body = download_image(stub, again.image.id, admin)
    assert body == png_bytes(seed=500)


def test_get_with_bad_id_is_invalid_argument(stub, admin):
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetImage(api.GetImageRequest(id=""), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["id"]


def test_large_upload_in_many_chunks(stub, admin):
    data = png_bytes(700, 700, seed=600)
    assert len(data) > 1_000_000
    image = upload_image(stub, data, admin, filename="big.png").image
    _, body = download_image(stub, image.id, admin)
    assert hashlib.sha256(body).hexdigest() == image.sha256

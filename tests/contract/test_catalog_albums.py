"""Contract: albums (create, read, list, update, delete) and their ordered membership."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from harness.catalog_client import upload_image
from harness.concurrency import expect_error, race
from harness.images import png_bytes

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_common.grpc_errors import error_reason, field_violations

UNKNOWN_ID = "987654321"


def make_images(stub, admin, seed: int, count: int = 1, **fields) -> list[str]:
    """Uploads ``count`` distinct images (seeds ``seed``..``seed + count - 1``) and returns their ids."""
    return [upload_image(stub, png_bytes(seed=s), admin, filename=f"album-{s}.png", **fields).image.id
            for s in range(seed, seed + count)]


def make_album(stub, admin, name: str = "album", **fields) -> res.Album:
    return stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name=name, **fields)), metadata=admin)


def add(stub, admin, album_id: str, image_ids: list[str], position: int | None = None) -> api.AddAlbumImagesResponse:
    request = api.AddAlbumImagesRequest(album_id=album_id, image_ids=image_ids)
    if position is not None:
        request.position = position
    return stub.AddAlbumImages(request, metadata=admin)


def members(stub, album_id: str, metadata=(), page_size: int = 500) -> list[res.AlbumImage]:
    """Every entry of an album in album order, following page tokens."""
    entries: list[res.AlbumImage] = []
    token = ""
    while True:
        page = stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=album_id, page_size=page_size,
                                                               page_token=token), metadata=metadata)
        assert len(page.album_images) <= page_size
        entries.extend(page.album_images)
        token = page.next_page_token
        if not token:
            return entries


def order(stub, admin, album_id: str) -> list[str]:
    entries = members(stub, album_id, admin)
    assert [e.position for e in entries] == list(range(len(entries)))  # always contiguous from 0
    return [e.image.id for e in entries]


def all_albums(stub, metadata=(), page_size: int = 500, **filters) -> list[res.Album]:
    albums: list[res.Album] = []
    token = ""
    while True:
        page = stub.ListAlbums(api.ListAlbumsRequest(page_size=page_size, page_token=token, **filters),
                               metadata=metadata)
        assert len(page.albums) <= page_size
        albums.extend(page.albums)
        token = page.next_page_token
        if not token:
            return albums


# CreateAlbum


def test_create_album_defaults_to_a_private_manual_album(stub, admin):
    album = make_album(stub, admin, name="  Holiday  ")
    assert album.id
    assert album.name == "Holiday"
    assert album.album_type == res.ALBUM_TYPE_MANUAL
    assert not album.is_public and not album.is_training_source
    assert album.image_count == 0
    assert not album.HasField("generation_config")
    assert album.HasField("create_time") and album.HasField("update_time")
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin) == album


def test_create_album_keeps_every_field_and_the_generation_config(stub, admin):
    config = struct_pb2.Struct()
    config.update({"steps": 30, "guidance_scale": 7.5, "scheduler": "euler", "hires": True, "negative": None,
                   "loras": [{"name": "styles/ink", "weight": 0.6}], "size": {"width": 512, "height": 768}})
    album = make_album(stub, admin, name="Batch 1", description="first batch", album_type=res.ALBUM_TYPE_BATCH,
                       is_public=True, is_training_source=True, created_by="ann@example.com",
                       generation_prompt="a {animal} in the snow", generation_config=config)
    assert album.album_type == res.ALBUM_TYPE_BATCH
    assert album.description == "first batch"
    assert album.is_public and album.is_training_source
    assert album.created_by == "ann@example.com"
    assert album.generation_prompt == "a {animal} in the snow"
    assert album.generation_config == config
    fetched = stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin)
    assert fetched.generation_config == config
    assert fetched == album


def test_create_album_ignores_output_fields(stub, admin):
    album = make_album(stub, admin, name="outputs", id="42424242", image_count=17)
    assert album.id != "42424242"
    assert album.image_count == 0


@pytest.mark.parametrize("name", ["", "   ", "x" * 256])
def test_create_album_needs_a_name(stub, admin, name):
    before = len(all_albums(stub, admin))
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, make_album, stub, admin, name=name)
    assert field_violations(error) == ["album.name"]
    assert len(all_albums(stub, admin)) == before


def test_create_album_rejects_an_unknown_album_type(stub, admin):
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, make_album, stub, admin, name="typed", album_type=99)
    assert "album.album_type" in field_violations(error)


def test_create_album_retry_with_request_id_returns_the_first_album(stub, admin):
    request_id = str(uuid.uuid4())
    before = len(all_albums(stub, admin))
    first = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="retry me"), request_id=request_id),
                             metadata=admin)
    again = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="retry me"), request_id=request_id),
                             metadata=admin)
    changed = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="other name"), request_id=request_id),
                               metadata=admin)
    assert again.id == first.id and changed.id == first.id
    assert changed.name == "retry me"
    assert len(all_albums(stub, admin)) == before + 1
    other = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="retry me"), request_id=str(uuid.uuid4())),
                             metadata=admin)
    assert other.id != first.id
    assert len(all_albums(stub, admin)) == before + 2



def test_concurrent_retries_with_one_request_id_make_one_album(stub, admin):
    # A client whose first call timed out retries while that call is still running.
    for attempt in range(3):
        request = api.CreateAlbumRequest(album=res.Album(name=f"concurrent retry {attempt}"),
                                         request_id=str(uuid.uuid4()))
        before = len(all_albums(stub, admin))
        replies = race([lambda request=request: stub.CreateAlbum(request, metadata=admin)] * 6)
        assert len({reply.id for reply in replies}) == 1
        assert len(all_albums(stub, admin)) == before + 1

def test_create_album_refuses_an_overlong_request_id(stub, admin):
    before = len(all_albums(stub, admin))
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.CreateAlbum,
                         api.CreateAlbumRequest(album=res.Album(name="long key"), request_id="k" * 129),
                         metadata=admin)
    assert field_violations(error) == ["request_id"]
    assert len(all_albums(stub, admin)) == before


@pytest.mark.parametrize("call", [
    lambda stub: stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="anonymous"))),
    lambda stub: stub.UpdateAlbum(api.UpdateAlbumRequest(album=res.Album(id=UNKNOWN_ID, name="x"),
                                                         update_mask=field_mask_pb2.FieldMask(paths=["name"]))),
    lambda stub: stub.DeleteAlbum(api.DeleteAlbumRequest(id=UNKNOWN_ID)),
    lambda stub: stub.AddAlbumImages(api.AddAlbumImagesRequest(album_id=UNKNOWN_ID, image_ids=["1"])),
    lambda stub: stub.RemoveAlbumImages(api.RemoveAlbumImagesRequest(album_id=UNKNOWN_ID, image_ids=["1"])),
    lambda stub: stub.ReorderAlbumImages(api.ReorderAlbumImagesRequest(album_id=UNKNOWN_ID, image_ids=["1"])),
], ids=["create", "update", "delete", "add", "remove", "reorder"])
def test_album_changes_need_an_admin_token(stub, admin, call):
    before = len(all_albums(stub, admin))
    error = expect_error(grpc.StatusCode.UNAUTHENTICATED, call, stub)  # permission before existence
    assert error_reason(error) == "ADMIN_TOKEN_REQUIRED"
    assert len(all_albums(stub, admin)) == before


def test_album_changes_with_a_wrong_token_are_unauthenticated(stub, admin):
    error = expect_error(grpc.StatusCode.UNAUTHENTICATED, stub.CreateAlbum,
                         api.CreateAlbumRequest(album=res.Album(name="wrong token")),
                         metadata=(("authorization", "Bearer not-the-token"),))
    assert error_reason(error) == "INVALID_TOKEN"


# GetAlbum


@pytest.mark.parametrize("album_id, code", [
    (UNKNOWN_ID, grpc.StatusCode.NOT_FOUND),
    ("", grpc.StatusCode.INVALID_ARGUMENT),
    ("abc", grpc.StatusCode.INVALID_ARGUMENT),
    ("-3", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_get_album_unknown_or_malformed_id(stub, admin, album_id, code):
    error = expect_error(code, stub.GetAlbum, api.GetAlbumRequest(id=album_id), metadata=admin)
    if code == grpc.StatusCode.NOT_FOUND:
        assert error_reason(error) == "ALBUM_NOT_FOUND"
    else:
        assert field_violations(error) == ["id"]


def test_private_album_is_hidden_from_anonymous_callers(stub, admin):
    album = make_album(stub, admin, name="secret", is_public=False)
    add(stub, admin, album.id, make_images(stub, admin, 10100, is_public=True))
    error = expect_error(grpc.StatusCode.NOT_FOUND, stub.GetAlbum, api.GetAlbumRequest(id=album.id))
    assert error_reason(error) == "ALBUM_NOT_FOUND"  # exactly like an album that does not exist
    expect_error(grpc.StatusCode.NOT_FOUND, stub.ListAlbumImages, api.ListAlbumImagesRequest(album_id=album.id))
    expect_error(grpc.StatusCode.NOT_FOUND, stub.ListImages, api.ListImagesRequest(album_id=album.id))
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 1


def test_public_album_counts_only_public_safe_images_for_anonymous_callers(stub, admin):
    album = make_album(stub, admin, name="gallery", is_public=True)
    public = make_images(stub, admin, 10200, 2, is_public=True)
    private = make_images(stub, admin, 10210, is_public=False)
    nsfw = make_images(stub, admin, 10220, is_public=True, is_nsfw=True)
    add(stub, admin, album.id, [public[0], *private, *nsfw, public[1]])
    seen = stub.GetAlbum(api.GetAlbumRequest(id=album.id))
    assert seen.id == album.id and seen.name == "gallery"
    assert seen.image_count == 2
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 4
    listed = {a.id: a for a in all_albums(stub)}
    assert listed[album.id].image_count == 2


# ListAlbums


def test_list_albums_filters_combine(stub, admin):
    batch = make_album(stub, admin, name="f-batch", album_type=res.ALBUM_TYPE_BATCH, is_public=True,
                       is_training_source=True)
    sets = make_album(stub, admin, name="f-set", album_type=res.ALBUM_TYPE_SET, is_public=False,
                      is_training_source=True)
    manual = make_album(stub, admin, name="f-manual", is_public=False)
    mine = {batch.id, sets.id, manual.id}

    def ids(**filters) -> set[str]:
        found = all_albums(stub, admin, **filters)
        assert len(found) == len({a.id for a in found})
        return {a.id for a in found} & mine

    by_type = all_albums(stub, admin, album_type=res.ALBUM_TYPE_BATCH)
    assert by_type and all(a.album_type == res.ALBUM_TYPE_BATCH for a in by_type)
    assert ids(album_type=res.ALBUM_TYPE_BATCH) == {batch.id}
    assert ids(album_type=res.ALBUM_TYPE_SET) == {sets.id}
    assert ids(album_type=res.ALBUM_TYPE_SCRAPED) == set()
    assert all(a.is_training_source for a in all_albums(stub, admin, is_training_source=True))
    assert ids(is_training_source=True) == {batch.id, sets.id}
    assert ids(is_training_source=False) == {manual.id}
    assert all(a.is_public for a in all_albums(stub, admin, is_public=True))
    assert ids(is_public=True) == {batch.id}
    assert ids(is_public=False) == {sets.id, manual.id}
    assert ids(is_public=False, is_training_source=True) == {sets.id}
    assert ids(album_type=res.ALBUM_TYPE_MANUAL, is_training_source=True) == set()
    assert ids() == mine


def test_list_albums_pages_cover_everything_once_newest_first(stub, admin):
    created = [make_album(stub, admin, name=f"page {n}").id for n in range(7)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListAlbums(api.ListAlbumsRequest(page_size=3, page_token=token), metadata=admin)
        assert len(page.albums) <= 3
        seen.extend(a.id for a in page.albums)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages >= 3
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in created] == list(reversed(created))
    assert {a.id for a in all_albums(stub, admin)} == set(seen)


@pytest.mark.parametrize("request_fields, field", [
    ({"page_size": -1}, "page_size"),
    ({"page_token": "garbage!"}, "page_token"),
    ({"album_type": 99}, "album_type"),
])
def test_list_albums_rejects_bad_arguments(stub, admin, request_fields, field):
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListAlbums, api.ListAlbumsRequest(**request_fields),
                         metadata=admin)
    assert field in field_violations(error)


def test_list_albums_page_token_of_other_filters_is_refused(stub, admin):
    for n in range(3):
        make_album(stub, admin, name=f"tok {n}", is_public=True)
    page = stub.ListAlbums(api.ListAlbumsRequest(page_size=1, is_public=True), metadata=admin)
    assert page.next_page_token
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListAlbums,
                         api.ListAlbumsRequest(page_size=1, page_token=page.next_page_token, is_public=False),
                         metadata=admin)
    assert field_violations(error) == ["page_token"]


def test_anonymous_callers_list_only_public_albums(stub, admin):
    public = make_album(stub, admin, name="anon public", is_public=True)
    private = make_album(stub, admin, name="anon private", is_public=False)
    listed = all_albums(stub)
    assert listed and all(a.is_public for a in listed)
    ids = {a.id for a in listed}
    assert public.id in ids and private.id not in ids
    assert all_albums(stub, is_public=False) == []
    paged = all_albums(stub, page_size=1)
    assert [a.id for a in paged] == [a.id for a in listed]


# UpdateAlbum


def update(stub, admin, album: res.Album, paths: list[str]) -> res.Album:
    return stub.UpdateAlbum(api.UpdateAlbumRequest(album=album, update_mask=field_mask_pb2.FieldMask(paths=paths)),
                            metadata=admin)


def test_update_album_changes_only_masked_fields(stub, admin):
    album = make_album(stub, admin, name="before", description="keep me", generation_prompt="old prompt")
    changed = update(stub, admin, res.Album(id=album.id, name="after", description="", is_public=True,
                                            is_training_source=True, generation_prompt="new prompt"),
                     ["name", "is_public"])
    assert changed.name == "after" and changed.is_public
    assert changed.description == "keep me"
    assert changed.generation_prompt == "old prompt"
    assert not changed.is_training_source
    assert changed.album_type == res.ALBUM_TYPE_MANUAL
    assert changed.create_time == album.create_time
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin) == changed
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id)).name == "after"  # now public


def test_update_album_type_prompt_and_generation_config(stub, admin):
    album = make_album(stub, admin, name="to batch")
    config = struct_pb2.Struct()
    config.update({"steps": 12, "seed_start": 1000})
    changed = update(stub, admin, res.Album(id=album.id, album_type=res.ALBUM_TYPE_SET, generation_prompt="p",
                                            generation_config=config, description="described"),
                     ["album_type", "generation_prompt", "generation_config", "description"])
    assert changed.album_type == res.ALBUM_TYPE_SET
    assert changed.generation_prompt == "p" and changed.description == "described"
    assert changed.generation_config == config
    cleared = update(stub, admin, res.Album(id=album.id), ["generation_config", "description"])
    assert not cleared.HasField("generation_config") and cleared.description == ""
    assert cleared.generation_prompt == "p"


def test_update_album_marks_a_training_source(stub, admin):
    album = make_album(stub, admin, name="training set")
    image_ids = make_images(stub, admin, 10300, 2)
    add(stub, admin, album.id, image_ids)
    assert album.id not in {a.id for a in all_albums(stub, admin, is_training_source=True)}
    changed = update(stub, admin, res.Album(id=album.id, is_training_source=True), ["is_training_source"])
    assert changed.is_training_source and changed.image_count == 2
    assert album.id in {a.id for a in all_albums(stub, admin, is_training_source=True)}
    assert album.id not in {a.id for a in all_albums(stub, admin, is_training_source=False)}
    sources = stub.ListImages(api.ListImagesRequest(page_size=500, in_training_source_album=True), metadata=admin)
    assert set(image_ids) <= {i.id for i in sources.images}
    unmarked = update(stub, admin, res.Album(id=album.id, is_training_source=False), ["is_training_source"])
    assert not unmarked.is_training_source
    assert album.id in {a.id for a in all_albums(stub, admin, is_training_source=False)}


@pytest.mark.parametrize("paths, album_fields, field", [
    ([], {"name": "x"}, "update_mask"),
    (["image_count"], {"image_count": 3}, "update_mask"),
    (["id"], {}, "update_mask"),
    (["create_time"], {}, "update_mask"),
    (["name", "bogus"], {"name": "x"}, "update_mask"),
    (["name"], {"name": ""}, "album.name"),
    (["name"], {"name": "y" * 256}, "album.name"),
    (["album_type"], {}, "album.album_type"),
])
def test_update_album_rejects_bad_masks_and_values(stub, admin, paths, album_fields, field):
    album = make_album(stub, admin, name="unchanged")
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, update, stub, admin,
                         res.Album(id=album.id, **album_fields), paths)
    assert field in field_violations(error)
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin) == album


@pytest.mark.parametrize("album_id, code", [
    (UNKNOWN_ID, grpc.StatusCode.NOT_FOUND),
    ("", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_update_unknown_album(stub, admin, album_id, code):
    error = expect_error(code, update, stub, admin, res.Album(id=album_id, name="ghost"), ["name"])
    if code == grpc.StatusCode.NOT_FOUND:
        assert error_reason(error) == "ALBUM_NOT_FOUND"
    else:
        assert field_violations(error) == ["album.id"]


# DeleteAlbum


def test_delete_album_keeps_its_images_and_is_then_not_found(stub, admin):
    album = make_album(stub, admin, name="doomed", is_public=True)
    image_ids = make_images(stub, admin, 10400, 2)
    other = make_album(stub, admin, name="survivor")
    add(stub, admin, album.id, image_ids)
    add(stub, admin, other.id, image_ids[:1])
    stub.DeleteAlbum(api.DeleteAlbumRequest(id=album.id), metadata=admin)
    for call in (lambda: stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin),
                 lambda: stub.DeleteAlbum(api.DeleteAlbumRequest(id=album.id), metadata=admin),
                 lambda: stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=album.id), metadata=admin),
                 lambda: add(stub, admin, album.id, image_ids[:1])):
        error = expect_error(grpc.StatusCode.NOT_FOUND, call)
        assert error_reason(error) == "ALBUM_NOT_FOUND"
    assert album.id not in {a.id for a in all_albums(stub, admin)}
    for image_id in image_ids:
        assert stub.GetImage(api.GetImageRequest(id=image_id), metadata=admin).id == image_id
    assert order(stub, admin, other.id) == image_ids[:1]


def test_ids_of_deleted_albums_are_not_reused(stub, admin):
    # Otherwise a CreateAlbum retry (AIP-155) would answer with an album the first call never created.
    request_id = str(uuid.uuid4())
    first = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="first"), request_id=request_id),
                             metadata=admin)
    stub.DeleteAlbum(api.DeleteAlbumRequest(id=first.id), metadata=admin)
    second = make_album(stub, admin, name="second")
    assert second.id != first.id
    try:
        retried = stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name="first"), request_id=request_id),
                                   metadata=admin)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert retried.id != second.id and retried.name == "first"


@pytest.mark.parametrize("album_id, code", [
    (UNKNOWN_ID, grpc.StatusCode.NOT_FOUND),
    ("", grpc.StatusCode.INVALID_ARGUMENT),
    ("x1", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_delete_unknown_album(stub, admin, album_id, code):
    error = expect_error(code, stub.DeleteAlbum, api.DeleteAlbumRequest(id=album_id), metadata=admin)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert field_violations(error) == ["id"]


# AddAlbumImages


def test_add_appends_in_the_given_order(stub, admin):
    album = make_album(stub, admin, name="append")
    a, b, c, d = make_images(stub, admin, 10500, 4)
    first = add(stub, admin, album.id, [b, a])
    assert list(first.added_image_ids) == [b, a] and not first.already_present_image_ids
    assert first.album.id == album.id and first.album.image_count == 2
    second = add(stub, admin, album.id, [d, c])
    assert second.album.image_count == 4
    entries = members(stub, album.id, admin)
    assert [e.image.id for e in entries] == [b, a, d, c]
    assert [e.position for e in entries] == [0, 1, 2, 3]
    assert all(e.HasField("add_time") for e in entries)
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 4


def test_add_at_a_position_inserts_there(stub, admin):
    album = make_album(stub, admin, name="insert")
    a, b, c, x, y, z, w = make_images(stub, admin, 10600, 7)
    add(stub, admin, album.id, [a, b, c])
    add(stub, admin, album.id, [x, y], position=1)
    assert order(stub, admin, album.id) == [a, x, y, b, c]
    add(stub, admin, album.id, [z], position=0)
    assert order(stub, admin, album.id) == [z, a, x, y, b, c]
    add(stub, admin, album.id, [w], position=100)  # past the end appends
    assert order(stub, admin, album.id) == [z, a, x, y, b, c, w]


def test_add_into_an_empty_album_at_a_position(stub, admin):
    album = make_album(stub, admin, name="empty insert")
    a, b = make_images(stub, admin, 10650, 2)
    add(stub, admin, album.id, [a, b], position=5)
    assert order(stub, admin, album.id) == [a, b]


def test_add_reports_images_already_present_and_leaves_them_in_place(stub, admin):
    album = make_album(stub, admin, name="present")
    a, b, c, d, e = make_images(stub, admin, 10700, 5)
    add(stub, admin, album.id, [a, b, c])
    reply = add(stub, admin, album.id, [c, d, a])
    assert list(reply.added_image_ids) == [d]
    assert list(reply.already_present_image_ids) == [c, a]
    assert reply.album.image_count == 4
    assert order(stub, admin, album.id) == [a, b, c, d]
    reply = add(stub, admin, album.id, [b, e], position=0)
    assert list(reply.added_image_ids) == [e] and list(reply.already_present_image_ids) == [b]
    assert order(stub, admin, album.id) == [e, a, b, c, d]
    again = add(stub, admin, album.id, [a, b])
    assert not again.added_image_ids and list(again.already_present_image_ids) == [a, b]
    assert order(stub, admin, album.id) == [e, a, b, c, d]


def test_add_with_an_unknown_image_is_not_found_and_adds_nothing(stub, admin):
    album = make_album(stub, admin, name="all or nothing")
    a, b = make_images(stub, admin, 10800, 2)
    add(stub, admin, album.id, [a])
    error = expect_error(grpc.StatusCode.NOT_FOUND, add, stub, admin, album.id, [b, UNKNOWN_ID])
    assert error_reason(error) == "IMAGE_NOT_FOUND"
    assert order(stub, admin, album.id) == [a]
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 1


@pytest.mark.parametrize("seed, make_request, field", [(10900 + 2 * n, *case) for n, case in enumerate([
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id=album_id), "image_ids"),
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id=album_id, image_ids=[ids[0], ids[0]]), "image_ids"),
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id=album_id, image_ids=[ids[0], ids[1], ids[0]]),
     "image_ids"),
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id=album_id, image_ids=ids, position=-1), "position"),
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id=album_id, image_ids=[ids[0], "abc"]), "image_ids[1]"),
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id=album_id, image_ids=[str(n + 1) for n in range(1001)]),
     "image_ids"),
    (lambda album_id, ids: api.AddAlbumImagesRequest(album_id="", image_ids=ids), "album_id"),
])], ids=["empty", "repeated", "repeated-apart", "negative-position", "malformed-id", "too-many", "no-album"])
def test_add_rejects_bad_arguments(stub, admin, seed, make_request, field):
    album = make_album(stub, admin, name="bad adds")
    ids = make_images(stub, admin, seed, 2)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.AddAlbumImages, make_request(album.id, ids),
                         metadata=admin)
    assert field in field_violations(error)
    assert order(stub, admin, album.id) == []


def test_add_to_an_unknown_album_is_not_found(stub, admin):
    image_ids = make_images(stub, admin, 10950)
    error = expect_error(grpc.StatusCode.NOT_FOUND, add, stub, admin, UNKNOWN_ID, image_ids)
    assert error_reason(error) == "ALBUM_NOT_FOUND"


def test_upload_with_album_id_appends_to_the_album(stub, admin):
    album = make_album(stub, admin, name="upload target")
    first = make_images(stub, admin, 11000)
    add(stub, admin, album.id, first)
    uploaded = upload_image(stub, png_bytes(seed=11001), admin, filename="album-11001.png", album_id=album.id)
    assert not uploaded.already_existed
    # Uploading bytes that are already stored still puts that image in the album, once.
    stored = make_images(stub, admin, 11002)
    again = upload_image(stub, png_bytes(seed=11002), admin, filename="again.png", album_id=album.id)
    assert again.already_existed and again.image.id == stored[0]
    twice = upload_image(stub, png_bytes(seed=11002), admin, filename="again.png", album_id=album.id)
    assert twice.already_existed
    assert order(stub, admin, album.id) == [first[0], uploaded.image.id, stored[0]]
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 3


# RemoveAlbumImages


def test_remove_closes_up_positions(stub, admin):
    album = make_album(stub, admin, name="remove")
    a, b, c, d, e, f, outsider = make_images(stub, admin, 11100, 7)
    add(stub, admin, album.id, [a, b, c, d, e])
    reply = stub.RemoveAlbumImages(api.RemoveAlbumImagesRequest(album_id=album.id, image_ids=[d, b, outsider]),
                                   metadata=admin)
    assert reply.removed_count == 2  # ids not in the album are ignored
    assert reply.album.image_count == 3
    assert order(stub, admin, album.id) == [a, c, e]
    add(stub, admin, album.id, [f])
    assert order(stub, admin, album.id) == [a, c, e, f]
    add(stub, admin, album.id, [b], position=1)
    assert order(stub, admin, album.id) == [a, b, c, e, f]
    for image_id in (b, d):
        assert stub.GetImage(api.GetImageRequest(id=image_id), metadata=admin).id == image_id
    none = stub.RemoveAlbumImages(api.RemoveAlbumImagesRequest(album_id=album.id, image_ids=[d]), metadata=admin)
    assert none.removed_count == 0 and none.album.image_count == 5


def test_remove_everything_then_add_starts_at_zero(stub, admin):
    album = make_album(stub, admin, name="emptied")
    a, b, c = make_images(stub, admin, 11150, 3)
    add(stub, admin, album.id, [a, b])
    reply = stub.RemoveAlbumImages(api.RemoveAlbumImagesRequest(album_id=album.id, image_ids=[a, b]),
                                   metadata=admin)
    assert reply.removed_count == 2 and reply.album.image_count == 0
    assert order(stub, admin, album.id) == []
    add(stub, admin, album.id, [c, a])
    assert order(stub, admin, album.id) == [c, a]


def test_deleting_an_image_closes_up_its_albums(stub, admin):
    album = make_album(stub, admin, name="image deleted")
    a, b, c = make_images(stub, admin, 11180, 3)
    add(stub, admin, album.id, [a, b, c])
    stub.DeleteImage(api.DeleteImageRequest(id=b), metadata=admin)
    assert order(stub, admin, album.id) == [a, c]
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 2


@pytest.mark.parametrize("seed, album_id, image_ids, code, field", [(11200 + n, *case) for n, case in enumerate([
    ("album", [], grpc.StatusCode.INVALID_ARGUMENT, "image_ids"),
    ("album", ["5", "5"], grpc.StatusCode.INVALID_ARGUMENT, "image_ids"),
    ("album", ["nope"], grpc.StatusCode.INVALID_ARGUMENT, "image_ids[0]"),
    ("", ["5"], grpc.StatusCode.INVALID_ARGUMENT, "album_id"),
    (UNKNOWN_ID, ["5"], grpc.StatusCode.NOT_FOUND, None),
])])
def test_remove_rejects_bad_arguments(stub, admin, seed, album_id, image_ids, code, field):
    album = make_album(stub, admin, name="bad removes")
    kept = make_images(stub, admin, seed)
    add(stub, admin, album.id, kept)
    target = album.id if album_id == "album" else album_id
    error = expect_error(code, stub.RemoveAlbumImages,
                         api.RemoveAlbumImagesRequest(album_id=target, image_ids=image_ids), metadata=admin)
    if field is None:
        assert error_reason(error) == "ALBUM_NOT_FOUND"
    else:
        assert field in field_violations(error)
    assert order(stub, admin, album.id) == kept


# ReorderAlbumImages


def test_reorder_sets_the_complete_order(stub, admin):
    album = make_album(stub, admin, name="reorder")
    a, b, c, d, e = make_images(stub, admin, 11300, 5)
    add(stub, admin, album.id, [a, b, c, d])
    reply = stub.ReorderAlbumImages(api.ReorderAlbumImagesRequest(album_id=album.id, image_ids=[d, b, a, c]),
                                    metadata=admin)
    assert reply.album.id == album.id and reply.album.image_count == 4
    assert order(stub, admin, album.id) == [d, b, a, c]
    add(stub, admin, album.id, [e], position=2)
    assert order(stub, admin, album.id) == [d, b, e, a, c]
    add(stub, admin, album.id, make_images(stub, admin, 11310))
    assert order(stub, admin, album.id)[:5] == [d, b, e, a, c]


def test_reorder_an_empty_album_with_no_ids(stub, admin):
    album = make_album(stub, admin, name="empty reorder")
    reply = stub.ReorderAlbumImages(api.ReorderAlbumImagesRequest(album_id=album.id), metadata=admin)
    assert reply.album.image_count == 0


@pytest.mark.parametrize("seed, arrange", [(11400 + 10 * n, arrange) for n, arrange in enumerate([
    lambda ids, outsider: ids[:3],  # one missing
    lambda ids, outsider: [*ids, outsider],  # one extra
    lambda ids, outsider: [ids[0], *ids[2:], outsider],  # one swapped for a stranger
    lambda ids, outsider: [ids[0], ids[0], ids[1], ids[2]],  # duplicate instead of one
    lambda ids, outsider: [*ids, ids[0]],  # duplicate on top of all
    lambda ids, outsider: [],
    lambda ids, outsider: [*ids, UNKNOWN_ID],  # an image that does not exist at all
])], ids=["missing", "extra", "swapped", "duplicate", "duplicate-extra", "empty", "unknown-image"])
def test_reorder_needs_a_full_permutation(stub, admin, seed, arrange):
    album = make_album(stub, admin, name="bad reorder")
    *ids, outsider = make_images(stub, admin, seed, 5)
    add(stub, admin, album.id, ids)
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ReorderAlbumImages,
                         api.ReorderAlbumImagesRequest(album_id=album.id, image_ids=arrange(ids, outsider)),
                         metadata=admin)
    assert field_violations(error) == ["image_ids"]
    assert order(stub, admin, album.id) == ids


def test_reorder_unknown_album_is_not_found(stub, admin):
    error = expect_error(grpc.StatusCode.NOT_FOUND, stub.ReorderAlbumImages,
                         api.ReorderAlbumImagesRequest(album_id=UNKNOWN_ID, image_ids=["1"]), metadata=admin)
    assert error_reason(error) == "ALBUM_NOT_FOUND"


# ListAlbumImages


def test_list_album_images_pages_in_album_order(stub, admin):
    album = make_album(stub, admin, name="paged")
    ids = make_images(stub, admin, 11500, 7)
    shuffled = [ids[n] for n in (3, 0, 6, 1, 5, 2, 4)]
    add(stub, admin, album.id, ids)
    stub.ReorderAlbumImages(api.ReorderAlbumImagesRequest(album_id=album.id, image_ids=shuffled), metadata=admin)
    entries: list[res.AlbumImage] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=album.id, page_size=3, page_token=token),
                                    metadata=admin)
        assert len(page.album_images) <= 3
        entries.extend(page.album_images)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [e.image.id for e in entries] == shuffled
    assert [e.position for e in entries] == list(range(7))
    assert entries[0].image.sha256 and entries[0].image.filename.startswith("album-")
    exact = stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=album.id, page_size=7), metadata=admin)
    assert len(exact.album_images) == 7 and not exact.next_page_token


def test_list_album_images_of_an_empty_album(stub, admin):
    album = make_album(stub, admin, name="nothing here")
    page = stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=album.id), metadata=admin)
    assert not page.album_images and not page.next_page_token


@pytest.mark.parametrize("request_fields, field", [
    ({"page_size": -1}, "page_size"),
    ({"page_token": "garbage!"}, "page_token"),
])
def test_list_album_images_rejects_bad_arguments(stub, admin, request_fields, field):
    album = make_album(stub, admin, name="bad list")
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListAlbumImages,
                         api.ListAlbumImagesRequest(album_id=album.id, **request_fields), metadata=admin)
    assert field in field_violations(error)


def test_list_album_images_page_token_of_another_album_is_refused(stub, admin):
    first = make_album(stub, admin, name="token a")
    second = make_album(stub, admin, name="token b")
    ids = make_images(stub, admin, 11550, 2)
    add(stub, admin, first.id, ids)
    add(stub, admin, second.id, ids)
    page = stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=first.id, page_size=1), metadata=admin)
    assert page.next_page_token
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListAlbumImages,
                         api.ListAlbumImagesRequest(album_id=second.id, page_size=1,
                                                    page_token=page.next_page_token), metadata=admin)
    assert field_violations(error) == ["page_token"]


def test_list_album_images_of_unknown_album_is_not_found(stub, admin):
    error = expect_error(grpc.StatusCode.NOT_FOUND, stub.ListAlbumImages,
                         api.ListAlbumImagesRequest(album_id=UNKNOWN_ID), metadata=admin)
    assert error_reason(error) == "ALBUM_NOT_FOUND"


def test_anonymous_callers_see_only_public_safe_images_of_a_public_album(stub, admin):
    album = make_album(stub, admin, name="mixed", is_public=True)
    public = make_images(stub, admin, 11600, 3, is_public=True)
    private = make_images(stub, admin, 11610, is_public=False)
    nsfw = make_images(stub, admin, 11620, is_public=True, is_nsfw=True)
    add(stub, admin, album.id, [public[0], private[0], public[1], nsfw[0], public[2]])
    seen = members(stub, album.id)
    assert [e.image.id for e in seen] == public
    assert all(e.image.is_public and not e.image.is_nsfw for e in seen)
    paged = members(stub, album.id, page_size=1)
    assert [e.image.id for e in paged] == public
    assert len(order(stub, admin, album.id)) == 5
    filtered = stub.ListImages(api.ListImagesRequest(album_id=album.id, page_size=500))
    assert {i.id for i in filtered.images} == set(public)


# Concurrency


def test_concurrent_adds_to_one_album_give_each_image_one_place(stub, admin):
    album = make_album(stub, admin, name="crowded")
    batches = [make_images(stub, admin, 11700 + 10 * n, 3) for n in range(8)]
    replies = race([lambda batch=batch: add(stub, admin, album.id, batch) for batch in batches])
    assert [list(reply.added_image_ids) for reply in replies] == batches
    entries = members(stub, album.id, admin)
    ids = [e.image.id for e in entries]
    assert sorted(ids) == sorted(i for batch in batches for i in batch)
    assert len(ids) == len(set(ids))
    assert [e.position for e in entries] == list(range(24))
    for batch in batches:  # each call's images stay together, in the order given
        start = ids.index(batch[0])
        assert ids[start:start + len(batch)] == batch
    assert stub.GetAlbum(api.GetAlbumRequest(id=album.id), metadata=admin).image_count == 24

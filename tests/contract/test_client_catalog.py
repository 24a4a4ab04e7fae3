"""The `imagineer` catalog commands and the Python client's catalog calls against a real catalog (SQLite), plus
BackupCatalog/RestoreCatalog over the API: backup of a live catalog, restore into an empty one, refusals."""

from __future__ import annotations

import json
import tarfile

import grpc
import pytest
from harness.images import png_bytes
from harness.processes import ADMIN_TOKEN, catalog_process

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_client import cli
from imagineer_client.client import Imagineer, ImagineerError


@pytest.fixture(scope="module")
def client(catalog):
    with Imagineer(catalog=catalog.address, token=ADMIN_TOKEN) as connection:
        yield connection


def run_json(catalog, capsys, *argv) -> object:
    """Runs the command line with --json and returns what it printed."""
    capsys.readouterr()
    code = cli.main(["--catalog", catalog.address, "--token", ADMIN_TOKEN, "--json", *argv])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    return json.loads(out)


@pytest.fixture(scope="module")
def stored(client):
    """Three images uploaded into a new album, in upload order."""
    album = client.create_album("client-test")
    images = [client.upload_image(png_bytes(24, 16, seed=seed), f"img{seed}.png", album_id=album.id)
              for seed in (101, 102, 103)]
    return album, images


def test_upload_is_listed_in_album_order(client, stored):
    album, images = stored
    members = client.album_images(album.id)
    assert [m.image.id for m in members] == [image.id for image in images]
    assert [m.position for m in members] == [0, 1, 2]


def test_albums_show_json_keeps_order(catalog, capsys, stored):
    album, images = stored
    shown = run_json(catalog, capsys, "albums", "show", album.id)
    assert shown["name"] == "client-test"
    assert [entry["image"]["id"] for entry in shown["images"]] == [image.id for image in images]


def test_albums_add_at_position_and_remove(catalog, capsys, client, stored):
    album, images = stored
    extra = client.upload_image(png_bytes(24, 16, seed=104), "img104.png")
    updated = run_json(catalog, capsys, "albums", "add", album.id, extra.id, "--position", "1")
    assert updated[0]["imageCount"] == 4
    assert [m.image.id for m in client.album_images(album.id)] == [images[0].id, extra.id, images[1].id, images[2].id]
    run_json(catalog, capsys, "albums", "remove", album.id, extra.id)
    assert [m.image.id for m in client.album_images(album.id)] == [image.id for image in images]


def test_training_source_toggle(catalog, capsys, stored):
    album, _ = stored
    assert run_json(catalog, capsys, "albums", "training-source", album.id)[0]["isTrainingSource"] is True
    sources = run_json(catalog, capsys, "albums", "list", "--training-sources")
    assert album.id in [entry["id"] for entry in sources]
    assert run_json(catalog, capsys, "albums", "training-source", album.id, "--off")[0].get(
        "isTrainingSource", False) is False


def test_labels_add_list_delete(catalog, capsys, stored):
    _, images = stored
    added = run_json(catalog, capsys, "labels", "add", images[0].id, "red brick house", "--type", "tag")
    assert added[0]["labelType"] == "LABEL_TYPE_TAG" and added[0]["text"] == "red brick house"
    listed = run_json(catalog, capsys, "labels", "list", images[0].id)
    assert [label["text"] for label in listed] == ["red brick house"]
    run_json(catalog, capsys, "labels", "delete", added[0]["id"])
    assert run_json(catalog, capsys, "labels", "list", images[0].id) == []


def test_images_update_download_and_show(catalog, capsys, tmp_path, stored):
    _, images = stored
    updated = run_json(catalog, capsys, "images", "update", images[1].id, "--public", "--nsfw")
    assert updated[0]["isPublic"] is True and updated[0]["isNsfw"] is True
    saved = run_json(catalog, capsys, "images", "download", images[1].id, "--out", str(tmp_path))
    assert open(saved[0], "rb").read() == png_bytes(24, 16, seed=102)
    shown = run_json(catalog, capsys, "images", "show", images[1].id)
    assert shown["sha256"] == images[1].sha256 and shown["labels"] == []


def test_update_without_changes_is_bad_input(catalog, stored):
    _, images = stored
    assert cli.main(["--catalog", catalog.address, "--token", ADMIN_TOKEN, "images", "update",
                     images[0].id]) == cli.EXIT_BAD_INPUT


def test_unknown_album_is_bad_input_with_the_reason(catalog, capsys):
    assert cli.main(["--catalog", catalog.address, "--token", ADMIN_TOKEN, "albums", "show", "999999"]) \
        == cli.EXIT_BAD_INPUT
    assert "NOT_FOUND" in capsys.readouterr().out


def test_images_list_table_names_every_image(catalog, capsys, stored):
    _, images = stored
    capsys.readouterr()
    assert cli.main(["--catalog", catalog.address, "--token", ADMIN_TOKEN, "images", "list"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert all(image.filename in out for image in images)


def test_import_streams_a_summary(catalog, capsys, tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "a.png").write_bytes(png_bytes(20, 20, seed=201))
    (outputs / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    code = cli.main(["--catalog", catalog.address, "--token", ADMIN_TOKEN, "--json", "import", str(outputs)])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["imported"], summary["failed"]) == (1, 1)
    assert code == cli.EXIT_FAULT  # a failed file is reported as a fault, not silently


# --- backup and restore over the API ----------------------------------------------------------------------------


def test_backup_restore_round_trip(catalog, capsys, client, stored, tmp_path, tmp_path_factory):
    album, images = stored
    client.add_label(images[2].id, "a caption for the backup", res.LABEL_TYPE_CAPTION)
    archive = tmp_path / "catalog.tar"
    manifest = run_json(catalog, capsys, "backup", str(archive))
    assert tarfile.is_tarfile(archive) and int(manifest["archiveSizeBytes"]) == archive.stat().st_size
    assert manifest["fileCount"] >= 3 and int(manifest["rowCount"]) > 3

    target = catalog_process(tmp_path_factory.mktemp("restored")).start()
    try:
        restored = run_json(target, capsys, "restore", str(archive))
        assert restored["archiveSha256"] == manifest["archiveSha256"]
        with Imagineer(catalog=target.address, token=ADMIN_TOKEN) as other:
            assert [m.image.id for m in other.album_images(album.id)] == [m.image.id for m in
                                                                         client.album_images(album.id)]
            assert [label.text for label in other.list_labels(images[2].id)] == ["a caption for the backup"]
            _, data = other.download_image(images[0].id)
            assert data == png_bytes(24, 16, seed=101)
            # The restored catalog serves writes again, with ids after the restored ones.
            fresh = other.upload_image(png_bytes(8, 8, seed=999), "after.png")
            assert int(fresh.id) > max(int(image.id) for image in images)
    finally:
        target.stop()


def test_restore_refuses_a_catalog_that_is_not_empty(client, tmp_path):
    archive = tmp_path / "catalog.tar"
    client.backup(archive)
    with pytest.raises(ImagineerError) as error:
        client.restore(archive)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not empty" in str(error.value)
    assert client.list_images(limit=1)  # still serving


def test_restore_refuses_garbage_and_leaves_the_catalog_empty(tmp_path, tmp_path_factory):
    target = catalog_process(tmp_path_factory.mktemp("garbage")).start()
    try:
        junk = tmp_path / "junk.tar"
        junk.write_bytes(b"this is not a tar archive" * 100)
        with Imagineer(catalog=target.address, token=ADMIN_TOKEN) as other:
            with pytest.raises(ImagineerError) as error:
                other.restore(junk)
            assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "chunk_data: the uploaded archive is not a readable backup archive" in str(error.value)
            assert str(target.log_path.parent) not in str(error.value)  # no server paths in messages
            empty_archive = tmp_path / "empty.tar"
            empty_archive.write_bytes(b"")
            with pytest.raises(ImagineerError) as empty:
                other.restore(empty_archive)
            assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT and "no archive was sent" in str(empty.value)
            assert other.list_images(limit=5) == []
            staging = target.log_path.parent / "blobs" / "tmp"
            assert staging.is_dir() and not list(staging.iterdir())  # the upload was not left behind
    finally:
        target.stop()


def test_backup_needs_an_admin(catalog, tmp_path):
    with Imagineer(catalog=catalog.address, token="wrong-token") as anonymous:
        with pytest.raises(ImagineerError) as error:
            anonymous.backup(tmp_path / "x.tar")
    assert error.value.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert not (tmp_path / "x.tar").exists()


def test_images_delete_says_what_it_deleted(catalog, capsys, client):
    doomed = [client.upload_image(png_bytes(24, 16, seed=seed), f"doomed{seed}.png") for seed in (301, 302)]
    ids = [image.id for image in doomed]
    assert run_json(catalog, capsys, "images", "delete", *ids) == {"deleted": ids}
    for image_id in ids:
        with pytest.raises(ImagineerError) as caught:
            client.get_image(image_id)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND

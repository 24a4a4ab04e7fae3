"""The content-addressed store: keys, atomic publish, crash clean-up."""

from __future__ import annotations

import hashlib

import pytest

from imagineer_catalog.blobstore import BlobStore, key_for
from imagineer_common.errors import InvalidArgument


def test_stage_and_publish_store_bytes_under_their_hash(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = b"hello imagineer" * 1000
    staged = store.stage([data[:100], data[100:]], max_bytes=1 << 20)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size_bytes == len(data)
    assert not store.exists(staged.key)  # invisible until published
    key = store.publish(staged)
    assert key == key_for(staged.sha256) and key.startswith("sha256/")
    assert b"".join(store.read_chunks(key, chunk_bytes=7)) == data
    assert not staged.temp_path.exists()


def test_publishing_the_same_bytes_twice_keeps_one_file(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    first = store.publish(store.stage_bytes(b"same"))
    second_staged = store.stage_bytes(b"same")
    assert store.publish(second_staged) == first
    assert list(store.keys()) == [first]
    assert not second_staged.temp_path.exists()


def test_oversized_upload_is_refused_and_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(InvalidArgument) as caught:
        store.stage([b"x" * 10, b"y" * 10], max_bytes=15)
    assert caught.value.violations[0].field == "chunk_data"
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_a_failing_source_leaves_no_temporary_file(tmp_path):
    store = BlobStore(tmp_path / "blobs")

    def broken():
        yield b"part"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.stage(broken(), max_bytes=100)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_sweep_removes_only_unreferenced_files_and_temporaries(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    kept = store.publish(store.stage_bytes(b"kept"))
    orphan = store.publish(store.stage_bytes(b"orphan"))
    (tmp_path / "blobs" / "tmp" / "upload-crashed").write_bytes(b"half")
    assert store.clear_temporary() == 1
    assert store.sweep_unreferenced({kept}) == 1
    assert store.exists(kept) and not store.exists(orphan)


@pytest.mark.parametrize("bad", ["/etc/passwd", "sha256/../../x", "other/ab/cd/ef"])
def test_paths_outside_the_store_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        BlobStore(tmp_path / "blobs").path(bad)

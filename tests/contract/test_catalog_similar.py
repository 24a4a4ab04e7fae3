"""Contract: every stored image has a perceptual hash, and FindSimilarImages finds the same picture across the
whole catalog, by hash distance or by exact bytes."""

from __future__ import annotations

import hashlib
import io

import grpc
from harness.catalog_client import upload_image
from harness.concurrency import expect_error
from harness.images import picture, picture_bytes
from PIL import Image

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer_common.grpc_errors import field_violations
from imagineer_common.perceptual import distance, perceptual_hash


def _find(stub, admin, **fields) -> list[tuple[str, int]]:
    reply = stub.FindSimilarImages(api.FindSimilarImagesRequest(**fields), metadata=admin, timeout=10)
    return [(match.image.id, match.distance) for match in reply.matches]


def _resized_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    picture(120, 90, seed).resize((100, 75)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_upload_records_the_perceptual_hash_of_the_picture(stub, admin):
    data = picture_bytes(120, 90, seed=7001)
    image = upload_image(stub, data, admin, filename="waves.png").image
    assert image.perceptual_hash == perceptual_hash(Image.open(io.BytesIO(data)))
    assert len(image.perceptual_hash) == 16


def test_near_duplicates_are_found_across_the_catalog_closest_first(stub, admin):
    original = upload_image(stub, picture_bytes(120, 90, seed=7002), admin, filename="orig.png").image
    copy = upload_image(stub, _resized_jpeg(7002), admin, filename="copy.jpg").image
    other = upload_image(stub, picture_bytes(120, 90, seed=7003), admin, filename="other.png").image
    gap = distance(copy.perceptual_hash, original.perceptual_hash)
    assert gap <= 3 and distance(other.perceptual_hash, original.perceptual_hash) > 10

    found = _find(stub, admin, perceptual_hash=original.perceptual_hash, max_distance=8)
    assert found[0] == (original.id, 0)
    assert (copy.id, gap) in found
    assert [bits for _, bits in found] == sorted(bits for _, bits in found)
    assert other.id not in {image_id for image_id, _ in found}
    assert _find(stub, admin, perceptual_hash=original.perceptual_hash, max_distance=0)[0] == (original.id, 0)
    # Upper case is accepted; an unknown picture finds nothing.
    assert _find(stub, admin, perceptual_hash=original.perceptual_hash.upper(), max_distance=0)[0][0] == original.id
    lonely = perceptual_hash(picture(64, 64, seed=7999))
    assert all(distance(lonely, h) > 2 for h in (original.perceptual_hash, copy.perceptual_hash))
    assert _find(stub, admin, perceptual_hash=lonely, max_distance=2) == []


def test_exact_bytes_are_found_by_sha256(stub, admin):
    data = picture_bytes(80, 80, seed=7004, fmt="WEBP")
    image = upload_image(stub, data, admin, filename="exact.webp").image
    assert _find(stub, admin, sha256=hashlib.sha256(data).hexdigest()) == [(image.id, 0)]
    assert _find(stub, admin, sha256="0" * 64) == []


def test_page_size_limits_the_matches(stub, admin):
    base = upload_image(stub, picture_bytes(120, 90, seed=7005), admin, filename="base.png").image
    upload_image(stub, _resized_jpeg(7005), admin, filename="base-copy.jpg")
    assert len(_find(stub, admin, perceptual_hash=base.perceptual_hash, max_distance=16, page_size=1)) == 1


def test_bad_requests_name_the_field(stub, admin):
    cases = [({}, "perceptual_hash"), ({"perceptual_hash": "xyz"}, "perceptual_hash"),
             ({"perceptual_hash": "0" * 15}, "perceptual_hash"), ({"sha256": "abc"}, "sha256"),
             ({"perceptual_hash": "0" * 16, "max_distance": -1}, "max_distance"),
             ({"perceptual_hash": "0" * 16, "max_distance": 17}, "max_distance"),
             ({"perceptual_hash": "0" * 16, "page_size": -1}, "page_size")]
    for fields, field in cases:
        error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.FindSimilarImages,
                             api.FindSimilarImagesRequest(**fields), metadata=admin, timeout=10)
        assert field in field_violations(error), (fields, error.details())


def test_only_admins_may_search(stub):
    expect_error(grpc.StatusCode.UNAUTHENTICATED, stub.FindSimilarImages,
                 api.FindSimilarImagesRequest(perceptual_hash="0" * 16), timeout=10)


def test_the_image_with_the_very_bytes_comes_first(stub, admin):
    """A re-encoded copy with the same hash stored earlier does not hide the image with the asked-for bytes."""
    older = upload_image(stub, _resized_jpeg(7006), admin, filename="older-copy.jpg").image
    data = picture_bytes(120, 90, seed=7006)
    exact = upload_image(stub, data, admin, filename="exact-later.png").image
    found = _find(stub, admin, sha256=hashlib.sha256(data).hexdigest(), perceptual_hash=exact.perceptual_hash,
                  max_distance=8)
    assert found[0] == (exact.id, 0)
    assert (older.id, distance(older.perceptual_hash, exact.perceptual_hash)) in found

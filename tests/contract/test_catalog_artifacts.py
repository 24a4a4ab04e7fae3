"""Contract: artifact upload, read, list, download and delete."""

from __future__ import annotations

import hashlib
import random
import uuid

import grpc
import pytest
from harness.catalog_client import artifact_requests, download_artifact, download_image, upload_image
from harness.images import png_bytes

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_common.grpc_errors import error_reason, field_violations

LORA, CHECKPOINT, OTHER = res.ARTIFACT_KIND_LORA, res.ARTIFACT_KIND_CHECKPOINT, res.ARTIFACT_KIND_OTHER
MiB = 1024 * 1024


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(stub, admin, data: bytes, chunk: int = 64 * 1024, **metadata) -> api.UploadArtifactResponse:
    metadata.setdefault("name", unique("weights"))
    metadata.setdefault("kind", LORA)
    metadata.setdefault("filename", "pytorch_lora_weights.safetensors")
    return stub.UploadArtifact(artifact_requests(data, chunk=chunk, **metadata), metadata=admin)


def make_run(stub, admin) -> res.TrainingRun:
    return stub.CreateTrainingRun(api.CreateTrainingRunRequest(training_run=res.TrainingRun(name=unique("run"))),
                                  metadata=admin)


def all_artifacts(stub, admin, **filters) -> list[res.Artifact]:
    found: list[res.Artifact] = []
    token = ""
    while True:
        page = stub.ListArtifacts(api.ListArtifactsRequest(page_size=500, page_token=token, **filters),
                                  metadata=admin)
        found.extend(page.artifacts)
        token = page.next_page_token
        if not token:
            return found


def expect_error(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return caught.value


# Upload


def test_upload_lora_records_everything(stub, admin):
    run = make_run(stub, admin)
    data = random_bytes(50_000, seed=30100)
    reply = upload(stub, admin, data, name="  ink-style  ", kind=LORA, filename="ink_style.safetensors",
                   base_model="imagineer/tiny-sd", rank=16, training_run_id=run.id,
                   metadata={"steps": "500", "final_loss": "0.0123", "note": "ünïcode ✓"})
    artifact = reply.artifact
    assert not reply.already_existed
    assert artifact.id
    assert artifact.name == "ink-style"
    assert artifact.kind == LORA
    assert artifact.filename == "ink_style.safetensors"
    assert artifact.base_model == "imagineer/tiny-sd"
    assert artifact.rank == 16
    assert artifact.training_run_id == run.id
    assert dict(artifact.metadata) == {"steps": "500", "final_loss": "0.0123", "note": "ünïcode ✓"}
    assert artifact.size_bytes == len(data)
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert artifact.HasField("create_time")

    assert stub.GetArtifact(api.GetArtifactRequest(id=artifact.id), metadata=admin) == artifact


def test_upload_without_optional_fields(stub, admin):
    data = random_bytes(1000, seed=30101)
    artifact = upload(stub, admin, data, kind=OTHER, filename="notes.bin").artifact
    assert artifact.kind == OTHER
    assert artifact.base_model == "" and artifact.rank == 0 and artifact.training_run_id == ""
    assert dict(artifact.metadata) == {}


@pytest.mark.parametrize("chunk", [MiB, 300_001])
def test_chunked_upload_of_several_megabytes(stub, admin, chunk):
    data = random_bytes(3 * MiB + 12_345, seed=30102 + chunk)
    digest = hashlib.sha256(data).hexdigest()
    artifact = upload(stub, admin, data, chunk=chunk, kind=CHECKPOINT, filename="checkpoint-1000.bin",
                      expected_size_bytes=len(data), expected_sha256=digest.upper()).artifact
    assert artifact.size_bytes == len(data)
    assert artifact.sha256 == digest

    messages = list(stub.DownloadArtifact(api.DownloadArtifactRequest(id=artifact.id), metadata=admin))
    assert messages[0].WhichOneof("payload") == "info"
    assert all(m.WhichOneof("payload") == "chunk_data" for m in messages[1:])
    info = messages[0].info
    assert info.size_bytes == len(data) and info.sha256 == digest and info.filename == "checkpoint-1000.bin"
    assert info.content_type
    body = b"".join(m.chunk_data for m in messages[1:])
    assert body == data


def test_same_bytes_and_kind_twice_give_the_same_artifact(stub, admin):
    data = random_bytes(20_000, seed=30103)
    first = upload(stub, admin, data, name="first-name", kind=LORA)
    second = upload(stub, admin, data, name="second-name", kind=LORA, filename="other.safetensors",
                    metadata={"x": "y"})
    assert not first.already_existed
    assert second.already_existed
    assert second.artifact.id == first.artifact.id
    assert second.artifact == first.artifact  # the first record is returned unchanged
    assert [a.id for a in all_artifacts(stub, admin) if a.sha256 == first.artifact.sha256] == [first.artifact.id]


def test_same_bytes_of_another_kind_are_a_new_artifact_sharing_the_file(stub, admin):
    data = random_bytes(20_000, seed=30104)
    lora = upload(stub, admin, data, kind=LORA).artifact
    other = upload(stub, admin, data, kind=OTHER)
    assert not other.already_existed
    assert other.artifact.id != lora.id and other.artifact.sha256 == lora.sha256
    stub.DeleteArtifact(api.DeleteArtifactRequest(id=lora.id), metadata=admin)
    _, body = download_artifact(stub, other.artifact.id, admin)
    assert body == data  # the shared file stays while something refers to it


def test_two_runs_with_identical_weights_each_own_an_artifact(stub, admin):
    """Training is deterministic: two runs can produce the same bytes, and each run's artifact names it."""
    data = random_bytes(20_000, seed=30106)
    first_run, second_run = make_run(stub, admin), make_run(stub, admin)
    first = upload(stub, admin, data, training_run_id=first_run.id)
    second = upload(stub, admin, data, training_run_id=second_run.id)
    assert not first.already_existed and not second.already_existed
    assert first.artifact.id != second.artifact.id
    assert (first.artifact.training_run_id, second.artifact.training_run_id) == (first_run.id, second_run.id)

    retried = upload(stub, admin, data, training_run_id=second_run.id)
    assert retried.already_existed and retried.artifact == second.artifact, "a retry of one run's upload"
    assert [a.id for a in all_artifacts(stub, admin, training_run_id=second_run.id)] == [second.artifact.id]

    stub.DeleteArtifact(api.DeleteArtifactRequest(id=first.artifact.id), metadata=admin)
    _, body = download_artifact(stub, second.artifact.id, admin)
    assert body == data, "the shared file stays while the other run's artifact refers to it"


def test_artifact_and_image_with_the_same_bytes_share_the_file_safely(stub, admin):
    data = png_bytes(seed=30105)
    image = upload_image(stub, data, admin, filename="shared.png").image
    artifact = upload(stub, admin, data, kind=OTHER, filename="shared.png").artifact
    assert artifact.sha256 == image.sha256
    stub.DeleteArtifact(api.DeleteArtifactRequest(id=artifact.id), metadata=admin)
    _, body = download_image(stub, image.id, admin)
    assert body == data
    # And the other way round: deleting the image leaves a new artifact's file in place.
    artifact = upload(stub, admin, data, kind=OTHER, filename="shared.png").artifact
    stub.DeleteImage(api.DeleteImageRequest(id=image.id), metadata=admin)
    _, body = download_artifact(stub, artifact.id, admin)
    assert body == data


def _count(stub, admin) -> int:
    return len(all_artifacts(stub, admin))


@pytest.mark.parametrize("make_requests, field", [
    (lambda d: iter([api.UploadArtifactRequest(chunk_data=d)]), "metadata"),
    (lambda d: iter([]), "metadata"),
    (lambda d: artifact_requests(d, name="x", filename="w.safetensors"), "metadata.kind"),
    (lambda d: artifact_requests(d, name="x", kind=99, filename="w.safetensors"), "metadata.kind"),
    (lambda d: artifact_requests(d, name="", kind=LORA, filename="w.safetensors"), "metadata.name"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename=""), "metadata.filename"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="loras/w.safetensors"), "metadata.filename"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="..\\w.safetensors"), "metadata.filename"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="w.bin", rank=-1), "metadata.rank"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="w.bin",
                                 metadata={f"k{n}": "v" for n in range(65)}), "metadata.metadata"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="w.bin", training_run_id="run-1"),
     "metadata.training_run_id"),
    (lambda d: artifact_requests(b"", name="x", kind=LORA, filename="w.bin"), "chunk_data"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="w.bin", expected_sha256="0" * 64),
     "metadata.expected_sha256"),
    (lambda d: artifact_requests(d, name="x", kind=LORA, filename="w.bin", expected_size_bytes=len(d) + 1),
     "metadata.expected_size_bytes"),
    (lambda d: iter([*artifact_requests(d, name="x", kind=LORA, filename="w.bin"),
                     api.UploadArtifactRequest(metadata=api.ArtifactUploadMetadata(name="again"))]), "metadata"),
], ids=["chunk-first", "empty-stream", "no-kind", "unknown-kind", "no-name", "no-filename", "slash", "backslash",
        "negative-rank", "too-much-metadata", "bad-run-id", "no-bytes", "sha-mismatch", "size-mismatch",
        "metadata-twice"])
def test_bad_uploads_are_invalid_argument_and_store_nothing(stub, admin, make_requests, field):
    data = random_bytes(4096, seed=30106)
    before = _count(stub, admin)
    error = expect_error(lambda: stub.UploadArtifact(make_requests(data), metadata=admin),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)
    assert _count(stub, admin) == before
    # Nothing half-written either: the same bytes upload afterwards as new.
    reply = upload(stub, admin, data, kind=CHECKPOINT, name=unique("after-failure"))
    assert not reply.already_existed
    stub.DeleteArtifact(api.DeleteArtifactRequest(id=reply.artifact.id), metadata=admin)


def test_sha256_mismatch_leaves_no_trace(stub, admin):
    data = random_bytes(10_000, seed=30107)
    before = _count(stub, admin)
    error = expect_error(lambda: upload(stub, admin, data, expected_sha256=hashlib.sha256(b"other").hexdigest()),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert "metadata.expected_sha256" in field_violations(error)
    assert _count(stub, admin) == before
    reply = upload(stub, admin, data, expected_sha256=hashlib.sha256(data).hexdigest())
    assert not reply.already_existed
    _, body = download_artifact(stub, reply.artifact.id, admin)
    assert body == data


def test_upload_for_unknown_training_run_is_not_found(stub, admin):
    before = _count(stub, admin)
    error = expect_error(lambda: upload(stub, admin, random_bytes(100, seed=30108), training_run_id="99999999"),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "TRAINING_RUN_NOT_FOUND"
    assert _count(stub, admin) == before


# Get, list


def test_get_unknown_artifact_is_not_found(stub, admin):
    error = expect_error(lambda: stub.GetArtifact(api.GetArtifactRequest(id="98765432"), metadata=admin),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ARTIFACT_NOT_FOUND"


@pytest.mark.parametrize("bad_id", ["", "abc", "0", "1.5"])
def test_get_artifact_with_bad_id_is_invalid_argument(stub, admin, bad_id):
    error = expect_error(lambda: stub.GetArtifact(api.GetArtifactRequest(id=bad_id), metadata=admin),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error) == ["id"]


def test_list_filters_by_kind_run_and_base_model(stub, admin):
    run = make_run(stub, admin)
    other_run = make_run(stub, admin)
    model = unique("base")
    lora = upload(stub, admin, random_bytes(3000, seed=30110), kind=LORA, training_run_id=run.id,
                  base_model=model).artifact
    checkpoint = upload(stub, admin, random_bytes(3000, seed=30111), kind=CHECKPOINT, training_run_id=run.id,
                        base_model=model).artifact
    elsewhere = upload(stub, admin, random_bytes(3000, seed=30112), kind=LORA, training_run_id=other_run.id,
                       base_model=unique("base")).artifact
    mine = {lora.id, checkpoint.id, elsewhere.id}

    assert [a.id for a in all_artifacts(stub, admin, training_run_id=run.id)] == [checkpoint.id, lora.id]
    assert [a.id for a in all_artifacts(stub, admin, base_model=model)] == [checkpoint.id, lora.id]
    assert [a.id for a in all_artifacts(stub, admin, training_run_id=run.id, kind=LORA)] == [lora.id]
    assert [a.id for a in all_artifacts(stub, admin, base_model=model, kind=OTHER)] == []
    assert [a.id for a in all_artifacts(stub, admin, training_run_id=other_run.id)] == [elsewhere.id]

    loras = all_artifacts(stub, admin, kind=LORA)
    assert all(a.kind == LORA for a in loras)
    assert {lora.id, elsewhere.id} <= {a.id for a in loras} and checkpoint.id not in {a.id for a in loras}
    everything = [a.id for a in all_artifacts(stub, admin) if a.id in mine]
    assert everything == [elsewhere.id, checkpoint.id, lora.id]  # newest first
    assert all_artifacts(stub, admin, training_run_id="99999999") == []


def test_list_pages_cover_everything_once(stub, admin):
    created = [upload(stub, admin, random_bytes(500, seed=30120 + n), kind=OTHER).artifact.id for n in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListArtifacts(api.ListArtifactsRequest(page_size=2, page_token=token), metadata=admin)
        assert len(page.artifacts) <= 2
        seen.extend(a.id for a in page.artifacts)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in created] == list(reversed(created))


@pytest.mark.parametrize("request_fields, field", [
    ({"page_size": -1}, "page_size"),
    ({"page_token": "garbage!"}, "page_token"),
    ({"training_run_id": "run-1"}, "training_run_id"),
    ({"kind": 42}, "kind"),
])
def test_list_rejects_bad_arguments(stub, admin, request_fields, field):
    error = expect_error(lambda: stub.ListArtifacts(api.ListArtifactsRequest(**request_fields), metadata=admin),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)


def test_list_refuses_a_token_of_other_filters(stub, admin):
    for n in range(2):
        upload(stub, admin, random_bytes(500, seed=30130 + n), kind=CHECKPOINT)
    page = stub.ListArtifacts(api.ListArtifactsRequest(page_size=1, kind=CHECKPOINT), metadata=admin)
    assert page.next_page_token
    error = expect_error(lambda: stub.ListArtifacts(api.ListArtifactsRequest(
        page_size=1, page_token=page.next_page_token, kind=LORA), metadata=admin), grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_token" in field_violations(error)


# Download, delete


def test_download_streams_info_then_identical_bytes(stub, admin):
    data = random_bytes(2 * MiB + 7, seed=30140)
    artifact = upload(stub, admin, data, filename="weights.safetensors").artifact
    info, body = download_artifact(stub, artifact.id, admin)
    assert body == data
    assert info.filename == "weights.safetensors"
    assert info.size_bytes == len(data) and info.sha256 == artifact.sha256


def test_download_unknown_artifact_is_not_found(stub, admin):
    error = expect_error(lambda: download_artifact(stub, "98765432", admin), grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ARTIFACT_NOT_FOUND"


def test_delete_then_get_download_and_delete_are_not_found(stub, admin):
    data = random_bytes(5000, seed=30150)
    artifact = upload(stub, admin, data).artifact
    stub.DeleteArtifact(api.DeleteArtifactRequest(id=artifact.id), metadata=admin)
    for call in (lambda: stub.GetArtifact(api.GetArtifactRequest(id=artifact.id), metadata=admin),
                 lambda: download_artifact(stub, artifact.id, admin),
                 lambda: stub.DeleteArtifact(api.DeleteArtifactRequest(id=artifact.id), metadata=admin)):
        error = expect_error(call, grpc.StatusCode.NOT_FOUND)
        assert error_reason(error) == "ARTIFACT_NOT_FOUND"
    assert artifact.id not in {a.id for a in all_artifacts(stub, admin)}
    # The same bytes can be stored again afterwards, as a new artifact with its file.
    again = upload(stub, admin, data)
    assert not again.already_existed
    _, body = download_artifact(stub, again.artifact.id, admin)
    assert body == data


def test_ids_of_deleted_artifacts_are_not_reused(stub, admin):
    """Other services keep artifact ids (TrainingRun.artifact_id, LoraWeight.artifact_id in generation records):
    after a delete, an old id must answer NOT_FOUND, never name a different file."""
    doomed = upload(stub, admin, random_bytes(700, seed=30151), name="doomed-lora").artifact
    stub.DeleteArtifact(api.DeleteArtifactRequest(id=doomed.id), metadata=admin)
    newcomer = upload(stub, admin, random_bytes(700, seed=30152), name="unrelated-lora").artifact
    assert newcomer.id != doomed.id
    error = expect_error(lambda: stub.GetArtifact(api.GetArtifactRequest(id=doomed.id), metadata=admin),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ARTIFACT_NOT_FOUND"


def test_delete_with_bad_id_is_invalid_argument(stub, admin):
    error = expect_error(lambda: stub.DeleteArtifact(api.DeleteArtifactRequest(id=""), metadata=admin),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error) == ["id"]


# Authentication


@pytest.mark.parametrize("call", [
    lambda s: s.UploadArtifact(artifact_requests(b"anonymous", name="x", kind=LORA, filename="w.bin")),
    lambda s: s.GetArtifact(api.GetArtifactRequest(id="1")),
    lambda s: s.ListArtifacts(api.ListArtifactsRequest()),
    lambda s: list(s.DownloadArtifact(api.DownloadArtifactRequest(id="1"))),
    lambda s: s.DeleteArtifact(api.DeleteArtifactRequest(id="1")),
], ids=["UploadArtifact", "GetArtifact", "ListArtifacts", "DownloadArtifact", "DeleteArtifact"])
def test_artifact_methods_need_admin(stub, call):
    error = expect_error(lambda: call(stub), grpc.StatusCode.UNAUTHENTICATED)
    assert error_reason(error) == "ADMIN_TOKEN_REQUIRED"


def test_anonymous_cannot_read_or_delete_an_existing_artifact(stub, admin):
    data = random_bytes(800, seed=30160)
    artifact = upload(stub, admin, data).artifact
    for call in (lambda: stub.GetArtifact(api.GetArtifactRequest(id=artifact.id)),
                 lambda: download_artifact(stub, artifact.id),
                 lambda: stub.DeleteArtifact(api.DeleteArtifactRequest(id=artifact.id)),
                 lambda: download_artifact(stub, artifact.id, (("authorization", "Bearer wrong"),))):
        expect_error(call, grpc.StatusCode.UNAUTHENTICATED)
    _, body = download_artifact(stub, artifact.id, admin)
    assert body == data

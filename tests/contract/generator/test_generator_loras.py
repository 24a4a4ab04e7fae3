"""Contract: LoRA adapters from catalog artifacts, applied by the generator per job.

The LoRA files are real adapters for the demo model (rank 4 on the attention projections, random but seeded
weights), built once per session in a subprocess by ``build_fixtures.py``; see ``lora_artifact_bytes``.
"""

from __future__ import annotations

import hashlib
import io
import json

import grpc
import pytest
from PIL import Image

from imagineer.catalog.v1 import catalog_service_pb2 as cat_api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as api

COMPLETED, FAILED = common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_FAILED
PROMPT = "a red fox in a forest"
LONG = {"steps": 150, "width": 128, "height": 128}


@pytest.fixture(scope="module", autouse=True)
def artifacts(cat, lora_artifact_bytes) -> dict[str, res.Artifact]:
    """The LoRA files uploaded to the module's catalog (before its generator starts: autouse fixtures come first)."""
    uploaded = {name: cat.upload_artifact(data, f"lora-{name}") for name, data in lora_artifact_bytes.items()
                if name != "not_lora"}
    uploaded["not_lora"] = cat.upload_artifact(lora_artifact_bytes["not_lora"], "notes",
                                               kind=res.ARTIFACT_KIND_OTHER, filename="notes.json")
    return uploaded


def lora(artifact: res.Artifact, weight: float = 1.0) -> api.LoraSpec:
    return api.LoraSpec(artifact_id=artifact.id, weight=weight)


def cache_dir(gen):
    return gen.service.log_path.parent / "generator" / "lora-cache"


@pytest.fixture(scope="module")
def base(gen, cat) -> bytes:
    """The reference image, without any LoRA (seed 1, 4 steps)."""
    job = gen.complete(PROMPT, seed=1)
    return cat.job_bytes(job)[0]


def image_of(gen, cat, *loras: api.LoraSpec, seed: int = 1, **kwargs) -> bytes:
    job = gen.complete(PROMPT, seed=seed, loras=list(loras), **kwargs)
    return cat.job_bytes(job)[0]


def test_a_lora_changes_the_image_and_switching_it_off_restores_the_original(gen, cat, artifacts, base):
    with_lora = image_of(gen, cat, lora(artifacts["a"]))
    assert with_lora != base
    assert image_of(gen, cat) == base, "the adapter is switched off cleanly"
    assert image_of(gen, cat, lora(artifacts["a"])) == with_lora, "and on again"


def test_the_job_and_the_catalog_record_the_lora(gen, cat, artifacts):
    job = gen.start(PROMPT, seed=11, loras=[api.LoraSpec(artifact_id=artifacts["a"].id)])
    assert [(spec.artifact_id, spec.weight) for spec in job.loras] == [(artifacts["a"].id, 1.0)], "0 means 1.0"
    final = gen.finish(job.id)
    assert final.state == COMPLETED, final.error_message
    record = cat.image(final.images[0].image_id).generation
    assert [(entry.artifact_id, entry.name, entry.weight) for entry in record.loras] == [
        (artifacts["a"].id, "lora-a", 1.0)]
    with Image.open(io.BytesIO(cat.image_bytes(final.images[0].image_id))) as image:
        text = dict(image.text)
    assert text["parameters"].split("\n")[0] == f"{PROMPT} <lora:lora-a:1>"
    assert json.loads(text["imagineer"])["loras"] == [
        {"artifact_id": artifacts["a"].id, "name": "lora-a", "weight": 1.0}]
    config = dict(cat.album(final.album_id).generation_config)
    assert [dict(entry) for entry in config["loras"]] == [{"artifact_id": artifacts["a"].id, "weight": 1.0}]


def test_the_weight_scales_the_adapter(gen, cat, artifacts, base):
    full = image_of(gen, cat, lora(artifacts["a"], 1.0))
    half = image_of(gen, cat, lora(artifacts["a"], 0.5))
    negative = image_of(gen, cat, lora(artifacts["a"], -1.0))
    assert len({base, full, half, negative}) == 4
    assert image_of(gen, cat, lora(artifacts["a"], 1.0)) == full, "weights do not linger from job to job"


def test_two_loras_at_once(gen, cat, artifacts, base):
    only_a = image_of(gen, cat, lora(artifacts["a"]))
    only_b = image_of(gen, cat, lora(artifacts["b"]))
    both = image_of(gen, cat, lora(artifacts["a"]), lora(artifacts["b"], 0.8))
    assert len({base, only_a, only_b, both}) == 4
    assert image_of(gen, cat, lora(artifacts["a"])) == only_a, "the second adapter is off again"
    assert image_of(gen, cat, lora(artifacts["b"])) == only_b
    assert image_of(gen, cat) == base


def test_an_incompatible_lora_fails_its_job_without_poisoning_later_ones(gen, cat, artifacts, base):
    with_a = image_of(gen, cat, lora(artifacts["a"]))
    bad = artifacts["incompatible"]
    job = gen.start(PROMPT, seed=1, loras=[lora(bad)])
    events = gen.events(job.id)
    final = events[-1].job
    assert final.state == FAILED
    assert events[-1].finished.state == FAILED and events[-1].finished.reason == final.error_message
    assert bad.id in final.error_message and "cannot be applied" in final.error_message, final.error_message
    assert final.images_done == 0
    assert cat.album(final.album_id).image_count == 0

    assert image_of(gen, cat) == base, "the next job without LoRA gives the original bytes"
    assert image_of(gen, cat, lora(artifacts["a"])) == with_a, "and a good LoRA still works as before"

    mixed = gen.start(PROMPT, seed=1, loras=[lora(artifacts["b"]), lora(bad)])
    assert gen.finish(mixed.id).state == FAILED
    assert image_of(gen, cat) == base
    assert image_of(gen, cat, lora(artifacts["a"])) == with_a


def test_a_lora_artifact_that_is_not_a_safetensors_file_fails_its_job(gen, cat, artifacts, base):
    job = gen.start(PROMPT, seed=1, loras=[lora(artifacts["garbage"])])
    final = gen.finish(job.id)
    assert final.state == FAILED
    assert artifacts["garbage"].id in final.error_message
    assert image_of(gen, cat) == base


def test_a_non_lora_artifact_is_refused_at_start(gen, artifacts):
    with pytest.raises(grpc.RpcError) as caught:
        gen.start(PROMPT, seed=1, loras=[lora(artifacts["not_lora"])])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_each_lora_file_is_downloaded_once_into_the_cache(gen, cat, artifacts):
    image_of(gen, cat, lora(artifacts["b"]), seed=21)
    folder = cache_dir(gen)
    cached = folder / f"{artifacts['b'].sha256}.safetensors"
    assert cached.is_file()
    first = cached.stat()
    image_of(gen, cat, lora(artifacts["b"]), seed=22)
    image_of(gen, cat, lora(artifacts["a"]), lora(artifacts["b"]), seed=23)
    again = cached.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns), "not downloaded again"

    files = sorted(path.name for path in folder.iterdir())
    uploaded = {artifact.sha256: artifact for artifact in artifacts.values()}
    assert all(name.endswith(".safetensors") and name.removesuffix(".safetensors") in uploaded for name in files), (
        f"only verified weights, named by their hash, no leftovers: {files}")
    assert len(files) == len(set(files))
    for name in files:
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == name.removesuffix(".safetensors")
    assert {f"{artifacts['a'].sha256}.safetensors", f"{artifacts['b'].sha256}.safetensors"} <= set(files)


@pytest.mark.slow
def test_jobs_with_different_loras_never_share_a_batch(gen, cat, artifacts, base):
    blocker = gen.start("a blocker", seed=90, **LONG)
    gen.wait_for(blocker.id, "step")
    plain = gen.start(PROMPT, seed=1)
    with_a = gen.start(PROMPT, seed=1, loras=[lora(artifacts["a"])])
    with_b = gen.start(PROMPT, seed=1, loras=[lora(artifacts["b"])])
    gen.cancel(blocker.id)
    results = {}
    for name, job in (("plain", plain), ("a", with_a), ("b", with_b)):
        events = gen.events(job.id)
        assert events[-1].job.state == COMPLETED, events[-1].job.error_message
        assert {event.step.batch_size for event in events if event.HasField("step")} == {1}, name
        results[name] = cat.job_bytes(events[-1].job)[0]
    assert results["plain"] == base
    assert results["a"] == image_of(gen, cat, lora(artifacts["a"]))
    assert results["b"] == image_of(gen, cat, lora(artifacts["b"]))
    assert len(set(results.values())) == 3


@pytest.mark.slow
def test_jobs_with_the_same_lora_share_a_batch_with_the_same_bytes_as_alone(gen, cat, artifacts):
    blocker = gen.start("a blocker", seed=91, **LONG)
    gen.wait_for(blocker.id, "step")
    jobs = [gen.start(f"a {animal} in a forest", seed=31, loras=[lora(artifacts["a"], 0.7)])
            for animal in ("fox", "owl", "cat")]
    gen.cancel(blocker.id)
    batched = []
    for job in jobs:
        events = gen.events(job.id)
        assert events[-1].job.state == COMPLETED, events[-1].job.error_message
        assert {event.step.batch_size for event in events if event.HasField("step")} == {3}
        batched.append(cat.job_bytes(events[-1].job)[0])
    for animal, data in zip(("fox", "owl", "cat"), batched, strict=True):
        alone = gen.complete(f"a {animal} in a forest", seed=31, loras=[lora(artifacts["a"], 0.7)])
        assert cat.job_bytes(alone)[0] == data


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.tobytes()


def test_a_lora_uploaded_again_under_a_new_id_still_applies(gen, cat, artifacts, base, lora_artifact_bytes):
    """The same weights deleted and uploaded again are a new artifact; the generator already holds them."""
    old = artifacts["c"]
    first = image_of(gen, cat, lora(old), seed=41)
    cat.stub.DeleteArtifact(cat_api.DeleteArtifactRequest(id=old.id), metadata=cat.metadata)
    new = cat.upload_artifact(lora_artifact_bytes["c"], "lora-c-again")
    assert new.id != old.id and new.sha256 == old.sha256

    with pytest.raises(grpc.RpcError) as caught:
        gen.start(PROMPT, seed=41, loras=[lora(old)])
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, "the deleted artifact is gone"

    job = gen.start(PROMPT, seed=41, loras=[lora(new)])
    final = gen.finish(job.id)
    assert final.state == COMPLETED, final.error_message
    assert pixels(cat.job_bytes(final)[0]) == pixels(first), "the same weights, the same pixels"
    assert image_of(gen, cat, lora(new), seed=41) != base

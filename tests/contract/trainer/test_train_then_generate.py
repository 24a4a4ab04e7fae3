"""End to end: train a LoRA on the demo model from a catalog album, then hand the artifact to a generator, which
renders with it. The generator starts only once the training has finished (torch must not run in two processes at
once on this CPU) and loads the same prebuilt demo model folder as the trainer.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from harness.processes import ADMIN_METADATA, ServiceProcess, generator_process

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as gen_api
from imagineer.generator.v1 import generator_service_pb2_grpc

pytestmark = pytest.mark.slow

COMPLETED = common_pb2.JOB_STATE_COMPLETED
PROMPT = "a photo of a small cat"


@pytest.fixture(scope="module")
def trained(trn, cat, album) -> res.Artifact:
    """A LoRA trained on the module album: 30 steps at a learning rate high enough to change the images."""
    final, _ = trn.complete(album.id, steps=30, rank=4, learning_rate=1e-3, seed=5, checkpoint_interval=30,
                            name="e2e LoRA")
    assert final.artifact_id
    return cat.artifact(final.artifact_id)


@pytest.fixture(scope="module")
def generator(trained, tmp_path_factory, catalog, demo_model_dir) -> Iterator[ServiceProcess]:
    """A generator on the same catalog and demo model, started after the training ended (``trained`` comes first)."""
    service = generator_process(tmp_path_factory.mktemp("generator"), catalog.address,
                                IMAGINEER_GENERATOR_MODEL=str(demo_model_dir)).start(timeout=120)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def generator_stub(generator) -> Iterator[generator_service_pb2_grpc.GeneratorServiceStub]:
    with grpc.insecure_channel(generator.address) as channel:
        yield generator_service_pb2_grpc.GeneratorServiceStub(channel)


def render(stub, generator: ServiceProcess, cat, *loras: gen_api.LoraSpec) -> tuple[gen_api.GenerationJob, bytes]:
    """One 64x64 image of PROMPT with seed 1 and 4 steps (the given LoRAs applied): the job and the PNG's bytes."""
    parameters = common_pb2.GenerationParameters(prompt=PROMPT, seed=1, steps=4, width=64, height=64)
    job = stub.StartGeneration(gen_api.StartGenerationRequest(parameters=parameters, loras=list(loras)),
                               metadata=ADMIN_METADATA, timeout=30)
    events = list(stub.WatchGeneration(gen_api.WatchGenerationRequest(id=job.id), metadata=ADMIN_METADATA,
                                       timeout=120))
    final = events[-1].job
    assert final.state == COMPLETED, f"{final.error_message}\n{generator.logs()[-3000:]}"
    assert len(final.images) == 1
    return final, cat.image_bytes(final.images[0].image_id)


def test_a_trained_lora_changes_the_generated_image(trained, generator_stub, generator, cat):
    assert trained.kind == res.ARTIFACT_KIND_LORA and trained.base_model == "imagineer/tiny-sd"
    _, base = render(generator_stub, generator, cat)
    job, with_lora = render(generator_stub, generator, cat, gen_api.LoraSpec(artifact_id=trained.id, weight=1.0))
    assert with_lora != base, "the trained adapter changes what the model renders"
    record = cat.image(job.images[0].image_id).generation
    assert [(entry.artifact_id, entry.name) for entry in record.loras] == [(trained.id, "e2e LoRA")]
    _, again = render(generator_stub, generator, cat)
    assert again == base, "without the adapter the model renders exactly what it did before"
    _, half = render(generator_stub, generator, cat, gen_api.LoraSpec(artifact_id=trained.id, weight=0.5))
    assert half not in (base, with_lora), "the weight scales the adapter"

"""Killing each service in turn in the middle of work, and starting it again: nothing is lost, nothing is stuck.

Every kill is a SIGKILL (no clean shutdown). After the restart, each job either finishes with all of its work in
the catalog or ends with a reason, and the platform takes new work.
"""

from __future__ import annotations

import grpc
import pytest
from harness.waiting import wait_for

from imagineer.catalog.v1 import catalog_service_pb2 as catalog_api
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as generator_api

pytestmark = pytest.mark.slow

COMPLETED, FAILED = common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_FAILED
ENDED = (COMPLETED, FAILED, common_pb2.JOB_STATE_CANCELLED, common_pb2.JOB_STATE_INTERRUPTED)


def job_of(client, job_id: str) -> generator_api.GenerationJob:
    return client.generator.GetGeneration(generator_api.GetGenerationRequest(id=job_id), metadata=client.metadata)


def catalog_run(client, run_id: str):
    return client.catalog.GetTrainingRun(catalog_api.GetTrainingRunRequest(id=run_id), metadata=client.metadata)


def training_album(client, count: int = 4) -> str:
    """An album of generated, captioned images to train on."""
    job = client.generate_and_wait("a small round pebble", images=count, steps=4, seed=5)
    assert job.state == COMPLETED, job.error_message
    for image in job.images:
        client.add_label(image.image_id, "a pebble, studio photo")
    return job.album_id


def test_catalog_killed_while_a_batch_renders_the_batch_still_lands_whole(fresh_platform):
    platform = fresh_platform
    with platform.client() as client:
        job = client.generate("a lighthouse in fog", images=12, steps=10, seed=40)
        wait_for(lambda: job_of(client, job.id).images_done >= 2, "two stored images")
        platform.catalog.kill()
        platform.catalog.start()  # same port, same data folder
        final = wait_for(lambda: (lambda j: j if j.state in ENDED else None)(job_of(client, job.id)),
                         "the job to end", timeout=300)
        assert final.state == COMPLETED, final.error_message
        assert final.images_done == 12 and all(image.image_id for image in final.images)
        members = client.album_images(final.album_id)
        assert [m.image.id for m in members] == [image.image_id for image in final.images]  # no gap, no duplicate
        seeds = [client.get_image(m.image.id).generation.seed for m in members]
        assert seeds == list(range(40, 52))


def test_generator_killed_mid_job_keeps_the_stored_images_and_fails_the_job_with_a_reason(fresh_platform):
    platform = fresh_platform
    with platform.client() as client:
        job = client.generate("a field of sunflowers", images=16, steps=10, seed=3)
        wait_for(lambda: job_of(client, job.id).images_done >= 2, "two stored images")
        platform.generator.kill()
        platform.generator.start(timeout=180)
        final = job_of(client, job.id)
        assert final.state == FAILED and "restart" in final.error_message.lower(), final.error_message
        stored = [m.image.id for m in client.album_images(final.album_id)]
        assert len(stored) >= 2, "images stored before the kill are kept"
        assert [image.image_id for image in final.images if image.image_id] == stored
        again = client.generate_and_wait("a field of sunflowers", images=1, steps=4, seed=99)
        assert again.state == COMPLETED, again.error_message


def test_trainer_killed_mid_training_resumes_and_the_catalog_agrees(fresh_platform):
    platform = fresh_platform
    with platform.client() as client:
        album_id = training_album(client)
        training = client.train([album_id], steps=60, rank=4, batch_size=2, resolution=64, seed=11,
                                checkpoint_interval=10)
        wait_for(lambda: client.get_training(training.id).current_step >= 15, "step 15", timeout=300)
        platform.trainer.kill()
        platform.trainer.start(timeout=180)
        final = wait_for(lambda: (lambda t: t if t.state in ENDED else None)(client.get_training(training.id)),
                         "the training to end", timeout=600, interval=0.5)
        assert final.state == COMPLETED, final.error_message
        run = catalog_run(client, training.id)
        assert run.state == COMPLETED and run.current_step == 60 and run.artifact_id == final.artifact_id


def test_catalog_killed_mid_training_the_result_is_still_recorded(fresh_platform):
    platform = fresh_platform
    with platform.client() as client:
        album_id = training_album(client)
        training = client.train([album_id], steps=80, rank=4, batch_size=2, resolution=64, seed=12,
                                checkpoint_interval=40)
        wait_for(lambda: client.get_training(training.id).current_step >= 5, "step 5", timeout=300)
        platform.catalog.kill()
        # The trainer keeps training while the catalog is away (progress reports are best effort).
        with pytest.raises(grpc.RpcError):
            catalog_run(client, training.id)
        platform.catalog.start()
        final = wait_for(lambda: (lambda t: t if t.state in ENDED else None)(client.get_training(training.id)),
                         "the training to end", timeout=600, interval=0.5)
        assert final.state == COMPLETED, final.error_message
        run = wait_for(lambda: (lambda r: r if r.state == COMPLETED else None)(catalog_run(client, training.id)),
                       "the catalog to record the end", timeout=60)
        assert run.artifact_id == final.artifact_id and run.current_step == 80
        artifact = client.catalog.GetArtifact(catalog_api.GetArtifactRequest(id=final.artifact_id),
                                              metadata=client.metadata)
        assert artifact.training_run_id == training.id


def test_every_service_restarted_cleanly_serves_again(fresh_platform):
    platform = fresh_platform
    for service in platform.services():
        assert service.stop() == 0, f"{service.name} did not exit cleanly:\n{service.logs()[-3000:]}"
        service.start(timeout=180)
    with platform.client() as client:
        job = client.generate_and_wait("after a full restart", images=1, steps=4, seed=1)
        assert job.state == COMPLETED, job.error_message
        assert client.get_image(job.images[0].image_id).generation.prompt == "after a full restart"

"""Contract: a training survives its trainer. A crash (SIGKILL) or a shutdown (SIGTERM) mid-run leaves the catalog's
training run unfinished; the next trainer on the same data dir resumes it from its last checkpoint, under the same id,
and (the loop draws every random number from the run's seed and the step) ends with exactly the loss an uninterrupted
run reaches. Runs the trainer cannot resume are marked FAILED with the reason.

Every test starts trainers of its own (one at a time: never two busy at once) against the module's catalog, and
leaves no unfinished run in the catalog behind (the next test's trainer would resume it).
"""

from __future__ import annotations

import json
import struct
import threading

import grpc
import pytest
from google.protobuf import struct_pb2

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2

pytestmark = pytest.mark.slow

QUEUED, RUNNING = common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING
COMPLETED, FAILED = common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_FAILED
CANCELLED, INTERRUPTED = common_pb2.JOB_STATE_CANCELLED, common_pb2.JOB_STATE_INTERRUPTED
UNFINISHED = (common_pb2.JOB_STATE_PENDING, QUEUED, RUNNING, INTERRUPTED)
# The run that is interrupted and resumed, and done once without interruption for reference (about 3 s of training).
SETTINGS = {"steps": 60, "checkpoint_interval": 10, "seed": 4242, "rank": 4, "learning_rate": 1e-3}
LONG_STEPS = 2000


def event_kind(event) -> str:
    return event.WhichOneof("event")


def state_name(value: int) -> str:
    return common_pb2.JobState.Name(value)


def ended(run) -> bool:
    """Whether a catalog record shows the end (which may lag a moment behind the trainer's finished event)."""
    return run.state in (COMPLETED, FAILED, CANCELLED)


def step_losses(events) -> dict[int, float]:
    return {event.step.step: event.step.loss for event in events if event_kind(event) == "step"}


def assert_taken_on(cat, run_id: str) -> None:
    """The restarted trainer took the run on again (it recovers runs before it reports SERVING)."""
    run = cat.training_run(run_id)
    assert run.state in (QUEUED, RUNNING, COMPLETED), (
        f"the restarted trainer gave run {run_id} up: {state_name(run.state)}: {run.error_message}")


def follow(trainer, training_id: str) -> tuple[list, threading.Thread]:
    """Watches a training in a background thread; returns once the stream is open (its first event arrived). The
    list collects the events, and the error if the stream fails."""
    received: list = []
    connected = threading.Event()

    def read() -> None:
        try:
            for event in trainer.watch(training_id, timeout=60):
                received.append(event)
                connected.set()
        except grpc.RpcError as error:
            received.append(error)
        finally:
            connected.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert connected.wait(10), "the watch stream did not open"
    return received, thread


def lora_tensors(data: bytes) -> tuple[dict, bytes]:
    """The tensors of a safetensors file: their header entries and their bytes (without the free-form metadata, which
    holds peft's config with its target modules in set order, different in every process)."""
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    return header, data[8 + size:]


def started_events(events):
    return [event for event in events if event_kind(event) == "started"]


@pytest.fixture(autouse=True)
def _no_unfinished_runs_left(cat):
    """After each test (and after its trainers stopped), ends any run it left unfinished in the catalog."""
    yield
    for run in cat.training_runs(UNFINISHED):
        cat.set_run_state(run.id, CANCELLED)


@pytest.fixture(scope="module")
def reference(module_trainers, album, cat):
    """The run done without interruption: (its catalog record, its artifact, its events)."""
    trainer = module_trainers()
    final, events = trainer.complete(album.id, **SETTINGS)
    trainer.service.stop()
    run = cat.wait_for_run(final.id, ended)
    assert run.state == COMPLETED and run.HasField("training_loss")
    return run, cat.artifact(run.artifact_id), events


def test_a_crashed_trainer_resumes_the_run_from_its_last_checkpoint_bit_exact(trainers, tmp_path, album, cat,
                                                                               reference):
    reference_run, reference_artifact, reference_events = reference
    data_dir = tmp_path / "trainer"
    first = trainers(data_dir)
    training = first.start(album.id, **SETTINGS)
    first.wait_for(training.id, lambda e: event_kind(e) == "checkpoint" and e.checkpoint.step >= 20)
    first.service.kill()
    assert cat.training_run(training.id).state == RUNNING, "nobody could say it stopped"

    second = trainers(data_dir)
    assert_taken_on(cat, training.id)
    assert second.get(training.id).id == training.id, "the new trainer knows the run"
    events = second.events(training.id)
    assert event_kind(events[0]) == "queued"
    (started,) = started_events(events)
    from_step = started.started.from_step
    assert from_step >= 20 and from_step % 10 == 0, f"resumed from step {from_step}, not from a checkpoint"
    assert [e.step.step for e in events if event_kind(e) == "step"] == list(range(from_step + 1, 61))
    first_step = next(e.step for e in events if event_kind(e) == "step")
    assert first_step.elapsed_seconds > 0, "elapsed time counts the work before the crash"

    final = events[-1].training
    assert events[-1].finished.state == COMPLETED, f"{state_name(final.state)}: {final.error_message}"
    assert final.id == training.id and final.current_step == 60 and final.artifact_id

    run = cat.wait_for_run(training.id, ended)
    assert run.state == COMPLETED and run.current_step == 60 and run.artifact_id == final.artifact_id
    assert run.training_loss == pytest.approx(reference_run.training_loss, abs=1e-6), (
        "the resumed run computes what the uninterrupted one did")
    resumed, uninterrupted = step_losses(events), step_losses(reference_events)
    assert all(resumed[step] == uninterrupted[step] for step in resumed), "every resumed step is bit-exact"
    assert cat.artifact(run.artifact_id).training_run_id == training.id
    assert lora_tensors(cat.artifact_bytes(run.artifact_id)) == lora_tensors(
        cat.artifact_bytes(reference_artifact.id)), "the same LoRA weights, bit for bit"


def test_shutdown_interrupts_the_run_and_a_restart_completes_it(trainers, tmp_path, album, cat, reference):
    reference_run, reference_artifact, _ = reference
    data_dir = tmp_path / "trainer"
    first = trainers(data_dir)
    training = first.start(album.id, **SETTINGS)
    first.wait_for_step(training.id, 15)
    watched, watcher = follow(first, training.id)
    assert first.service.stop() == 0, "a graceful shutdown"
    watcher.join(30)

    run = cat.training_run(training.id)
    assert run.state == INTERRUPTED, state_name(run.state)
    assert run.error_message, "the record says why"
    assert 15 <= run.current_step < 60, "its progress up to the shutdown is recorded"
    assert not isinstance(watched[-1], grpc.RpcError) and event_kind(watched[-1]) == "finished", (
        f"a watcher learns of the shutdown; it got {watched[-1]!r}")
    assert watched[-1].finished.state == INTERRUPTED and watched[-1].finished.reason
    assert watched[-2].checkpoint.step == run.current_step, "it checkpoints where it stopped"

    second = trainers(data_dir)
    assert_taken_on(cat, training.id)
    events = second.events(training.id)
    (started,) = started_events(events)
    assert started.started.from_step == run.current_step, "no work is lost on a graceful shutdown"
    final = events[-1].training
    assert final.state == COMPLETED, f"{state_name(final.state)}: {final.error_message}"
    run = cat.wait_for_run(training.id, ended)
    assert run.state == COMPLETED and not run.error_message
    assert run.training_loss == pytest.approx(reference_run.training_loss, abs=1e-6)
    assert lora_tensors(cat.artifact_bytes(run.artifact_id)) == lora_tensors(
        cat.artifact_bytes(reference_artifact.id)), "the same LoRA weights, bit for bit"


def test_runs_the_trainer_cannot_resume_are_marked_failed_with_a_reason(trainers, cat, album):
    config = struct_pb2.Struct()
    config.update({"note": "recorded by another tool", "epochs": 3})
    foreign = [cat.create_training_run(res.TrainingRun(name=f"foreign {state_name(state)}", album_ids=[album.id],
                                                       config=config, total_steps=100, state=state))
               for state in (RUNNING, INTERRUPTED)]
    trainer = trainers()
    for record in foreign:
        run = cat.training_run(record.id)
        assert run.state == FAILED, (record.name, state_name(run.state))
        assert "resume" in run.error_message, run.error_message
    error = None
    try:
        trainer.get(foreign[0].id)
    except grpc.RpcError as caught:
        error = caught
    assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND, "it is not taken on"


def test_a_large_seed_survives_a_restart(trainers, tmp_path, album, cat):
    """Seeds may be anything from 0 to 2^63-1; a resumed run must train with the seed it was started with (the
    checkpoint records it), even one a double cannot hold exactly."""
    seed = 2**53 + 1
    data_dir = tmp_path / "trainer"
    first = trainers(data_dir)
    training = first.start(album.id, steps=30, checkpoint_interval=10, seed=seed)
    assert training.request.seed == seed
    first.wait_for(training.id, lambda e: event_kind(e) == "checkpoint" and e.checkpoint.step >= 10)
    first.service.stop()

    second = trainers(data_dir)
    assert_taken_on(cat, training.id)
    assert second.get(training.id).request.seed == seed, "the resumed run lost its seed"
    final = second.finish(training.id)
    assert final.state == COMPLETED, f"{state_name(final.state)}: {final.error_message}"


def test_shutdown_marks_waiting_trainings_interrupted_in_the_catalog_too(trainers, album, cat):
    """The trainer tells its watchers that a waiting training was interrupted by the shutdown; the catalog record
    (which "the trainer keeps current, so a user sees the same state from either service") must say so too."""
    trainer = trainers()
    running = trainer.start(album.id, steps=LONG_STEPS, seed=71)
    waiting = trainer.start(album.id, steps=5, seed=72)
    trainer.wait_for_step(running.id, 2)
    watched, watcher = follow(trainer, waiting.id)
    trainer.service.stop()
    watcher.join(30)
    assert not isinstance(watched[-1], grpc.RpcError) and event_kind(watched[-1]) == "finished", (
        f"a watcher learns of the shutdown; it got {watched[-1]!r}")
    assert watched[-1].finished.state == INTERRUPTED, "the trainer's own view"
    assert cat.training_run(running.id).state == INTERRUPTED
    run = cat.training_run(waiting.id)
    assert run.state == INTERRUPTED, (
        f"the catalog says {state_name(run.state)} while the trainer said INTERRUPTED ({run.error_message!r})")


def test_a_retried_start_after_a_restart_returns_the_first_training(trainers, tmp_path, album, cat):
    """request_id makes StartTraining idempotent: a client that retries after the trainer restarted gets the first
    training back (completed, with its artifact), and nothing is trained or recorded again."""
    data_dir = tmp_path / "trainer"
    first = trainers(data_dir)
    final, _ = first.complete(album.id, steps=3, seed=81, request_id="survives-a-restart")
    first.service.stop()
    runs_before = cat.training_run_count()

    second = trainers(data_dir)
    again = second.start(album.id, steps=3, seed=81, request_id="survives-a-restart")
    assert again.id == final.id
    assert cat.training_run_count() == runs_before
    settled = second.finish(again.id, timeout=60) if again.state not in (COMPLETED, FAILED, CANCELLED) else again
    assert cat.training_run(final.id).state == COMPLETED, "the catalog keeps the first outcome"
    assert (state_name(again.state), again.artifact_id) == ("JOB_STATE_COMPLETED", final.artifact_id), (
        f"the retry answered a new {state_name(again.state)} training under the same id, which then ended "
        f"{state_name(settled.state)} ({settled.error_message})")

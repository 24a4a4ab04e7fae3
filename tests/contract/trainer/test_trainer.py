"""Contract: the trainer service (StartTraining, GetTraining, ListTrainings, CancelTraining, WatchTraining), its
trainings' events, and what it records in the catalog (training runs, LoRA artifacts, validation images), driven
through the stubs.

Trainings are small (demo model, 64 px, batch 2, 1 to 30 steps: at most a couple of seconds of training); "long"
trainings (2000 steps) are always cancelled.
"""

from __future__ import annotations

import io
import math
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from harness.processes import ADMIN_METADATA
from PIL import Image

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import trainer_service_pb2 as api
from imagineer_common.grpc_errors import error_reason, field_violations

DEMO_MODEL_NAME = "imagineer/tiny-sd"
QUEUED, RUNNING = common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING
COMPLETED, CANCELLED = common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_CANCELLED
LONG_STEPS = 2000  # minutes of work: always cancelled

UNKNOWN_ID = "987654321"

# The lifecycle training the event and catalog tests look at: 12 steps, a checkpoint every 5, two validation prompts.
LIFECYCLE = {"steps": 12, "checkpoint_interval": 5, "rank": 4, "learning_rate": 1e-3, "seed": 7,
             "validation_prompts": ["a small cat", "a red fox in a forest"], "name": "lifecycle LoRA"}


def event_kind(event: api.WatchTrainingResponse) -> str:
    return event.WhichOneof("event")


def kinds(events) -> list[str]:
    return [event_kind(event) for event in events]


def state_name(value: int) -> str:
    return common_pb2.JobState.Name(value)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a server stream fails on its first read
            next(result)
    return caught.value


def training_request(album_ids, **fields) -> api.StartTrainingRequest:
    """A request with the tests' quick settings (batch 2, 64 px)."""
    album_ids = [album_ids] if isinstance(album_ids, str) else album_ids
    return api.StartTrainingRequest(album_ids=album_ids, **{"batch_size": 2, "resolution": 64, **fields})


def step_events(events):
    return [event for event in events if event_kind(event) == "step"]


@pytest.fixture(scope="module")
def lifecycle(trn, album):
    """The lifecycle training, watched from its start by two clients at once; (final training, their events)."""
    training = trn.start(album.id, **LIFECYCLE)
    with ThreadPoolExecutor(2) as pool:
        streams = list(pool.map(lambda _: trn.events(training.id), range(2)))
    assert streams[0] == streams[1], "watchers at the same time see the same stream"
    events = streams[0]
    assert events and event_kind(events[-1]) == "finished", kinds(events)
    final = events[-1].training
    assert final.state == COMPLETED, f"{state_name(final.state)}: {final.error_message}\n{trn.log_tail()}"
    return final, events


# --- StartTraining ---------------------------------------------------------------------------------------------------

def test_start_returns_the_queued_training_at_once_with_defaults_applied(trn, cat, album):
    began = time.monotonic()
    training = trn.start(album.id, steps=3)
    took = time.monotonic() - began
    assert took < 5, f"StartTraining took {took:.1f} s: it must not wait for the training"
    assert training.id and training.state == QUEUED, state_name(training.state)
    assert training.total_steps == 3 and training.current_step == 0
    assert training.HasField("create_time") and not training.HasField("end_time")
    request = training.request
    assert list(request.album_ids) == [album.id]
    assert request.name == f"LoRA from album {album.id}", "the default name comes from the album"
    assert request.base_model == DEMO_MODEL_NAME
    assert (request.rank, request.alpha) == (8, 8.0)
    assert request.learning_rate == pytest.approx(1e-4)
    assert request.lr_scheduler == "constant"
    assert (request.steps, request.batch_size, request.resolution) == (3, 2, 64)
    assert request.checkpoint_interval == 3, "the default interval (50) is capped at the run's length"
    assert request.HasField("seed"), "a random seed is chosen and reported"
    assert 0 <= request.seed < 2**63

    run = cat.training_run(training.id)
    assert run.id == training.id, "the training is the catalog's training run"
    assert run.name == request.name and list(run.album_ids) == [album.id] and run.total_steps == 3
    assert run.state in (QUEUED, RUNNING, COMPLETED), state_name(run.state)
    config = dict(run.config)
    assert int(config["seed"]) == request.seed, "the catalog records the seed, so a restart resumes the same run"
    assert config["steps"] == 3 and config["rank"] == 8

    final = trn.finish(training.id)
    assert final.state == COMPLETED, final.error_message
    assert final.request == request, "the request stays as accepted"
    assert trn.get(training.id).request.seed == request.seed


def test_explicit_settings_are_kept(trn, album):
    training = trn.start(album.id, steps=2, rank=16, alpha=4, learning_rate=5e-4, lr_scheduler="cosine",
                         warmup_steps=1, seed=123, name="  named run  ", checkpoint_interval=1,
                         base_model=DEMO_MODEL_NAME, random_crop=True, caption_source=api.CAPTION_SOURCE_LABELS)
    request = training.request
    assert (request.rank, request.alpha, request.lr_scheduler, request.warmup_steps) == (16, 4.0, "cosine", 1)
    assert request.learning_rate == pytest.approx(5e-4)
    assert request.seed == 123 and request.name == "named run" and request.checkpoint_interval == 1
    assert request.random_crop and request.caption_source == api.CAPTION_SOURCE_LABELS
    final = trn.finish(training.id)
    assert final.state == COMPLETED, final.error_message


def test_the_catalog_records_any_valid_seed_exactly(trn, cat, album):
    """The run's record in the catalog is what a restarted trainer resumes from, so it must hold the seed exactly,
    including seeds a double cannot represent (the API allows 0 to 2^63-1)."""
    seed = 2**53 + 1
    training = trn.start(album.id, steps=1, seed=seed)
    assert training.request.seed == seed
    trn.finish(training.id)
    recorded = dict(cat.training_run(training.id).config)["seed"]
    assert int(recorded) == seed, f"the catalog holds seed {recorded!r} for a run started with seed {seed}"


INVALID = [
    ({"rank": 500}, "rank"),
    ({"rank": -1}, "rank"),
    ({"steps": -1}, "steps"),
    ({"steps": 100_001}, "steps"),
    ({"resolution": 100}, "resolution"),
    ({"resolution": 32}, "resolution"),
    ({"batch_size": 65}, "batch_size"),
    ({"learning_rate": 2.0}, "learning_rate"),
    ({"learning_rate": -1e-4}, "learning_rate"),
    ({"lr_scheduler": "wavy"}, "lr_scheduler"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"base_model": "someone/else-sd"}, "base_model"),
    ({"album_ids": ["not-an-id"]}, "album_ids[0]"),
    ({"album_ids": []}, "album_ids"),
    ({"album_ids": [str(n) for n in range(1, 18)]}, "album_ids"),
    ({"album_ids": ["ALBUM", "ALBUM"]}, "album_ids"),
    ({"seed": -1}, "seed"),
    ({"caption_source": 9}, "caption_source"),
    ({"checkpoint_interval": -5}, "checkpoint_interval"),
    ({"validation_prompts": ["   "]}, "validation_prompts[0]"),
    ({"validation_prompts": [f"prompt {n}" for n in range(9)]}, "validation_prompts"),
    ({"name": "n" * 256}, "name"),
]


@pytest.mark.parametrize("fields, field", INVALID, ids=[f"{field}-{n}" for n, (_, field) in enumerate(INVALID)])
def test_invalid_requests_are_invalid_argument_naming_the_field(trn, cat, album, fields, field):
    runs_before, trainings_before = cat.training_run_count(), trn.count()
    fields = {"album_ids": [album.id], "steps": 2, **fields}
    fields["album_ids"] = [album.id if value == "ALBUM" else value for value in fields["album_ids"]]
    error = rpc_error(trn.start, request=training_request(**fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in field_violations(error), (field_violations(error), error.details())
    assert cat.training_run_count() == runs_before, "nothing is recorded in the catalog"
    assert trn.count() == trainings_before, "nothing is queued"


def test_every_violation_is_reported_at_once(trn, album):
    error = rpc_error(trn.start, album.id, rank=500, steps=-1, resolution=100, lr_scheduler="wavy",
                      base_model="someone/else-sd")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"rank", "steps", "resolution", "lr_scheduler", "base_model"} <= set(field_violations(error))


def test_unknown_album_is_not_found(trn, cat, album):
    runs_before = cat.training_run_count()
    error = rpc_error(trn.start, [album.id, UNKNOWN_ID], steps=2)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert error_reason(error) == "ALBUM_NOT_FOUND"
    assert UNKNOWN_ID in error.details()
    assert cat.training_run_count() == runs_before


def test_an_empty_album_is_failed_precondition(trn, cat):
    empty = cat.create_album("nothing in here")
    runs_before, trainings_before = cat.training_run_count(), trn.count()
    error = rpc_error(trn.start, empty.id, steps=2)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert error_reason(error) == "NO_USABLE_IMAGES"
    assert cat.training_run_count() == runs_before and trn.count() == trainings_before


def test_images_without_captions_are_not_usable(trn, cat):
    prompts_only = cat.training_album(3, captions=False, prompts=True, name="prompts, no labels")
    bare = cat.training_album(2, captions=False, prompts=False, name="no captions at all")
    for image_id in cat.album_image_ids(bare.id):  # ratings and notes never become captions
        cat.label(image_id, "5 stars", res.LABEL_TYPE_USER)
        cat.label(image_id, "safe", res.LABEL_TYPE_AI_GENERATED)
    runs_before = cat.training_run_count()
    for album_id, source in ((prompts_only.id, api.CAPTION_SOURCE_LABELS), (bare.id, api.CAPTION_SOURCE_UNSPECIFIED),
                             (bare.id, api.CAPTION_SOURCE_PROMPT)):
        error = rpc_error(trn.start, album_id, steps=2, caption_source=source)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (source, error.details())
        assert error_reason(error) == "NO_USABLE_IMAGES"
    assert cat.training_run_count() == runs_before


def test_caption_source_chooses_the_images(trn, cat):
    """Two captioned images, one tagged, three with only a generation prompt: each source uses its own."""
    mixed = cat.create_album("mixed captions")
    for n in range(2):
        cat.label(cat.upload(mixed.id).id, f"a caption {n}")
    cat.label(cat.upload(mixed.id).id, "golden hour", res.LABEL_TYPE_TAG)
    for n in range(3):
        cat.upload(mixed.id, prompt=f"a generated fox {n}")
    expected = {api.CAPTION_SOURCE_UNSPECIFIED: 6, api.CAPTION_SOURCE_LABELS: 3, api.CAPTION_SOURCE_PROMPT: 3}
    for source, count in expected.items():
        final, _ = trn.complete(mixed.id, steps=2, seed=5, caption_source=source)
        assert final.image_count == count, api.CaptionSource.Name(source)


def test_prompt_captions_and_a_trigger_word(trn, cat):
    generated = cat.training_album(3, captions=False, prompts=True, name="generated foxes")
    plain, plain_events = trn.complete(generated.id, steps=2, seed=11, caption_source=api.CAPTION_SOURCE_PROMPT)
    triggered, events = trn.complete(generated.id, steps=2, seed=11, caption_source=api.CAPTION_SOURCE_PROMPT,
                                     trigger_word="  sks style ")
    assert triggered.request.trigger_word == "sks style"
    assert triggered.image_count == plain.image_count == 3
    artifact = cat.artifact(triggered.artifact_id)
    assert artifact.metadata["trigger_word"] == "sks style"
    assert step_events(events)[0].step.loss != step_events(plain_events)[0].step.loss, (
        "the trigger word is part of every caption, so the same seed trains on other text embeddings")


# --- a completed training and the catalog ----------------------------------------------------------------------------

def test_the_catalog_run_is_completed_with_the_final_numbers(lifecycle, cat):
    final, events = lifecycle
    last_loss = step_events(events)[-1].step.loss
    run = cat.wait_for_run(final.id, lambda r: r.state == COMPLETED, timeout=5)
    assert run.state == COMPLETED, state_name(run.state)
    assert run.current_step == run.total_steps == 12
    assert run.progress_percent == pytest.approx(100.0)
    # The catalog keeps the loss the trainer reports (the moving average), during the run and at its end.
    assert run.HasField("training_loss") and run.training_loss == pytest.approx(final.loss, abs=1e-9)
    assert last_loss > 0
    assert run.artifact_id == final.artifact_id != ""
    assert not run.error_message
    assert run.HasField("start_time") and run.HasField("end_time")
    assert run.name == "lifecycle LoRA"


def test_the_catalog_agrees_as_soon_as_a_watcher_sees_the_end(trn, cat, album):
    """A client told by WatchTraining that a training ended reads the same end from the catalog ("a user sees the
    same state from either service"). The trainer must record the end in the catalog before it tells watchers;
    this reads the record the moment the finished event arrives, for ten short trainings (a race: with the end
    announced first, most runs of this test see at least one RUNNING record)."""
    disagreements = []
    for n in range(10):
        training = trn.start(album.id, steps=1, seed=900 + n)
        finished = trn.wait_for(training.id, lambda e: event_kind(e) == "finished")
        run = cat.training_run(training.id)
        if run.state != finished.finished.state:
            disagreements.append((training.id, state_name(finished.finished.state), state_name(run.state)))
    assert disagreements == [], "(training, trainer says, catalog says) right after the finished event"


def test_the_artifact_is_a_lora_linked_to_its_run(lifecycle, cat):
    final, events = lifecycle
    artifact = cat.artifact(final.artifact_id)
    assert artifact.kind == res.ARTIFACT_KIND_LORA
    assert artifact.name == "lifecycle LoRA"
    assert artifact.filename == "pytorch_lora_weights.safetensors"
    assert artifact.base_model == DEMO_MODEL_NAME and artifact.rank == 4
    assert artifact.training_run_id == final.id
    assert artifact.metadata["steps"] == "12"
    assert float(artifact.metadata["final_loss"]) == pytest.approx(step_events(events)[-1].step.loss, abs=1e-6)
    assert artifact.size_bytes > 0
    data = cat.artifact_bytes(artifact.id)
    assert len(data) == artifact.size_bytes and data[8:9] == b"{", "a safetensors file (JSON header)"
    assert [a.id for a in cat.artifacts_of_run(final.id)] == [artifact.id], "one artifact per run"


def test_the_training_reports_its_final_state(lifecycle, trn, album):
    final, _ = lifecycle
    assert trn.get(final.id) == final
    assert final.current_step == final.total_steps == 12
    assert final.image_count == 4
    assert final.HasField("start_time") and final.HasField("end_time")
    assert final.end_time.ToNanoseconds() >= final.start_time.ToNanoseconds() >= final.create_time.ToNanoseconds()
    assert not final.error_message
    assert list(final.request.album_ids) == [album.id] and final.request.seed == 7


def test_training_loss_is_the_moving_average_the_api_promises(lifecycle):
    """Training.loss is documented as "the last training loss (a moving average)"; the step events carry each
    step's own loss. With 12 steps, the average (window 20 in the loop) spans every step."""
    final, events = lifecycle
    losses = [event.step.loss for event in step_events(events)]
    assert final.loss == pytest.approx(sum(losses) / len(losses), rel=1e-9), (
        f"Training.loss {final.loss} is the last step's loss ({losses[-1]}), not a moving average "
        f"({sum(losses) / len(losses)})")


# --- WatchTraining ---------------------------------------------------------------------------------------------------

def test_watch_streams_every_event_in_order(lifecycle):
    final, events = lifecycle
    steps = [["step"] * 5, ["step"] * 5, ["step"] * 2]
    expected = ["queued", "started", *steps[0], "checkpoint", "validation", *steps[1], "checkpoint", "validation",
                *steps[2], "checkpoint", "validation", "finished"]
    assert kinds(events) == expected
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert all(event.training.id == final.id for event in events)

    queued, started = events[0], events[1]
    assert queued.queued.queue_position == 0 and queued.training.state == QUEUED
    assert started.started.from_step == 0 and started.training.state == RUNNING
    assert started.training.HasField("start_time") and started.training.image_count == 4

    steps = step_events(events)
    assert [event.step.step for event in steps] == list(range(1, 13))
    previous_elapsed = 0.0
    for event in steps:
        step = event.step
        assert step.total_steps == 12
        assert math.isfinite(step.loss) and step.loss > 0
        assert step.learning_rate == pytest.approx(1e-3), "the constant schedule"
        assert step.elapsed_seconds > 0 and step.elapsed_seconds >= previous_elapsed
        assert step.remaining_seconds >= 0
        previous_elapsed = step.elapsed_seconds
        assert event.training.current_step == step.step and event.training.state == RUNNING
    assert steps[-1].step.remaining_seconds == 0

    assert [e.checkpoint.step for e in events if event_kind(e) == "checkpoint"] == [5, 10, 12]
    validations = [e for e in events if event_kind(e) == "validation"]
    assert [e.validation.step for e in validations] == [5, 10, 12]
    assert all(len(e.validation.image_ids) == 2 for e in validations), "one image per validation prompt"

    finished = events[-1]
    assert finished.finished.state == COMPLETED and not finished.finished.reason
    assert finished.training.state == COMPLETED and finished.training.artifact_id
    assert finished.training.HasField("end_time")


def test_validation_images_are_stored_in_the_validation_album(lifecycle, cat):
    final, events = lifecycle
    assert final.validation_album_id
    image_ids = [image_id for e in events if event_kind(e) == "validation" for image_id in e.validation.image_ids]
    assert set(image_ids) <= set(cat.album_image_ids(final.validation_album_id))
    for event in (e for e in events if event_kind(e) == "validation"):
        for prompt, image_id in zip(LIFECYCLE["validation_prompts"], event.validation.image_ids, strict=True):
            image = cat.image(image_id)
            assert image.has_file and image.generation.prompt == prompt
            assert (image.generation.width, image.generation.height) == (64, 64)
            with Image.open(io.BytesIO(cat.image_bytes(image_id))) as png:
                assert png.size == (64, 64), "rendered at the training resolution"


def test_a_late_watcher_sees_the_same_events_and_can_resume(lifecycle, trn):
    final, live = lifecycle
    assert trn.events(final.id) == live, "a watcher that joins after the end gets the same events"
    assert trn.events(final.id, after_sequence=3) == live[3:]
    assert trn.events(final.id, after_sequence=len(live) - 1) == live[-1:]
    assert trn.events(final.id, after_sequence=len(live)) == []


def test_a_watcher_joining_mid_run_resumes_without_gaps(trn, album):
    training = trn.start(album.id, steps=30, seed=21)
    first = trn.wait_for_step(training.id, 1)  # a stream dropped after a step
    rest = trn.events(training.id, after_sequence=first.sequence)
    assert [event.sequence for event in rest] == list(range(first.sequence + 1, first.sequence + 1 + len(rest)))
    assert rest[-1].finished.state == COMPLETED
    assert [e.step.step for e in rest if event_kind(e) == "step"] == list(range(first.step.step + 1, 31))


def test_watch_errors(trn, album):
    error = rpc_error(trn.watch, UNKNOWN_ID)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "TRAINING_NOT_FOUND"
    assert rpc_error(trn.watch, "").code() == grpc.StatusCode.INVALID_ARGUMENT
    training = trn.start(album.id, steps=2)
    error = rpc_error(trn.watch, training.id, after_sequence=-1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in field_violations(error)
    trn.finish(training.id)


# --- CancelTraining, GetTraining -------------------------------------------------------------------------------------

def test_cancel_a_running_training_stops_it_within_a_step_or_two(trn, cat, album):
    training = trn.start(album.id, steps=LONG_STEPS, checkpoint_interval=10, seed=31)
    trn.wait_for(training.id, lambda e: event_kind(e) == "checkpoint" and e.checkpoint.step == 10)
    run = cat.wait_for_run(training.id, lambda r: r.current_step >= 10)
    assert run.state == RUNNING and run.current_step >= 10, "the catalog is kept current while it runs"
    assert run.progress_percent == pytest.approx(100 * run.current_step / LONG_STEPS, abs=0.5)
    assert run.HasField("training_loss")
    trn.wait_for_step(training.id, 13)

    began = time.monotonic()
    answer = trn.cancel(training.id)
    assert answer.id == training.id and answer.state in (RUNNING, CANCELLED)
    final = trn.finish(training.id, timeout=30)
    took = time.monotonic() - began
    assert final.state == CANCELLED, state_name(final.state)
    assert took < 3, f"the cancelled training took {took:.1f} s to stop"
    assert 13 <= final.current_step < LONG_STEPS and not final.artifact_id
    assert final.error_message
    events = trn.events(training.id)
    assert events[-1].finished.state == CANCELLED and events[-1].finished.reason == final.error_message
    assert events[-2].checkpoint.step == final.current_step, "the last checkpoint is kept"

    run = cat.wait_for_run(training.id, lambda r: r.state == CANCELLED, timeout=5)
    assert run.state == CANCELLED, state_name(run.state)
    assert run.current_step == final.current_step and not run.artifact_id and run.error_message
    assert cat.artifacts_of_run(training.id) == []


def test_cancel_a_queued_training_before_it_starts(trn, cat, album):
    running = trn.start(album.id, steps=LONG_STEPS, seed=32)
    waiting = trn.start(album.id, steps=2, seed=33)
    trn.wait_for_step(running.id, 1)
    answer = trn.cancel(waiting.id)
    assert answer.state == CANCELLED
    assert kinds(trn.events(waiting.id)) == ["queued", "finished"]
    run = cat.training_run(waiting.id)
    assert run.state == CANCELLED and not run.HasField("start_time")
    assert trn.get(running.id).state == RUNNING, "the one ahead goes on"
    trn.cancel(running.id)
    assert trn.finish(running.id).state == CANCELLED


def test_cancel_a_finished_training_is_failed_precondition(trn, album):
    final, _ = trn.complete(album.id, steps=1)
    error = rpc_error(trn.cancel, final.id)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "TRAINING_FINISHED"
    assert trn.get(final.id).state == COMPLETED


def test_get_and_cancel_unknown_trainings(trn):
    for call in (trn.get, trn.cancel):
        error = rpc_error(call, UNKNOWN_ID)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(error) == "TRAINING_NOT_FOUND"
        error = rpc_error(call, "")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id" in field_violations(error)


# --- the queue -------------------------------------------------------------------------------------------------------

def test_one_training_at_a_time_the_others_wait_in_order(trn, album):
    first = trn.start(album.id, steps=LONG_STEPS, seed=41)
    trn.wait_for_step(first.id, 1)
    second = trn.start(album.id, steps=2, seed=42)
    third = trn.start(album.id, steps=1, seed=43)
    assert (second.state, third.state) == (QUEUED, QUEUED)
    trn.wait_for_step(first.id, 5)
    assert trn.get(second.id).state == QUEUED and trn.get(third.id).state == QUEUED, "still waiting"

    trn.cancel(first.id)
    first_final = trn.finish(first.id)
    second_events = trn.events(second.id)
    third_events = trn.events(third.id)
    assert second_events[0].queued.queue_position == 1, "one training ahead"
    assert kinds(second_events)[1] == "started", "it never waits again once it is first in line"
    assert [e.queued.queue_position for e in third_events if event_kind(e) == "queued"] == [2, 1], (
        "the position moves up when the training ahead starts")
    second_final, third_final = second_events[-1].training, third_events[-1].training
    assert (second_final.state, third_final.state) == (COMPLETED, COMPLETED)
    assert second_final.start_time.ToNanoseconds() >= first_final.end_time.ToNanoseconds()
    assert third_final.start_time.ToNanoseconds() >= second_final.end_time.ToNanoseconds()


def test_a_full_queue_answers_resource_exhausted(trainers, cat, album):
    small = trainers(IMAGINEER_TRAINER_QUEUE_CAPACITY="1")  # the module's trainer is idle meanwhile
    running = small.start(album.id, steps=LONG_STEPS, seed=44)
    small.wait_for_step(running.id, 1)
    waiting = small.start(album.id, steps=1, seed=45)
    runs_before = cat.training_run_count()
    error = rpc_error(small.start, album.id, steps=1, seed=46)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert error_reason(error) == "QUEUE_FULL"
    assert cat.training_run_count() == runs_before, "a refused training is not recorded"
    assert small.get(waiting.id).state == QUEUED, "the running training does not count as waiting"
    small.cancel_all()


# --- ListTrainings ---------------------------------------------------------------------------------------------------

def test_list_trainings_newest_first_with_paging(trn, album):
    trainings = [trn.complete(album.id, steps=1, seed=50 + n)[0] for n in range(3)]
    newest = [training.id for training in reversed(trainings)]

    everything = trn.list(500)
    assert [training.id for training in everything.trainings[:3]] == newest
    assert everything.next_page_token == ""
    assert len(trn.list(0).trainings) == min(50, len(everything.trainings)), "0 means 50"
    times = [training.create_time.ToNanoseconds() for training in everything.trainings]
    assert times == sorted(times, reverse=True)
    first = trn.list(2)
    assert [training.id for training in first.trainings] == newest[:2] and first.next_page_token
    assert trn.list(2, first.next_page_token).trainings[0].id == newest[2]
    collected, token = [], ""
    while True:
        reply = trn.list(2, token)
        collected.extend(training.id for training in reply.trainings)
        token = reply.next_page_token
        if not token:
            break
    assert collected == [training.id for training in everything.trainings]
    assert trn.list(len(collected)).next_page_token == ""
    assert trn.list(500).trainings[0] == trn.get(newest[0])

    error = rpc_error(trn.list, -1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in field_violations(error)
    error = rpc_error(trn.list, 2, "not-a-token")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in field_violations(error)


# --- idempotency -----------------------------------------------------------------------------------------------------

def test_request_id_makes_start_idempotent(trn, cat, album):
    runs_before, trainings_before = cat.training_run_count(), trn.count()
    first = trn.start(album.id, steps=2, seed=60, request_id="retry-60")
    again = trn.start(album.id, steps=2, seed=60, request_id="retry-60")
    assert again.id == first.id
    trn.finish(first.id)
    after = trn.start(album.id, steps=5, seed=61, request_id="retry-60")
    assert after.id == first.id and after.state == COMPLETED, "a retry after the end still finds the training"
    assert after.request.steps == 2, "the first answer, not the retry's settings"
    assert cat.training_run_count() == runs_before + 1 and trn.count() == trainings_before + 1
    other = trn.start(album.id, steps=1, seed=62, request_id="retry-61")
    assert other.id != first.id
    trn.finish(other.id)


def test_the_longest_request_id_allowed_is_accepted(trn, cat, album):
    """request_id may be up to 128 characters (the trainer's own check); such a key is a valid request, so the
    answer is the training, not UNAVAILABLE (which would tell the client that the server is at fault)."""
    key = "k" * 128
    error = rpc_error(trn.start, album.id, steps=1, request_id=key + "x")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in field_violations(error)
    try:
        training = trn.start(album.id, steps=1, seed=63, request_id=key)
    except grpc.RpcError as failure:
        pytest.fail(f"a 128-character request_id is refused with {failure.code().name}: {failure.details()}")
    assert trn.start(album.id, steps=1, seed=63, request_id=key).id == training.id
    trn.finish(training.id)


# --- authentication --------------------------------------------------------------------------------------------------

RPCS = [
    ("StartTraining", lambda album_id: training_request(album_id, steps=1)),
    ("GetTraining", lambda _: api.GetTrainingRequest(id=UNKNOWN_ID)),
    ("ListTrainings", lambda _: api.ListTrainingsRequest()),
    ("CancelTraining", lambda _: api.CancelTrainingRequest(id=UNKNOWN_ID)),
    ("WatchTraining", lambda _: api.WatchTrainingRequest(id=UNKNOWN_ID)),
]


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong-token"),), (("authorization", "x"),)],
                         ids=["no-token", "wrong-token", "malformed"])
@pytest.mark.parametrize("method, make_request", RPCS, ids=[name for name, _ in RPCS])
def test_every_rpc_requires_the_admin_token(trn, cat, album, method, make_request, metadata):
    runs_before, trainings_before = cat.training_run_count(), trn.count()
    error = rpc_error(getattr(trn.stub, method), make_request(album.id), metadata=metadata, timeout=10)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, "permission is checked before existence"
    assert cat.training_run_count() == runs_before and trn.count() == trainings_before
    assert trn.stub.ListTrainings(api.ListTrainingsRequest(), metadata=ADMIN_METADATA, timeout=10) is not None

"""Contract: training runs and scrape jobs (create, get, list, update and their life cycle)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from harness.catalog_client import artifact_requests
from harness.images import png_bytes

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer_common.grpc_errors import error_reason, field_violations

S = common_pb2.JobState
PENDING, QUEUED, RUNNING = S.JOB_STATE_PENDING, S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING
COMPLETED, FAILED, CANCELLED = S.JOB_STATE_COMPLETED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED
INTERRUPTED = S.JOB_STATE_INTERRUPTED


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def config_struct(**values) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def make_album(stub, admin, album_type=res.ALBUM_TYPE_MANUAL) -> res.Album:
    return stub.CreateAlbum(api.CreateAlbumRequest(album=res.Album(name=unique("album"), album_type=album_type)),
                            metadata=admin)


def make_run(stub, admin, **fields) -> res.TrainingRun:
    fields.setdefault("name", unique("run"))
    return stub.CreateTrainingRun(api.CreateTrainingRunRequest(training_run=res.TrainingRun(**fields)),
                                  metadata=admin)


def update_run(stub, admin, run_id: str, paths: list[str], **fields) -> res.TrainingRun:
    return stub.UpdateTrainingRun(api.UpdateTrainingRunRequest(
        training_run=res.TrainingRun(id=run_id, **fields), update_mask=mask(*paths)), metadata=admin)


def make_job(stub, admin, **fields) -> res.ScrapeJob:
    fields.setdefault("name", unique("scrape"))
    fields.setdefault("source_url", "https://example.com/gallery")
    return stub.CreateScrapeJob(api.CreateScrapeJobRequest(scrape_job=res.ScrapeJob(**fields)), metadata=admin)


def update_job(stub, admin, job_id: str, paths: list[str], **fields) -> res.ScrapeJob:
    return stub.UpdateScrapeJob(api.UpdateScrapeJobRequest(
        scrape_job=res.ScrapeJob(id=job_id, **fields), update_mask=mask(*paths)), metadata=admin)


def upload_artifact(stub, admin, seed: int, **metadata) -> res.Artifact:
    metadata.setdefault("name", unique("weights"))
    metadata.setdefault("kind", res.ARTIFACT_KIND_LORA)
    metadata.setdefault("filename", "pytorch_lora_weights.safetensors")
    return stub.UploadArtifact(artifact_requests(png_bytes(seed=seed), **metadata), metadata=admin).artifact


def all_runs(stub, admin, states=()) -> list[res.TrainingRun]:
    runs: list[res.TrainingRun] = []
    token = ""
    while True:
        page = stub.ListTrainingRuns(api.ListTrainingRunsRequest(page_size=500, page_token=token, states=states),
                                     metadata=admin)
        runs.extend(page.training_runs)
        token = page.next_page_token
        if not token:
            return runs


def all_jobs(stub, admin, states=()) -> list[res.ScrapeJob]:
    jobs: list[res.ScrapeJob] = []
    token = ""
    while True:
        page = stub.ListScrapeJobs(api.ListScrapeJobsRequest(page_size=500, page_token=token, states=states),
                                   metadata=admin)
        jobs.extend(page.scrape_jobs)
        token = page.next_page_token
        if not token:
            return jobs


def expect_error(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return caught.value


# Training runs: create and get


def test_create_training_run_defaults_to_pending_and_keeps_config(stub, admin):
    albums = [make_album(stub, admin), make_album(stub, admin)]
    config = config_struct(base_model="imagineer/tiny-sd", rank=8, learning_rate=1e-4, steps=500,
                           resolution=[512, 512], optimizer={"name": "adamw", "betas": [0.9, 0.999]},
                           gradient_checkpointing=True, caption_column=None)
    run = make_run(stub, admin, name="  style lora  ", description="first try",
                   album_ids=[a.id for a in albums], config=config, total_steps=500)
    assert run.id
    assert run.name == "style lora"
    assert run.description == "first try"
    assert run.state == PENDING
    assert list(run.album_ids) == [a.id for a in albums]
    assert run.config == config
    assert run.total_steps == 500
    assert run.progress_percent == 0 and run.current_step == 0
    assert not run.HasField("training_loss") and not run.HasField("validation_loss")
    assert run.HasField("create_time") and run.HasField("update_time")
    assert not run.HasField("start_time") and not run.HasField("end_time")
    assert run.artifact_id == "" and run.error_message == ""

    fetched = stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin)
    assert fetched == run


def test_create_training_run_without_config_or_albums(stub, admin):
    run = make_run(stub, admin)
    assert run.state == PENDING
    assert list(run.album_ids) == []
    assert not run.config.fields


def test_create_training_run_ignores_output_fields(stub, admin):
    run = make_run(stub, admin, id="424242")
    assert run.id != "424242"
    assert run.artifact_id == ""


def test_create_training_run_keeps_the_writable_fields_it_validates(stub, admin):
    """Create checks artifact_id (unknown -> NOT_FOUND) and progress; a valid value must then be kept, not dropped."""
    artifact = upload_artifact(stub, admin, seed=30001)
    run = make_run(stub, admin, state=RUNNING, artifact_id=artifact.id, progress_percent=25.0, current_step=5,
                   total_steps=20, training_loss=0.5, error_message="resumed from checkpoint")
    assert run.state == RUNNING and run.HasField("start_time")
    assert run.total_steps == 20
    assert run.artifact_id == artifact.id
    assert run.progress_percent == pytest.approx(25.0)
    assert run.current_step == 5
    assert run.training_loss == pytest.approx(0.5)
    assert run.error_message == "resumed from checkpoint"


def test_create_training_run_in_a_terminal_state_records_its_end(stub, admin):
    run = make_run(stub, admin, state=COMPLETED)
    assert run.state == COMPLETED
    assert run.HasField("end_time")  # "when it reached a terminal state"
    expect_error(lambda: update_run(stub, admin, run.id, ["state"], state=RUNNING), grpc.StatusCode.FAILED_PRECONDITION)


def test_create_training_run_with_unknown_artifact_is_not_found(stub, admin):
    error = expect_error(lambda: make_run(stub, admin, artifact_id="99999999"), grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ARTIFACT_NOT_FOUND"


@pytest.mark.parametrize("fields, field", [
    ({"name": ""}, "training_run.name"),
    ({"name": "   "}, "training_run.name"),
    ({"name": "x" * 256}, "training_run.name"),
    ({"album_ids": ["not-an-id"]}, "training_run.album_ids[0]"),
    ({"album_ids": [""]}, "training_run.album_ids[0]"),
    ({"progress_percent": 150.0}, "training_run.progress_percent"),
    ({"total_steps": -1}, "training_run.total_steps"),
])
def test_create_training_run_rejects_bad_fields(stub, admin, fields, field):
    fields = {"name": unique("bad-run"), **fields}
    before = len(all_runs(stub, admin))
    error = expect_error(lambda: stub.CreateTrainingRun(
        api.CreateTrainingRunRequest(training_run=res.TrainingRun(**fields)), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)
    assert len(all_runs(stub, admin)) == before


def test_create_training_run_with_unknown_album_is_not_found(stub, admin):
    album = make_album(stub, admin)
    name = unique("orphan-run")
    error = expect_error(lambda: make_run(stub, admin, name=name, album_ids=[album.id, "99999999"]),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ALBUM_NOT_FOUND"
    assert name not in {r.name for r in all_runs(stub, admin)}


def test_create_training_run_retry_with_request_id_returns_the_first_run(stub, admin):
    request_id = unique("req")
    name = unique("retried-run")
    first = stub.CreateTrainingRun(api.CreateTrainingRunRequest(
        training_run=res.TrainingRun(name=name), request_id=request_id), metadata=admin)
    second = stub.CreateTrainingRun(api.CreateTrainingRunRequest(
        training_run=res.TrainingRun(name=name + "-changed"), request_id=request_id), metadata=admin)
    assert second.id == first.id
    assert second.name == name
    names = [r.name for r in all_runs(stub, admin)]
    assert names.count(name) == 1
    assert name + "-changed" not in names
    # Another key makes another run.
    third = stub.CreateTrainingRun(api.CreateTrainingRunRequest(
        training_run=res.TrainingRun(name=name), request_id=unique("req")), metadata=admin)
    assert third.id != first.id


def test_concurrent_retries_with_one_request_id_make_one_run(stub, admin):
    """Retries that overlap (a client timed out and tried again) must all get the one run, not an error."""
    for _ in range(5):
        request_id = unique("race")
        name = unique("raced-run")
        request = api.CreateTrainingRunRequest(training_run=res.TrainingRun(name=name), request_id=request_id)
        calls = [stub.CreateTrainingRun.future(request, metadata=admin) for _ in range(12)]
        codes = [call.code() for call in calls]
        assert codes == [grpc.StatusCode.OK] * len(calls)
        assert len({call.result().id for call in calls}) == 1
        assert [r.name for r in all_runs(stub, admin)].count(name) == 1


def test_request_id_longer_than_128_characters_is_invalid(stub, admin):
    error = expect_error(lambda: stub.CreateTrainingRun(api.CreateTrainingRunRequest(
        training_run=res.TrainingRun(name=unique("run")), request_id="r" * 129), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert "request_id" in field_violations(error)


def test_get_unknown_training_run_is_not_found(stub, admin):
    error = expect_error(lambda: stub.GetTrainingRun(api.GetTrainingRunRequest(id="98765432"), metadata=admin),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "TRAINING_RUN_NOT_FOUND"


@pytest.mark.parametrize("bad_id", ["", "abc", "-3", "0"])
def test_get_training_run_with_bad_id_is_invalid_argument(stub, admin, bad_id):
    error = expect_error(lambda: stub.GetTrainingRun(api.GetTrainingRunRequest(id=bad_id), metadata=admin),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error) == ["id"]


# Training runs: list


def test_list_training_runs_filters_by_state_newest_first(stub, admin):
    pending = make_run(stub, admin)
    running = make_run(stub, admin)
    update_run(stub, admin, running.id, ["state"], state=RUNNING)
    failed = make_run(stub, admin)
    update_run(stub, admin, failed.id, ["state"], state=FAILED)
    mine = {pending.id, running.id, failed.id}

    only_running = all_runs(stub, admin, states=[RUNNING])
    assert running.id in {r.id for r in only_running}
    assert all(r.state == RUNNING for r in only_running)

    two_states = [r.id for r in all_runs(stub, admin, states=[RUNNING, FAILED]) if r.id in mine]
    assert two_states == [failed.id, running.id]  # newest first

    everything = [r.id for r in all_runs(stub, admin) if r.id in mine]
    assert everything == [failed.id, running.id, pending.id]


def test_list_training_runs_pages_cover_everything_once(stub, admin):
    created = [make_run(stub, admin).id for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListTrainingRuns(api.ListTrainingRunsRequest(page_size=2, page_token=token), metadata=admin)
        assert len(page.training_runs) <= 2
        seen.extend(r.id for r in page.training_runs)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in created] == list(reversed(created))
    assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)


@pytest.mark.parametrize("request_fields, field", [
    ({"states": [S.JOB_STATE_UNSPECIFIED]}, "states"),
    ({"states": [RUNNING, S.JOB_STATE_UNSPECIFIED]}, "states"),
    ({"states": [99]}, "states"),
    ({"page_size": -1}, "page_size"),
    ({"page_token": "garbage!"}, "page_token"),
])
def test_list_training_runs_rejects_bad_arguments(stub, admin, request_fields, field):
    error = expect_error(lambda: stub.ListTrainingRuns(api.ListTrainingRunsRequest(**request_fields),
                                                       metadata=admin), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)


def test_list_training_runs_refuses_a_token_of_other_filters(stub, admin):
    for _ in range(2):
        make_run(stub, admin)
    page = stub.ListTrainingRuns(api.ListTrainingRunsRequest(page_size=1), metadata=admin)
    assert page.next_page_token
    error = expect_error(lambda: stub.ListTrainingRuns(api.ListTrainingRunsRequest(
        page_size=1, page_token=page.next_page_token, states=[FAILED]), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_token" in field_violations(error)


# Training runs: update and life cycle


def test_training_run_full_life_cycle(stub, admin):
    album = make_album(stub, admin)
    run = make_run(stub, admin, album_ids=[album.id], total_steps=100)
    assert run.state == PENDING

    queued = update_run(stub, admin, run.id, ["state"], state=QUEUED)
    assert queued.state == QUEUED
    assert not queued.HasField("start_time") and not queued.HasField("end_time")

    running = update_run(stub, admin, run.id, ["state"], state=RUNNING)
    assert running.state == RUNNING
    assert running.HasField("start_time") and not running.HasField("end_time")
    assert running.start_time.ToDatetime() >= run.create_time.ToDatetime()

    progressed = update_run(stub, admin, run.id,
                            ["progress_percent", "current_step", "training_loss", "validation_loss"],
                            progress_percent=42.5, current_step=42, training_loss=0.125, validation_loss=0.25)
    assert progressed.state == RUNNING
    assert progressed.progress_percent == pytest.approx(42.5)
    assert progressed.current_step == 42 and progressed.total_steps == 100
    assert progressed.training_loss == pytest.approx(0.125)
    assert progressed.validation_loss == pytest.approx(0.25)
    assert progressed.start_time == running.start_time
    assert progressed.update_time.ToDatetime() >= running.update_time.ToDatetime()

    later = update_run(stub, admin, run.id, ["progress_percent", "current_step", "training_loss"],
                       progress_percent=99.0, current_step=99, training_loss=0.0625)
    assert later.current_step == 99 and later.training_loss == pytest.approx(0.0625)
    assert later.validation_loss == pytest.approx(0.25)  # not in the mask, kept

    artifact = upload_artifact(stub, admin, seed=30000, training_run_id=run.id, rank=4,
                               base_model="imagineer/tiny-sd")
    completed = update_run(stub, admin, run.id, ["state", "progress_percent", "current_step", "artifact_id"],
                           state=COMPLETED, progress_percent=100.0, current_step=100, artifact_id=artifact.id)
    assert completed.state == COMPLETED
    assert completed.HasField("end_time")
    assert completed.end_time.ToDatetime() >= completed.start_time.ToDatetime()
    assert completed.start_time == running.start_time
    assert completed.artifact_id == artifact.id
    assert completed.progress_percent == 100.0 and completed.current_step == 100
    assert list(completed.album_ids) == [album.id]

    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin) == completed
    listed = stub.ListArtifacts(api.ListArtifactsRequest(training_run_id=run.id), metadata=admin)
    assert [a.id for a in listed.artifacts] == [artifact.id]


def test_update_changes_only_masked_fields(stub, admin):
    run = make_run(stub, admin, description="keep me", config=config_struct(rank=4), total_steps=10)
    changed = update_run(stub, admin, run.id, ["name", "config"], name="renamed", description="ignored",
                         config=config_struct(rank=16, alpha=32), total_steps=999)
    assert changed.name == "renamed"
    assert changed.config == config_struct(rank=16, alpha=32)
    assert changed.description == "keep me"
    assert changed.total_steps == 10
    assert changed.state == PENDING


def test_update_can_clear_optional_losses_and_error(stub, admin):
    run = make_run(stub, admin)
    update_run(stub, admin, run.id, ["state"], state=RUNNING)
    with_loss = update_run(stub, admin, run.id, ["training_loss", "error_message"], training_loss=1.5,
                           error_message="transient hiccup")
    assert with_loss.HasField("training_loss") and with_loss.error_message == "transient hiccup"
    cleared = update_run(stub, admin, run.id, ["training_loss", "error_message"])
    assert not cleared.HasField("training_loss")
    assert cleared.error_message == ""


def _advance(stub, admin, run_id: str, states) -> res.TrainingRun:
    run = None
    for state in states:
        run = update_run(stub, admin, run_id, ["state"], state=state)
    return run


@pytest.mark.parametrize("path, forbidden", [
    ([RUNNING, COMPLETED], RUNNING),
    ([FAILED], QUEUED),
    ([CANCELLED], RUNNING),
    ([RUNNING, COMPLETED], PENDING),
    ([RUNNING, FAILED], COMPLETED),
    ([], COMPLETED),
    ([], INTERRUPTED),
    ([QUEUED, RUNNING, CANCELLED], INTERRUPTED),
])
def test_forbidden_training_run_transitions_leave_the_run_unchanged(stub, admin, path, forbidden):
    run = make_run(stub, admin)
    before = _advance(stub, admin, run.id, path) or run
    error = expect_error(lambda: update_run(stub, admin, run.id, ["state", "progress_percent"], state=forbidden,
                                            progress_percent=12.0), grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(error) == "INVALID_STATE_TRANSITION"
    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin) == before


@pytest.mark.parametrize("terminal", [COMPLETED, FAILED, CANCELLED])
def test_progress_of_a_finished_run_cannot_change(stub, admin, terminal):
    run = make_run(stub, admin)
    finished = _advance(stub, admin, run.id, [RUNNING, terminal])
    assert finished.HasField("end_time")
    for paths, fields in ((["progress_percent"], {"progress_percent": 50.0}),
                          (["current_step"], {"current_step": 3}),
                          (["training_loss"], {"training_loss": 0.5}),
                          (["artifact_id"], {"artifact_id": ""})):
        error = expect_error(lambda paths=paths, fields=fields: update_run(stub, admin, run.id, paths, **fields),
                             grpc.StatusCode.FAILED_PRECONDITION)
        assert error_reason(error) == "JOB_FINISHED"
    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin) == finished
    # A finished run may still be renamed or described.
    renamed = update_run(stub, admin, run.id, ["name", "description"], name="archived", description="done")
    assert renamed.name == "archived" and renamed.description == "done"
    assert renamed.state == terminal and renamed.end_time == finished.end_time


def test_restating_the_terminal_state_does_not_reopen_progress(stub, admin):
    """Naming the (unchanged) terminal state in the mask must not get progress past the JOB_FINISHED rule."""
    run = make_run(stub, admin)
    finished = _advance(stub, admin, run.id, [RUNNING, COMPLETED])
    with pytest.raises(grpc.RpcError) as caught:
        update_run(stub, admin, run.id, ["state", "progress_percent", "current_step"], state=COMPLETED,
                   progress_percent=3.0, current_step=7)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "JOB_FINISHED"
    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin) == finished


def test_a_waiting_run_can_be_interrupted_by_a_shutdown(stub, admin):
    """A trainer that shuts down marks the runs still waiting in its queue INTERRUPTED, to resume them later."""
    run = make_run(stub, admin)
    _advance(stub, admin, run.id, [QUEUED])
    assert update_run(stub, admin, run.id, ["state"], state=INTERRUPTED).state == INTERRUPTED


def test_interrupted_run_can_be_queued_and_run_again(stub, admin):
    run = make_run(stub, admin)
    running = _advance(stub, admin, run.id, [QUEUED, RUNNING])
    interrupted = update_run(stub, admin, run.id, ["state", "error_message"], state=INTERRUPTED,
                             error_message="worker restarted")
    assert interrupted.state == INTERRUPTED
    assert not interrupted.HasField("end_time")  # not terminal
    assert interrupted.error_message == "worker restarted"
    update_run(stub, admin, run.id, ["progress_percent"], progress_percent=10.0)  # still accepts progress
    requeued = update_run(stub, admin, run.id, ["state"], state=QUEUED)
    assert requeued.state == QUEUED
    again = update_run(stub, admin, run.id, ["state"], state=RUNNING)
    assert again.start_time == running.start_time  # "when it first started running"
    failed = update_run(stub, admin, run.id, ["state", "error_message"], state=FAILED, error_message="oom")
    assert failed.state == FAILED and failed.HasField("end_time") and failed.error_message == "oom"


@pytest.mark.parametrize("value", [-0.5, 100.5, float("nan"), float("inf")])
def test_progress_outside_0_to_100_is_invalid(stub, admin, value):
    run = make_run(stub, admin)
    error = expect_error(lambda: update_run(stub, admin, run.id, ["progress_percent"], progress_percent=value),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert "training_run.progress_percent" in field_violations(error)
    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin).progress_percent == 0


@pytest.mark.parametrize("paths, fields, field", [
    ([], {}, "update_mask"),
    (["bogus"], {}, "update_mask"),
    (["id"], {}, "update_mask"),
    (["album_ids"], {"album_ids": ["1"]}, "update_mask"),
    (["start_time"], {}, "update_mask"),
    (["create_time"], {}, "update_mask"),
    (["state"], {}, "training_run.state"),
    (["name"], {"name": ""}, "training_run.name"),
    (["current_step"], {"current_step": -1}, "training_run.current_step"),
    (["artifact_id"], {"artifact_id": "abc"}, "training_run.artifact_id"),
])
def test_update_training_run_rejects_bad_requests(stub, admin, paths, fields, field):
    run = make_run(stub, admin)
    error = expect_error(lambda: update_run(stub, admin, run.id, paths, **fields),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)
    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin) == run


def test_update_with_unknown_artifact_is_not_found(stub, admin):
    run = make_run(stub, admin)
    error = expect_error(lambda: update_run(stub, admin, run.id, ["artifact_id"], artifact_id="99999999"),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ARTIFACT_NOT_FOUND"
    assert stub.GetTrainingRun(api.GetTrainingRunRequest(id=run.id), metadata=admin).artifact_id == ""


def test_update_unknown_training_run_is_not_found(stub, admin):
    error = expect_error(lambda: update_run(stub, admin, "98765432", ["name"], name="x"), grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "TRAINING_RUN_NOT_FOUND"


def test_update_training_run_without_id_is_invalid(stub, admin):
    error = expect_error(lambda: update_run(stub, admin, "", ["name"], name="x"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "training_run.id" in field_violations(error)


# Scrape jobs


def test_create_scrape_job_records_source_album_and_config(stub, admin):
    album = make_album(stub, admin, res.ALBUM_TYPE_SCRAPED)
    config = config_struct(depth=2, max_images=500, formats=["jpg", "png"], follow_external=False)
    job = make_job(stub, admin, name="gallery crawl", description="cats", source_url="http://example.org/cats",
                   config=config, album_id=album.id, stage="queued for crawl")
    assert job.id
    assert job.state == PENDING
    assert job.source_url == "http://example.org/cats"
    assert job.config == config
    assert job.album_id == album.id
    assert job.stage == "queued for crawl"
    assert (job.pages_seen, job.images_found, job.images_kept, job.images_skipped, job.error_count) == (0, 0, 0, 0, 0)
    assert dict(job.skip_reasons) == {}
    assert job.HasField("create_time") and not job.HasField("start_time") and not job.HasField("end_time")
    assert stub.GetScrapeJob(api.GetScrapeJobRequest(id=job.id), metadata=admin) == job


def test_create_scrape_job_keeps_the_counters_it_validates(stub, admin):
    """Create rejects negative counters, so the counters it accepts must be stored, not silently zeroed."""
    job = make_job(stub, admin, pages_seen=3, images_found=9, images_kept=7, images_skipped=2,
                   skip_reasons={"duplicate": 2}, error_count=1, error_message="one timeout", progress_percent=30.0)
    fetched = stub.GetScrapeJob(api.GetScrapeJobRequest(id=job.id), metadata=admin)
    assert fetched == job
    assert (job.pages_seen, job.images_found, job.images_kept, job.images_skipped) == (3, 9, 7, 2)
    assert dict(job.skip_reasons) == {"duplicate": 2}
    assert job.error_count == 1 and job.error_message == "one timeout"
    assert job.progress_percent == pytest.approx(30.0)


@pytest.mark.parametrize("url", ["", "ftp://example.com/x", "example.com/gallery", "javascript:alert(1)",
                                 "file:///etc/passwd", "https://example.com/" + "a" * 500])
def test_scrape_job_source_url_must_be_http(stub, admin, url):
    name = unique("bad-url")
    error = expect_error(lambda: make_job(stub, admin, name=name, source_url=url), grpc.StatusCode.INVALID_ARGUMENT)
    assert "scrape_job.source_url" in field_violations(error)
    assert name not in {j.name for j in all_jobs(stub, admin)}


@pytest.mark.parametrize("fields, field", [
    ({"name": ""}, "scrape_job.name"),
    ({"progress_percent": -1.0}, "scrape_job.progress_percent"),
    ({"stage": "s" * 51}, "scrape_job.stage"),
    ({"album_id": "nope"}, "scrape_job.album_id"),
    ({"images_kept": -1}, "scrape_job.images_kept"),
])
def test_create_scrape_job_rejects_bad_fields(stub, admin, fields, field):
    error = expect_error(lambda: make_job(stub, admin, **fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)


def test_create_scrape_job_with_unknown_album_is_not_found(stub, admin):
    error = expect_error(lambda: make_job(stub, admin, album_id="99999999"), grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ALBUM_NOT_FOUND"


def test_create_scrape_job_retry_with_request_id_returns_the_first_job(stub, admin):
    request_id = unique("req")
    name = unique("retried-job")
    first = stub.CreateScrapeJob(api.CreateScrapeJobRequest(
        scrape_job=res.ScrapeJob(name=name, source_url="https://example.com/a"), request_id=request_id),
        metadata=admin)
    second = stub.CreateScrapeJob(api.CreateScrapeJobRequest(
        scrape_job=res.ScrapeJob(name=name, source_url="https://example.com/b"), request_id=request_id),
        metadata=admin)
    assert second == first
    assert [j.name for j in all_jobs(stub, admin)].count(name) == 1


def test_get_unknown_scrape_job_is_not_found(stub, admin):
    error = expect_error(lambda: stub.GetScrapeJob(api.GetScrapeJobRequest(id="98765432"), metadata=admin),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "SCRAPE_JOB_NOT_FOUND"
    error = expect_error(lambda: stub.GetScrapeJob(api.GetScrapeJobRequest(id="x"), metadata=admin),
                         grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(error) == ["id"]


def test_scrape_job_life_cycle_with_counters(stub, admin):
    album = make_album(stub, admin, res.ALBUM_TYPE_SCRAPED)
    job = make_job(stub, admin)
    running = update_job(stub, admin, job.id, ["state", "stage", "album_id"], state=RUNNING, stage="crawling",
                         album_id=album.id)
    assert running.state == RUNNING and running.stage == "crawling" and running.album_id == album.id
    assert running.HasField("start_time") and not running.HasField("end_time")

    counted = update_job(stub, admin, job.id,
                         ["pages_seen", "images_found", "images_kept", "images_skipped", "skip_reasons",
                          "error_count", "error_message", "progress_percent", "stage"],
                         pages_seen=12, images_found=40, images_kept=35, images_skipped=5,
                         skip_reasons={"duplicate": 3, "too_small": 2}, error_count=1,
                         error_message="timeout on page 7", progress_percent=80.0, stage="importing")
    assert (counted.pages_seen, counted.images_found, counted.images_kept, counted.images_skipped) == (12, 40, 35, 5)
    assert dict(counted.skip_reasons) == {"duplicate": 3, "too_small": 2}
    assert counted.error_count == 1 and counted.error_message == "timeout on page 7"
    assert counted.progress_percent == pytest.approx(80.0) and counted.stage == "importing"
    assert stub.GetScrapeJob(api.GetScrapeJobRequest(id=job.id), metadata=admin) == counted

    # A map in the mask is replaced as a whole.
    replaced = update_job(stub, admin, job.id, ["skip_reasons", "images_kept"], skip_reasons={"duplicate": 4},
                          images_kept=36)
    assert dict(replaced.skip_reasons) == {"duplicate": 4}
    assert replaced.images_kept == 36
    assert replaced.pages_seen == 12  # not in the mask, kept

    done = update_job(stub, admin, job.id, ["state", "progress_percent", "stage"], state=COMPLETED,
                      progress_percent=100.0, stage="done")
    assert done.state == COMPLETED and done.HasField("end_time") and done.start_time == running.start_time
    assert stub.GetScrapeJob(api.GetScrapeJobRequest(id=job.id), metadata=admin) == done

    error = expect_error(lambda: update_job(stub, admin, job.id, ["images_kept"], images_kept=99),
                         grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(error) == "JOB_FINISHED"
    renamed = update_job(stub, admin, job.id, ["name"], name="kept for the record")
    assert renamed.name == "kept for the record" and renamed.images_kept == 36


@pytest.mark.parametrize("path, forbidden", [
    ([RUNNING, COMPLETED], RUNNING),
    ([FAILED], QUEUED),
    ([CANCELLED], RUNNING),
    ([], COMPLETED),
])
def test_forbidden_scrape_job_transitions_leave_the_job_unchanged(stub, admin, path, forbidden):
    job = make_job(stub, admin)
    before = job
    for state in path:
        before = update_job(stub, admin, job.id, ["state"], state=state)
    error = expect_error(lambda: update_job(stub, admin, job.id, ["state", "stage"], state=forbidden,
                                            stage="again"), grpc.StatusCode.FAILED_PRECONDITION)
    assert error_reason(error) == "INVALID_STATE_TRANSITION"
    assert stub.GetScrapeJob(api.GetScrapeJobRequest(id=job.id), metadata=admin) == before


def test_interrupted_scrape_job_can_be_queued_again(stub, admin):
    job = make_job(stub, admin)
    update_job(stub, admin, job.id, ["state"], state=RUNNING)
    interrupted = update_job(stub, admin, job.id, ["state"], state=INTERRUPTED)
    assert interrupted.state == INTERRUPTED and not interrupted.HasField("end_time")
    assert update_job(stub, admin, job.id, ["state"], state=QUEUED).state == QUEUED


@pytest.mark.parametrize("paths, fields, field", [
    ([], {}, "update_mask"),
    (["source_url"], {"source_url": "https://example.com/other"}, "update_mask"),
    (["images_scraped"], {}, "update_mask"),
    (["bogus"], {}, "update_mask"),
    (["images_kept"], {"images_kept": -1}, "scrape_job.images_kept"),
    (["pages_seen"], {"pages_seen": -2}, "scrape_job.pages_seen"),
    (["progress_percent"], {"progress_percent": 101.0}, "scrape_job.progress_percent"),
    (["stage"], {"stage": "x" * 51}, "scrape_job.stage"),
    (["album_id"], {"album_id": "abc"}, "scrape_job.album_id"),
    (["state"], {}, "scrape_job.state"),
])
def test_update_scrape_job_rejects_bad_requests(stub, admin, paths, fields, field):
    job = make_job(stub, admin)
    error = expect_error(lambda: update_job(stub, admin, job.id, paths, **fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in field_violations(error)
    assert stub.GetScrapeJob(api.GetScrapeJobRequest(id=job.id), metadata=admin) == job


def test_update_scrape_job_album_must_exist(stub, admin):
    job = make_job(stub, admin)
    error = expect_error(lambda: update_job(stub, admin, job.id, ["album_id"], album_id="99999999"),
                         grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "ALBUM_NOT_FOUND"
    error = expect_error(lambda: update_job(stub, admin, "98765432", ["stage"], stage="x"), grpc.StatusCode.NOT_FOUND)
    assert error_reason(error) == "SCRAPE_JOB_NOT_FOUND"


def test_list_scrape_jobs_filters_by_state_and_pages(stub, admin):
    jobs = [make_job(stub, admin) for _ in range(4)]
    update_job(stub, admin, jobs[1].id, ["state"], state=RUNNING)
    update_job(stub, admin, jobs[3].id, ["state"], state=CANCELLED)
    mine = [j.id for j in jobs]

    running = all_jobs(stub, admin, states=[RUNNING])
    assert jobs[1].id in {j.id for j in running} and all(j.state == RUNNING for j in running)
    pending_or_cancelled = [j.id for j in all_jobs(stub, admin, states=[PENDING, CANCELLED]) if j.id in mine]
    assert pending_or_cancelled == [jobs[3].id, jobs[2].id, jobs[0].id]

    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListScrapeJobs(api.ListScrapeJobsRequest(page_size=3, page_token=token), metadata=admin)
        assert len(page.scrape_jobs) <= 3
        seen.extend(j.id for j in page.scrape_jobs)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in mine] == list(reversed(mine))

    for request in (api.ListScrapeJobsRequest(states=[S.JOB_STATE_UNSPECIFIED]),
                    api.ListScrapeJobsRequest(page_size=-5)):
        expect_error(lambda request=request: stub.ListScrapeJobs(request, metadata=admin),
                     grpc.StatusCode.INVALID_ARGUMENT)


# Authentication


@pytest.mark.parametrize("call", [
    lambda s: s.CreateTrainingRun(api.CreateTrainingRunRequest(training_run=res.TrainingRun(name="anon"))),
    lambda s: s.GetTrainingRun(api.GetTrainingRunRequest(id="1")),
    lambda s: s.ListTrainingRuns(api.ListTrainingRunsRequest()),
    lambda s: s.UpdateTrainingRun(api.UpdateTrainingRunRequest(training_run=res.TrainingRun(id="1", name="x"),
                                                               update_mask=mask("name"))),
    lambda s: s.CreateScrapeJob(api.CreateScrapeJobRequest(
        scrape_job=res.ScrapeJob(name="anon", source_url="https://example.com"))),
    lambda s: s.GetScrapeJob(api.GetScrapeJobRequest(id="1")),
    lambda s: s.ListScrapeJobs(api.ListScrapeJobsRequest()),
    lambda s: s.UpdateScrapeJob(api.UpdateScrapeJobRequest(scrape_job=res.ScrapeJob(id="1", name="x"),
                                                           update_mask=mask("name"))),
], ids=["CreateTrainingRun", "GetTrainingRun", "ListTrainingRuns", "UpdateTrainingRun", "CreateScrapeJob",
        "GetScrapeJob", "ListScrapeJobs", "UpdateScrapeJob"])
def test_job_methods_need_admin(stub, call):
    error = expect_error(lambda: call(stub), grpc.StatusCode.UNAUTHENTICATED)
    assert error_reason(error) == "ADMIN_TOKEN_REQUIRED"


def test_anonymous_create_changes_nothing(stub, admin):
    before = len(all_runs(stub, admin))
    expect_error(lambda: stub.CreateTrainingRun(api.CreateTrainingRunRequest(
        training_run=res.TrainingRun(name=unique("anon")))), grpc.StatusCode.UNAUTHENTICATED)
    assert len(all_runs(stub, admin)) == before

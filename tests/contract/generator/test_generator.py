"""Contract: the generator service (StartGeneration, GetGeneration, ListGenerations, CancelGeneration,
WatchGeneration, GetGeneratorInfo), its jobs' events, and what it stores in the catalog, driven through the stubs.

Requests are small (64x64, 2 to 6 steps) so a job takes a fraction of a second; "long" jobs (150 steps) are always
cancelled. Each test uses its own seeds, since identical requests make identical files, which the catalog stores once.
"""

from __future__ import annotations

import io
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness.processes import ADMIN_METADATA, free_port
from PIL import Image

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as api
from imagineer_common.grpc_errors import error_reason, field_violations

GENERATOR_ENV = {"IMAGINEER_GENERATOR_MAX_BATCH": "4"}
DEMO_MODEL = "imagineer/tiny-sd"
SERVICE_NAME = "imagineer.generator.v1.GeneratorService"
QUEUED, RUNNING = common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING
COMPLETED, FAILED, CANCELLED = common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_FAILED, \
    common_pb2.JOB_STATE_CANCELLED
LONG = {"steps": 150, "width": 128, "height": 128}  # seconds of work: always cancelled


def kinds(events) -> list[str]:
    return [event.WhichOneof("event") for event in events]


def state_name(job) -> str:
    return common_pb2.JobState.Name(job.state)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a server stream fails on its first read
            next(result)
    return caught.value


# --- GetGeneratorInfo ---------------------------------------------------------------------------------------------

def test_generator_info_describes_the_demo_model(gen):
    info = gen.info()
    assert info.model == DEMO_MODEL
    assert info.is_demo_model
    assert info.device == "cpu"
    assert info.default_size == 64
    assert {"ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "pndm"} <= set(info.schedulers)
    assert len(set(info.schedulers)) == len(info.schedulers)
    assert info.queue_capacity == 32  # the default
    assert info.queue_length == 0


# --- StartGeneration: the job it returns, defaults -----------------------------------------------------------------

def test_start_returns_the_queued_job_at_once_with_its_plan(gen):
    started = time.monotonic()
    job = gen.start("a blue owl at night", seed=1000, image_count=3, negative_prompt="blurry")
    assert time.monotonic() - started < 2.0
    assert job.id
    assert job.state == QUEUED
    assert job.create_time.seconds > 0
    assert not job.HasField("start_time") and not job.HasField("end_time")
    assert job.images_done == 0 and not job.error_message
    assert [(image.prompt, image.seed, image.image_id) for image in job.images] == [
        ("a blue owl at night", 1000, ""), ("a blue owl at night", 1001, ""), ("a blue owl at night", 1002, "")]
    params = job.parameters
    assert params.prompt == "a blue owl at night" and params.negative_prompt == "blurry"
    assert params.seed == 1000
    assert (params.steps, params.width, params.height) == (4, 64, 64)
    assert params.guidance_scale == pytest.approx(7.5)
    assert params.scheduler == "euler"
    assert params.base_model == DEMO_MODEL
    assert not job.loras
    final = gen.finish(job.id)
    assert final.state == COMPLETED
    assert final.id == job.id and final.create_time == job.create_time
    assert final.start_time.ToNanoseconds() >= job.create_time.ToNanoseconds()
    assert final.end_time.ToNanoseconds() >= final.start_time.ToNanoseconds()


def test_defaults_are_applied_and_recorded(gen, cat):
    job = gen.start("a green dragon", seed=None, steps=0, width=0, height=0, guidance_scale=0, scheduler="")
    params = job.parameters
    assert (params.steps, params.width, params.height, params.scheduler) == (25, 64, 64, "euler")
    assert params.guidance_scale == pytest.approx(7.5)
    assert params.HasField("seed"), "the random seed is reported on the job"
    assert job.images[0].seed == params.seed
    assert 0 <= params.seed < 2**63
    final = gen.finish(job.id)
    assert final.state == COMPLETED, final.error_message
    stored = cat.image(final.images[0].image_id).generation
    assert (stored.steps, stored.width, stored.height, stored.scheduler, stored.seed) == (
        25, 64, 64, "euler", params.seed)
    other = gen.start("a green dragon", seed=None, steps=2)
    assert other.parameters.seed != params.seed, "unset seeds are random"
    gen.finish(other.id)


def test_seeds_count_up_per_image_and_wrap(gen, cat):
    top = 2**63 - 1
    job = gen.start("a yellow fish", seed=top, image_count=2, steps=2)
    assert [image.seed for image in job.images] == [top, 0]
    final = gen.finish(job.id)
    assert final.state == COMPLETED, final.error_message
    assert [cat.image(image.image_id).generation.seed for image in final.images] == [top, 0]


def test_scheduler_names_ignore_case_and_spaces(gen):
    job = gen.start("a pink horse", seed=5, scheduler="  DDIM ", steps=2)
    assert job.parameters.scheduler == "ddim"
    assert gen.finish(job.id).state == COMPLETED


def test_base_model_naming_the_loaded_model_is_accepted(gen):
    job = gen.start("a black cat", seed=6, steps=2, base_model=DEMO_MODEL)
    assert job.parameters.base_model == DEMO_MODEL
    assert gen.finish(job.id).state == COMPLETED


# --- StartGeneration: errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, field", [
    ({"width": 100}, "parameters.width"),
    ({"height": 2056}, "parameters.height"),
    ({"width": 56}, "parameters.width"),
    ({"scheduler": "warp-drive"}, "parameters.scheduler"),
    ({"prompt": ""}, "parameters.prompt"),
    ({"prompt": "   "}, "parameters.prompt"),
    ({"prompt": "x" * 2001}, "parameters.prompt"),
    ({"steps": 151}, "parameters.steps"),
    ({"steps": -1}, "parameters.steps"),
    ({"guidance_scale": 0.5}, "parameters.guidance_scale"),
    ({"guidance_scale": 31}, "parameters.guidance_scale"),
    ({"seed": -1}, "parameters.seed"),
    ({"base_model": "runwayml/stable-diffusion-v1-5"}, "parameters.base_model"),
    ({"image_count": 17}, "image_count"),
    ({"image_count": -1}, "image_count"),
    ({"album_id": "7", "album_name": "my album"}, "album_name"),
    ({"album_id": "abc"}, "album_id"),
    ({"album_name": "n" * 256}, "album_name"),
    ({"loras": [api.LoraSpec(artifact_id="")]}, "loras[0].artifact_id"),
    ({"loras": [api.LoraSpec(artifact_id="lora-1")]}, "loras[0].artifact_id"),
    ({"loras": [api.LoraSpec(artifact_id="3", weight=5)]}, "loras[0].weight"),
    ({"loras": [api.LoraSpec(artifact_id="3"), api.LoraSpec(artifact_id="3")]}, "loras[1].artifact_id"),
    ({"loras": [api.LoraSpec(artifact_id=str(i)) for i in range(1, 10)]}, "loras"),
    ({"template": api.PromptTemplate(template="a {animal}", csv="animal\nfox")}, "parameters.prompt"),
    ({"prompt": "", "template": api.PromptTemplate(template="a fox", csv="animal\nfox")}, "template.template"),
    ({"prompt": "", "template": api.PromptTemplate(template="a {animal}", csv="colour\nred")}, "template.csv"),
    ({"prompt": "", "template": api.PromptTemplate(template="a {animal}")}, "template.csv"),
    ({"prompt": "", "template": api.PromptTemplate(template="a {animal!r}", csv="animal\nfox")}, "template.template"),
    ({"prompt": "", "template": api.PromptTemplate(template="a {animal}", csv="animal\n" + "fox\n" * 257)},
     "template.csv"),
    ({"prompt": "", "image_count": 16, "template": api.PromptTemplate(
        template="a {animal}", structured=api.TemplateRows(rows=[api.TemplateRow(values={"animal": "fox"})] * 17))},
     "image_count"),
])
def test_invalid_requests_are_invalid_argument_naming_the_field(gen, fields, field):
    before = len(gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=500), metadata=ADMIN_METADATA).jobs)
    fields = {"prompt": "a red fox", **fields}
    error = rpc_error(gen.start, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in field_violations(error), (field_violations(error), error.details())
    after = len(gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=500), metadata=ADMIN_METADATA).jobs)
    assert after == before, "a refused request makes no job"


def test_every_violation_is_reported_at_once(gen):
    error = rpc_error(gen.start, "", width=100, scheduler="nope", image_count=99)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"parameters.prompt", "parameters.width", "parameters.scheduler", "image_count"} <= set(
        field_violations(error))


def test_loras_inside_parameters_are_refused(gen):
    request = api.StartGenerationRequest(parameters=common_pb2.GenerationParameters(
        prompt="a fox", seed=1, steps=2, loras=[common_pb2.LoraWeight(artifact_id="1", weight=1)]))
    error = rpc_error(gen.start, request=request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.loras" in field_violations(error)


def test_unknown_album_is_not_found(gen):
    error = rpc_error(gen.start, "a fox", album_id="987654")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "ALBUM_NOT_FOUND"
    assert "987654" in error.details()


def test_unknown_lora_artifact_is_not_found(gen):
    error = rpc_error(gen.start, "a fox", loras=[api.LoraSpec(artifact_id="987654", weight=1)])
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "LORA_NOT_FOUND"
    assert "987654" in error.details()


def test_non_lora_artifact_is_invalid_argument(gen, cat):
    artifact = cat.upload_artifact(b'{"a": "checkpoint, not a LoRA"}', "not-a-lora", kind=res.ARTIFACT_KIND_OTHER,
                                   filename="notes.json")
    error = rpc_error(gen.start, "a fox", loras=[api.LoraSpec(artifact_id=artifact.id, weight=1)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "loras[0].artifact_id" in field_violations(error)
    assert "not a LoRA" in error.details()


# --- WatchGeneration -----------------------------------------------------------------------------------------------

def test_watch_streams_every_event_in_order(gen):
    job = gen.start("a white wolf", seed=2000, steps=4)
    events = gen.events(job.id)
    assert kinds(events) == ["queued", "started", "step", "step", "step", "step", "image", "finished"]
    assert [event.sequence for event in events] == list(range(1, 9))
    assert all(event.job.id == job.id for event in events)

    queued, started, *steps, image, finished = events
    assert queued.queued.queue_position == 0 and queued.job.state == QUEUED
    assert started.job.state == RUNNING and started.started.album_id
    assert started.job.album_id == started.started.album_id and started.job.HasField("start_time")
    assert [(s.step.step, s.step.total_steps, s.step.image_index, s.step.batch_size) for s in steps] == [
        (1, 4, 0, 1), (2, 4, 0, 1), (3, 4, 0, 1), (4, 4, 0, 1)]
    assert all(s.job.state == RUNNING and s.job.images_done == 0 for s in steps)
    assert image.image.image_index == 0 and image.image.seed == 2000 and image.image.image_id
    assert image.job.images_done == 1 and image.job.images[0].image_id == image.image.image_id
    assert finished.finished.state == COMPLETED and not finished.finished.reason
    assert finished.job.state == COMPLETED and finished.job.HasField("end_time")
    assert finished.job == gen.get(job.id)


def test_watch_reports_steps_per_batch(gen):
    """Six images with at most four a batch: two passes, each with its own step events, then its images."""
    job = gen.start("a grey rabbit", seed=2100, steps=2, image_count=6)
    events = gen.events(job.id)
    summary = []
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "step":
            summary.append(("step", event.step.step, event.step.image_index, event.step.batch_size))
        elif kind == "image":
            summary.append(("image", event.image.image_index, event.image.seed))
        else:
            summary.append((kind,))
    assert summary == [
        ("queued",), ("started",),
        ("step", 1, 0, 4), ("step", 2, 0, 4),
        ("image", 0, 2100), ("image", 1, 2101), ("image", 2, 2102), ("image", 3, 2103),
        ("step", 1, 4, 2), ("step", 2, 4, 2),
        ("image", 4, 2104), ("image", 5, 2105),
        ("finished",)]
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    final = events[-1].job
    assert final.images_done == 6
    assert [image.image_id for image in final.images] == [e.image.image_id for e in events if e.HasField("image")]


def test_late_watcher_sees_everything_and_can_resume(gen):
    job = gen.start("a brown bear", seed=2200, steps=3, image_count=2)
    with ThreadPoolExecutor(3) as pool:  # several watchers at once see the same stream
        streams = list(pool.map(lambda _: gen.events(job.id), range(3)))
    live = streams[0]
    assert streams[1] == live and streams[2] == live
    late = gen.events(job.id)
    assert late == live, "a watcher that joins after the end gets the same events"
    assert gen.events(job.id, after_sequence=3) == live[3:]
    assert gen.events(job.id, after_sequence=len(live) - 1) == live[-1:]
    assert gen.events(job.id, after_sequence=len(live)) == []


def test_watch_joined_mid_job_resumes_without_gaps(gen):
    job = gen.start("a red fox", seed=2300, steps=20, image_count=2)
    first = gen.wait_for(job.id, "step")  # a stream dropped after the first step
    rest = gen.events(job.id, after_sequence=first.sequence)
    assert [event.sequence for event in rest] == list(range(first.sequence + 1, first.sequence + 1 + len(rest)))
    assert rest[-1].finished.state == COMPLETED


def test_watch_errors(gen):
    error = rpc_error(gen.watch, "feedfacecafebeef")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "GENERATION_NOT_FOUND"
    assert rpc_error(gen.watch, "").code() == grpc.StatusCode.INVALID_ARGUMENT
    job = gen.start("a fox", seed=2400, steps=2)
    error = rpc_error(gen.watch, job.id, after_sequence=-1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in field_violations(error)
    gen.finish(job.id)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde",
                                       "heun", "pndm", "unipc"])
def test_every_offered_scheduler_renders_with_steps_counted_to_the_total(gen, scheduler):
    assert scheduler in gen.info().schedulers
    job = gen.start("a red fox", seed=2500, steps=3, scheduler=scheduler)
    events = gen.events(job.id)
    assert events[-1].job.state == COMPLETED, events[-1].job.error_message
    steps = [event.step for event in events if event.HasField("step")]
    total = steps[0].total_steps
    assert total >= 3
    assert [(s.step, s.total_steps) for s in steps] == [(i, total) for i in range(1, total + 1)]


# --- what lands in the catalog -------------------------------------------------------------------------------------

def test_images_are_stored_with_their_generation_record_in_a_new_batch_album(gen, cat):
    prompt = "a golden lion, oil painting"
    job = gen.complete(prompt, seed=3000, image_count=3, negative_prompt="blurry", guidance_scale=6.5,
                       scheduler="dpmpp_2m")
    assert job.images_done == 3 and all(image.image_id for image in job.images)
    assert len({image.image_id for image in job.images}) == 3
    for index, planned in enumerate(job.images):
        image = cat.image(planned.image_id)
        record = image.generation
        assert image.content_type == "image/png" and image.has_file and not image.is_public
        assert (record.prompt, record.negative_prompt, record.seed) == (prompt, "blurry", 3000 + index)
        assert (record.steps, record.width, record.height, record.scheduler) == (4, 64, 64, "dpmpp_2m")
        assert record.guidance_scale == pytest.approx(6.5)
        assert record.base_model == DEMO_MODEL
        assert not record.loras

    album = cat.album(job.album_id)
    assert album.album_type == res.ALBUM_TYPE_BATCH
    assert album.name == f"Batch: {prompt}"
    assert album.generation_prompt == prompt
    assert album.image_count == 3
    config = dict(album.generation_config)
    assert config["steps"] == 4 and config["scheduler"] == "dpmpp_2m" and config["first_seed"] == 3000
    assert config["model"] == DEMO_MODEL
    assert cat.album_image_ids(job.album_id) == [image.image_id for image in job.images]


def test_album_name_names_the_new_album(gen, cat):
    job = gen.complete("a purple butterfly", seed=3100, steps=2, album_name="  Butterflies  ")
    assert cat.album(job.album_id).name == "Butterflies"


def test_png_carries_its_parameters(gen, cat):
    job = gen.complete("a silver robot", seed=3200, steps=3, width=96, height=64, negative_prompt="ugly, dark",
                       scheduler="euler_a")
    data = cat.image_bytes(job.images[0].image_id)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (96, 64) and image.mode == "RGB"
        text = dict(image.text)
    lines = text["parameters"].split("\n")
    assert lines[0] == "a silver robot"
    assert lines[1] == "Negative prompt: ugly, dark"
    assert lines[2].startswith("Steps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 3200, Size: 96x64")
    assert "Model: imagineer/tiny-sd" in lines[2]
    assert json.loads(text["imagineer"]) == {
        "prompt": "a silver robot", "negative_prompt": "ugly, dark", "seed": 3200, "steps": 3,
        "guidance_scale": 7.5, "scheduler": "euler_a", "width": 96, "height": 64, "model": DEMO_MODEL, "loras": []}


def test_same_request_gives_the_same_bytes_and_the_same_catalog_image(gen, cat):
    first = gen.complete("a blue bird over the sea", seed=3300, steps=4)
    again = gen.complete("a blue bird over the sea", seed=3300, steps=4)
    assert again.id != first.id and again.album_id != first.album_id
    assert cat.job_bytes(again) == cat.job_bytes(first)
    assert again.images[0].image_id == first.images[0].image_id, "identical files are one catalog image"
    assert cat.album_image_ids(again.album_id) == [first.images[0].image_id], "and it joins the new album too"

    other_seed = gen.complete("a blue bird over the sea", seed=3301, steps=4)
    other_prompt = gen.complete("a red bird over the sea", seed=3300, steps=4)
    other_negative = gen.complete("a blue bird over the sea", seed=3300, steps=4, negative_prompt="dark")
    images = {cat.image_bytes(job.images[0].image_id) for job in (first, other_seed, other_prompt, other_negative)}
    assert len(images) == 4


def test_images_go_into_an_existing_album(gen, cat):
    album = cat.create_album("my foxes")
    albums_before = cat.album_count()
    job = gen.start("a red fox", seed=3400, steps=2, image_count=2, album_id=album.id)
    events = gen.events(job.id)
    final = events[-1].job
    assert final.state == COMPLETED
    assert next(e for e in events if e.HasField("started")).started.album_id == album.id
    assert final.album_id == album.id
    assert cat.album_image_ids(album.id) == [image.image_id for image in final.images]
    assert cat.album_count() == albums_before, "no new album"
    stored = cat.album(album.id)
    assert stored.album_type == res.ALBUM_TYPE_MANUAL and stored.name == "my foxes"


def test_make_public_stores_public_images_and_album(gen, cat):
    job = gen.complete("a white horse", seed=3500, steps=2, make_public=True)
    assert cat.image(job.images[0].image_id).is_public
    assert cat.album(job.album_id).is_public


def test_template_job_makes_images_per_row_in_a_set_album(gen, cat):
    template = "a {animal} in the {place}, oil painting"
    csv_text = 'animal,place,unused\nfox,forest,x\ncat,"city, at night",y\n'
    job = gen.start("", seed=3600, steps=2, image_count=2,
                    template=api.PromptTemplate(template=template, csv=csv_text))
    prompts = ["a fox in the forest, oil painting"] * 2 + ["a cat in the city, at night, oil painting"] * 2
    assert [(image.prompt, image.seed) for image in job.images] == list(zip(prompts, range(3600, 3604), strict=True))
    assert job.parameters.prompt == template
    final = gen.finish(job.id)
    assert final.state == COMPLETED, final.error_message
    assert [cat.image(image.image_id).generation.prompt for image in final.images] == prompts
    album = cat.album(final.album_id)
    assert album.album_type == res.ALBUM_TYPE_SET
    assert album.generation_prompt == template
    assert album.name == f"Set: {template}"
    assert cat.album_image_ids(final.album_id) == [image.image_id for image in final.images]


def test_template_with_structured_rows(gen, cat):
    rows = [api.TemplateRow(values={"colour": colour}) for colour in ("red", "green", "blue")]
    job = gen.start("", seed=3700, steps=2, template=api.PromptTemplate(
        template="a {colour} dragon", structured=api.TemplateRows(rows=rows)))
    final = gen.finish(job.id)
    assert final.state == COMPLETED, final.error_message
    assert [image.prompt for image in final.images] == ["a red dragon", "a green dragon", "a blue dragon"]
    assert cat.album(final.album_id).image_count == 3


# --- CancelGeneration ----------------------------------------------------------------------------------------------

def test_cancel_a_running_job_stops_it_between_steps(gen, cat):
    job = gen.start("a long night", seed=4000, **LONG)
    stream = gen.watch(job.id)
    seen = []
    for event in stream:
        seen.append(event)
        if event.HasField("step"):
            break
    cancelled_at = time.monotonic()
    reply = gen.cancel(job.id)
    assert reply.id == job.id and reply.state in (RUNNING, CANCELLED)
    seen.extend(stream)
    assert time.monotonic() - cancelled_at < 3.0, "cancelling stops the render within a step or two"
    finished = seen[-1]
    assert finished.finished.state == CANCELLED and finished.finished.reason
    assert not any(event.HasField("image") for event in seen)
    final = gen.get(job.id)
    assert final.state == CANCELLED and final.error_message and final.HasField("end_time")
    assert final.images_done == 0 and not any(image.image_id for image in final.images)
    steps = [event.step.step for event in seen if event.HasField("step")]
    assert steps[-1] < 150
    assert cat.album(final.album_id).image_count == 0, "nothing stored"


def test_cancel_a_queued_job_before_it_starts(gen, cat):
    blocker = gen.start("a blocker", seed=4100, **LONG)
    gen.wait_for(blocker.id, "step")
    albums_before = cat.album_count()
    started = time.monotonic()
    waiting = gen.start("a waiting fox", seed=4101, steps=5)
    assert time.monotonic() - started < 2.0
    assert waiting.state == QUEUED and waiting.queue_position == 0
    assert gen.get(waiting.id).state == QUEUED
    reply = gen.cancel(waiting.id)
    assert reply.state == CANCELLED and reply.error_message
    events = gen.events(waiting.id)
    assert kinds(events) == ["queued", "finished"]
    assert events[-1].finished.state == CANCELLED
    assert not events[-1].job.album_id
    gen.cancel(blocker.id)
    assert gen.finish(blocker.id).state == CANCELLED
    assert cat.album_count() == albums_before, "the cancelled job never made its album"
    assert gen.get(waiting.id).state == CANCELLED


def test_cancel_keeps_the_images_already_stored(gen, cat):
    job = gen.start("a fading star", seed=4200, steps=30, image_count=8)
    gen.wait_for(job.id, "image")
    gen.cancel(job.id)
    events = gen.events(job.id)
    final = events[-1].job
    assert final.state == CANCELLED
    stored = [event.image.image_id for event in events if event.HasField("image")]
    assert 1 <= len(stored) < 8
    assert final.images_done == len(stored)
    assert [image.image_id for image in final.images if image.image_id] == stored
    assert cat.album_image_ids(final.album_id) == stored


def test_cancel_a_finished_job_is_failed_precondition(gen):
    job = gen.complete("a done deal", seed=4300, steps=2)
    error = rpc_error(gen.cancel, job.id)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "JOB_FINISHED"
    assert gen.get(job.id).state == COMPLETED


def test_get_and_cancel_unknown_jobs(gen):
    for call in (gen.get, gen.cancel):
        error = rpc_error(call, "feedfacecafebeef")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(error) == "GENERATION_NOT_FOUND"
        error = rpc_error(call, "")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id" in field_violations(error)


# --- GetGeneration, ListGenerations, idempotency -----------------------------------------------------------------

def test_get_generation_returns_the_job(gen):
    job = gen.complete("a quiet owl", seed=5000, steps=2, image_count=2)
    fetched = gen.get(job.id)
    assert fetched == job
    assert fetched.images_done == 2 and fetched.queue_position == 0


def test_list_generations_newest_first_with_paging(gen):
    jobs = [gen.complete(f"a list entry {n}", seed=5100 + n, steps=2) for n in range(3)]
    newest = [job.id for job in reversed(jobs)]

    def page(size, token=""):
        return gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=size, page_token=token),
                                        metadata=ADMIN_METADATA)

    everything = page(500)
    assert [job.id for job in everything.jobs[:3]] == newest
    assert len(page(0).jobs) == min(50, len(everything.jobs)), "0 means 50"
    times = [job.create_time.ToNanoseconds() for job in everything.jobs]
    assert times == sorted(times, reverse=True)
    first = page(2)
    assert [job.id for job in first.jobs] == newest[:2] and first.next_page_token
    second = page(2, first.next_page_token)
    assert second.jobs[0].id == newest[2]
    collected, token = [], ""
    while True:
        reply = page(2, token)
        collected.extend(job.id for job in reply.jobs)
        token = reply.next_page_token
        if not token:
            break
    assert collected == [job.id for job in everything.jobs]
    assert len(set(collected)) == len(collected)
    assert page(len(collected)).next_page_token == ""

    error = rpc_error(page, -1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in field_violations(error)
    error = rpc_error(page, 2, "not-a-token")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in field_violations(error)


def test_request_id_makes_start_idempotent(gen):
    count = len(gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=500), metadata=ADMIN_METADATA).jobs)
    first = gen.start("a retried fox", seed=5200, steps=2, request_id="retry-5200")
    again = gen.start("a retried fox", seed=5200, steps=2, request_id="retry-5200")
    assert again.id == first.id
    gen.finish(first.id)
    after = gen.start("a retried fox", seed=5200, steps=2, request_id="retry-5200")
    assert after.id == first.id and after.state == COMPLETED, "a retry after the end still finds the job"
    other = gen.start("a retried fox", seed=5200, steps=2, request_id="retry-5201")
    assert other.id != first.id
    gen.finish(other.id)
    total = len(gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=500), metadata=ADMIN_METADATA).jobs)
    assert total == count + 2


# --- authentication ------------------------------------------------------------------------------------------------

RPCS = [
    ("StartGeneration", lambda: api.StartGenerationRequest(
        parameters=common_pb2.GenerationParameters(prompt="a fox", steps=2))),
    ("GetGeneration", lambda: api.GetGenerationRequest(id="feedfacecafebeef")),
    ("ListGenerations", lambda: api.ListGenerationsRequest()),
    ("CancelGeneration", lambda: api.CancelGenerationRequest(id="feedfacecafebeef")),
    ("WatchGeneration", lambda: api.WatchGenerationRequest(id="feedfacecafebeef")),
    ("GetGeneratorInfo", lambda: api.GetGeneratorInfoRequest()),
]


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong-token"),), (("authorization", "x"),)],
                         ids=["no-token", "wrong-token", "malformed"])
@pytest.mark.parametrize("method, make_request", RPCS, ids=[name for name, _ in RPCS])
def test_every_rpc_requires_the_admin_token(gen, method, make_request, metadata):
    count = len(gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=500), metadata=ADMIN_METADATA).jobs)
    error = rpc_error(getattr(gen.stub, method), make_request(), metadata=metadata, timeout=10)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, "permission is checked before existence"
    after = len(gen.stub.ListGenerations(api.ListGenerationsRequest(page_size=500), metadata=ADMIN_METADATA).jobs)
    assert after == count


# --- queue capacity -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_full_queue_answers_resource_exhausted(extra_generator):
    small = extra_generator(IMAGINEER_GENERATOR_QUEUE_CAPACITY="1")
    assert small.info().queue_capacity == 1
    accepted, refused = [], None
    for n in range(3):
        try:
            accepted.append(small.start(f"a long job {n}", seed=6000 + n, **{**LONG, "steps": 150 - n}))
        except grpc.RpcError as error:
            refused = error
            break
    assert refused is not None, "the queue never filled up"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(refused) == "QUEUE_FULL"
    assert "full" in refused.details()
    for job in accepted:
        small.cancel(job.id)
        assert small.finish(job.id).state == CANCELLED
    job = small.start("after the rush", seed=6010, steps=2)
    assert small.finish(job.id).state == COMPLETED, "room again once the queue drained"


@pytest.mark.slow
def test_the_running_job_does_not_count_as_waiting(extra_generator):
    """queue_capacity is "maximum jobs waiting"; queue_length "jobs waiting now": a running job is not waiting."""
    small = extra_generator(IMAGINEER_GENERATOR_QUEUE_CAPACITY="1")
    running = small.start("a running job", seed=6100, **LONG)
    small.wait_for(running.id, "step")
    try:
        assert small.info().queue_length == 0, "nothing is waiting while one job runs"
        waiting = small.start("a waiting job", seed=6101, **{**LONG, "steps": 149})
        assert waiting.state == QUEUED and waiting.queue_position == 0
        assert small.info().queue_length == 1
        error = rpc_error(small.start, "one too many", seed=6102, **{**LONG, "steps": 148})
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        small.cancel_all()


def test_queue_positions_move_up_when_the_job_ahead_starts(gen):
    blocker = gen.start("a blocker", seed=6200, **LONG)
    gen.wait_for(blocker.id, "step")
    try:
        second = gen.start("second in line", seed=6201, **{**LONG, "steps": 149})
        third = gen.start("third in line", seed=6202, **{**LONG, "steps": 148})
        assert (second.queue_position, third.queue_position) == (0, 1)
        gen.cancel(blocker.id)
        gen.wait_for(second.id, "step")
        assert gen.get(third.id).queue_position == 0, "third is next (0) once second runs"
    finally:
        gen.cancel_all()
    positions = [event.queued.queue_position for event in gen.events(third.id) if event.HasField("queued")]
    assert positions == [1, 0]


# --- batching -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compatible_jobs_are_denoised_together_with_the_same_bytes_as_alone(gen, cat):
    blocker = gen.start("a blocker", seed=7000, **LONG)
    gen.wait_for(blocker.id, "step")
    prompts = ["a red fox", "a blue owl", "a green dragon", "a white wolf"]
    jobs = [gen.start(prompt, seed=7001 + n, steps=4) for n, prompt in enumerate(prompts)]
    assert [job.queue_position for job in jobs] == [0, 1, 2, 3]
    gen.cancel(blocker.id)
    batched = []
    for job in jobs:
        events = gen.events(job.id)
        assert events[-1].job.state == COMPLETED, events[-1].job.error_message
        steps = [(event.step.step, event.step.image_index, event.step.batch_size) for event in events
                 if event.HasField("step")]
        assert steps == [(1, 0, 4), (2, 0, 4), (3, 0, 4), (4, 0, 4)], "the four jobs rode in one pass"
        batched.append(events[-1].job)

    for n, prompt in enumerate(prompts):
        alone, events = gen.run(prompt, seed=7001 + n, steps=4)
        assert alone.state == COMPLETED
        assert {event.step.batch_size for event in events if event.HasField("step")} == {1}
        assert cat.job_bytes(alone) == cat.job_bytes(batched[n]), f"{prompt!r}: batch and alone differ"
        assert alone.images[0].image_id == batched[n].images[0].image_id


@pytest.mark.slow
def test_cancelling_one_job_of_a_shared_pass_lets_the_others_finish(gen, cat):
    blocker = gen.start("a blocker", seed=7400, **LONG)
    gen.wait_for(blocker.id, "step")
    doomed = gen.start("a doomed fox", seed=7401, steps=60)
    kept = gen.start("a kept owl", seed=7402, steps=60)
    gen.cancel(blocker.id)
    gen.wait_for(doomed.id, "step")
    gen.cancel(doomed.id)
    events = gen.events(kept.id)
    assert events[-1].job.state == COMPLETED, events[-1].job.error_message
    assert events[-1].job.images_done == 1
    assert next(e for e in events if e.HasField("step")).step.batch_size == 2, "they started as one pass"
    assert gen.get(doomed.id).state == CANCELLED
    alone = gen.complete("a kept owl", seed=7402, steps=60)
    assert cat.job_bytes(alone) == cat.job_bytes(events[-1].job)


@pytest.mark.slow
def test_batches_take_turns_between_compatible_jobs(gen):
    blocker = gen.start("a blocker", seed=7100, **LONG)
    gen.wait_for(blocker.id, "step")
    first = gen.start("first of two", seed=7101, steps=2, image_count=3)
    second = gen.start("second of two", seed=7201, steps=2, image_count=3)
    other = gen.start("other settings", seed=7301, steps=3)
    gen.cancel(blocker.id)

    def passes(job_id):
        events = gen.events(job_id)
        assert events[-1].job.state == COMPLETED
        return [(event.step.image_index, event.step.batch_size) for event in events
                if event.HasField("step") and event.step.step == 1]

    # [first 0, second 0, first 1, second 1], then [first 2, second 2]: a big job does not starve a small one.
    assert passes(first.id) == [(0, 4), (2, 2)]
    assert passes(second.id) == [(0, 4), (2, 2)]
    assert passes(other.id) == [(0, 1)], "other settings never share a pass"


# --- health, start-up, catalog outages ------------------------------------------------------------------------------

@pytest.mark.slow
def test_health_reports_serving_only_once_the_model_is_loaded(extra_generator):
    """A generator with no model configured builds the demo model into its data folder first (a first run)."""
    fresh = extra_generator(model_dir=None, wait=False)
    address = fresh.service.address
    statuses = []
    unavailable = None
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            statuses.append(reply.status)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
            if unavailable is None:
                unavailable = rpc_error(fresh.info)
            time.sleep(0.05)
        overall = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert statuses and statuses[-1] == health_pb2.HealthCheckResponse.SERVING, fresh.log_tail()
    assert statuses[0] == health_pb2.HealthCheckResponse.NOT_SERVING, "the server answers before the model loads"
    assert overall == health_pb2.HealthCheckResponse.SERVING
    assert unavailable is not None
    assert unavailable.code() == grpc.StatusCode.UNAVAILABLE and error_reason(unavailable) == "MODEL_LOADING"
    info = fresh.info()
    assert info.model == DEMO_MODEL and info.is_demo_model
    models = fresh.service.log_path.parent / "models"
    assert (models / "imagineer-tiny-sd" / "model_index.json").is_file(), "the demo model is built on first start"
    job = fresh.start("a first image", seed=8000, steps=2)
    assert fresh.finish(job.id).state == COMPLETED


@pytest.mark.slow
def test_a_model_that_cannot_load_keeps_health_not_serving_and_says_why(extra_generator, tmp_path):
    missing = tmp_path / "no-such-model"
    broken = extra_generator(model_dir=missing, wait=False)
    deadline = time.monotonic() + 60
    while "could not be loaded" not in broken.service.logs():
        assert time.monotonic() < deadline, broken.log_tail()
        assert broken.service.process.poll() is None, broken.log_tail()
        time.sleep(0.1)
    with grpc.insecure_channel(broken.service.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    error = rpc_error(broken.info)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(error) != "MODEL_LOADING" and str(missing) in error.details(), (
        f"a client is told the model failed to load, not that it is still loading: {error_reason(error)}: "
        f"{error.details()}")


@pytest.mark.slow
def test_catalog_outage_fails_jobs_with_a_reason_and_references_as_unavailable(extra_generator):
    down = extra_generator(catalog_address=f"127.0.0.1:{free_port()}")
    job = down.start("a lonely fox", seed=8100, steps=2)
    final = down.finish(job.id)
    assert final.state == FAILED
    assert "catalog" in final.error_message.lower()
    assert final.images_done == 0

    error = rpc_error(down.start, "a fox", album_id="5")
    assert error.code() == grpc.StatusCode.UNAVAILABLE, "an outage is not the caller's mistake"
    error = rpc_error(down.start, "a fox", loras=[api.LoraSpec(artifact_id="5", weight=1)])
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (
        f"an outage is not a missing LoRA: got {error.code().name}: {error.details()}")


@pytest.mark.slow
def test_shutdown_fails_waiting_jobs_with_a_reason_their_watchers_receive(extra_generator):
    """Jobs live in memory: on SIGTERM the jobs that cannot finish fail "with a reason", which only helps if the
    clients watching them still get that last event before the server goes away."""
    doomed = extra_generator()
    running = doomed.start("busy at shutdown", seed=8200, steps=150, width=256, height=256)
    doomed.wait_for(running.id, "step")
    waiting = doomed.start("waiting at shutdown", seed=8201, steps=5)
    stream = doomed.watch(waiting.id, timeout=60)
    events = [next(stream)]
    assert events[0].HasField("queued")
    doomed.service.process.send_signal(signal.SIGTERM)
    try:
        try:
            events.extend(stream)
        except grpc.RpcError as error:
            pytest.fail(f"the watch stream broke off ({error.code().name}: {error.details()}) without a finished "
                        "event saying what became of the job")
        last = events[-1]
        assert last.HasField("finished") and last.finished.state == FAILED
        assert "shut down" in last.finished.reason
    finally:
        doomed.service.kill()


@pytest.mark.slow
def test_a_restarted_generator_reports_what_became_of_its_jobs(extra_generator, tmp_path):
    """Jobs are kept on local disk: after a crash the finished ones are still there, the unfinished ones FAILED with
    the reason (never silently gone, never half re-run), and the list keeps its newest-first order."""
    data_dir = tmp_path / "generator-data"
    first = extra_generator(data_dir=data_dir)
    done = first.complete("done before the crash", seed=8300, steps=2, image_count=2)
    older = first.start("cancelled second", seed=8301, **LONG)
    first.wait_for(older.id, "step")
    newer = first.start("cancelled first", seed=8302, steps=3)
    first.cancel(newer.id)
    first.cancel(older.id)
    assert first.finish(older.id).state == CANCELLED
    running = first.start("running at the crash", seed=8303, **LONG)
    first.wait_for(running.id, "step")
    waiting = first.start("waiting at the crash", seed=8304, steps=3)
    before = list(first.stub.ListGenerations(api.ListGenerationsRequest(), metadata=ADMIN_METADATA).jobs)
    assert [job.id for job in before] == [waiting.id, running.id, newer.id, older.id, done.id]
    first.service.kill()  # a crash: no chance to say goodbye

    second = extra_generator(data_dir=data_dir)
    kept = second.get(done.id)
    assert kept.state == COMPLETED and kept.album_id == done.album_id
    assert list(kept.images) == list(done.images) and kept.parameters == done.parameters
    assert kept.create_time == done.create_time
    assert second.get(older.id).state == CANCELLED and second.get(newer.id).state == CANCELLED
    for lost in (running, waiting):
        job = second.get(lost.id)
        assert job.state == FAILED and "restart" in job.error_message, job.error_message
        assert job.images_done == 0 and job.HasField("end_time")
        events = second.events(lost.id)
        assert events[-1].finished.state == FAILED and events[-1].finished.reason == job.error_message
        error = rpc_error(second.cancel, lost.id)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    fresh = second.complete("after the restart", seed=8305, steps=2)
    assert second.get(running.id).images_done == 0, "the interrupted job is not re-run behind the client's back"

    after = second.stub.ListGenerations(api.ListGenerationsRequest(), metadata=ADMIN_METADATA).jobs
    assert [job.id for job in after] == [fresh.id] + [job.id for job in before], "still newest first"

"""The work queue: bounded, fair, and batching only compatible work."""

from __future__ import annotations

import threading

import pytest

from imagineer_common.errors import FailedPrecondition, NotFound, ResourceExhausted
from imagineer_generator.jobs import CANCELLED, COMPLETED, QUEUED, Job, JobRegistry
from imagineer_generator.plan import GenerationPlan, ImageTask, LoraChoice, RenderSettings
from imagineer_generator.scheduler import WorkQueue

SMALL = RenderSettings(width=64, height=64, steps=4, guidance_scale=7.5, scheduler="euler")
LARGE = RenderSettings(width=128, height=128, steps=4, guidance_scale=7.5, scheduler="euler")
WITH_LORA = RenderSettings(width=64, height=64, steps=4, guidance_scale=7.5, scheduler="euler",
                           loras=(LoraChoice("7", 1.0),))


def make_job(images: int, settings: RenderSettings = SMALL, prompt: str = "p") -> Job:
    tasks = [ImageTask(index=i, prompt=prompt, negative_prompt="", seed=i) for i in range(images)]
    return Job(plan=GenerationPlan(settings=settings, tasks=tasks, base_model="m", album_id="1"))


def finish_batch(queue: WorkQueue, batch) -> None:
    for n, item in enumerate(batch.items):
        item.job.record_image(item.task.index, f"img-{item.job.id}-{n}")
    for job in batch.jobs:
        if not job.pending_tasks():
            job.finish(COMPLETED)
    queue.done(batch)


def test_full_queue_is_resource_exhausted():
    queue = WorkQueue(capacity=2, max_batch=4)
    queue.submit(make_job(1))
    queue.submit(make_job(1))
    with pytest.raises(ResourceExhausted) as caught:
        queue.submit(make_job(1))
    assert caught.value.reason == "QUEUE_FULL" and "2 jobs" in caught.value.message


def test_queued_jobs_learn_their_position_and_move_up():
    queue = WorkQueue(capacity=10, max_batch=1)
    jobs = [make_job(1, settings) for settings in (SMALL, LARGE, WITH_LORA)]
    for job in jobs:
        queue.submit(job)
    assert [job.queue_position for job in jobs] == [0, 1, 2]
    batch = queue.next_batch(timeout=1)
    batch.jobs[0].mark_started("1")
    finish_batch(queue, batch)
    assert [jobs[1].queue_position, jobs[2].queue_position] == [0, 1]
    assert [e.kind for e in jobs[2].log.after(0, 0)[0]] == ["queued", "queued"]


def test_compatible_jobs_share_a_batch_round_robin():
    queue = WorkQueue(capacity=10, max_batch=4)
    big, small, other = make_job(6), make_job(2), make_job(2, LARGE)
    for job in (big, small, other):
        queue.submit(job)
    batch = queue.next_batch(timeout=1)
    assert batch.settings == SMALL
    assert [(i.job.id, i.task.index) for i in batch.items] == [
        (big.id, 0), (small.id, 0), (big.id, 1), (small.id, 1)]


def test_incompatible_settings_never_mix():
    queue = WorkQueue(capacity=10, max_batch=8)
    first, lora = make_job(2), make_job(2, WITH_LORA)
    queue.submit(first)
    queue.submit(lora)
    batch = queue.next_batch(timeout=1)
    assert {i.job.id for i in batch.items} == {first.id}


def test_oldest_job_is_served_first_even_when_others_are_bigger():
    queue = WorkQueue(capacity=10, max_batch=2)
    old, new = make_job(1, LARGE), make_job(5)
    queue.submit(old)
    queue.submit(new)
    assert queue.next_batch(timeout=1).items[0].job is old


def test_work_in_flight_is_not_handed_out_twice_and_unfinished_work_comes_back():
    queue = WorkQueue(capacity=10, max_batch=2)
    job = make_job(3)
    queue.submit(job)
    first = queue.next_batch(timeout=1)
    second = queue.next_batch(timeout=1)
    assert [i.task.index for i in first.items] == [0, 1]
    assert [i.task.index for i in second.items] == [2]
    queue.done(first)  # nothing stored: the work must come back
    again = queue.next_batch(timeout=1)
    assert [i.task.index for i in again.items] == [0, 1]


def test_finished_jobs_leave_the_queue():
    queue = WorkQueue(capacity=1, max_batch=4)
    job = make_job(2)
    queue.submit(job)
    finish_batch(queue, queue.next_batch(timeout=1))
    assert len(queue) == 0
    queue.submit(make_job(1))  # capacity is free again


def test_next_batch_waits_for_work():
    queue = WorkQueue(capacity=10, max_batch=4)
    got = []
    waiter = threading.Thread(target=lambda: got.append(queue.next_batch(timeout=5)))
    waiter.start()
    queue.submit(make_job(1))
    waiter.join(5)
    assert got and got[0] is not None


def test_close_hands_back_waiting_jobs_and_refuses_new_ones():
    queue = WorkQueue(capacity=10, max_batch=4)
    job = make_job(1)
    queue.submit(job)
    assert queue.close() == [job]
    assert queue.next_batch(timeout=0.1) is None
    with pytest.raises(ResourceExhausted):
        queue.submit(make_job(1))


def test_events_are_ordered_and_joinable_late():
    job = make_job(2)
    job.mark_queued(0)
    job.mark_started("5")
    job.record_image(0, "a")
    job.record_image(1, "b")
    assert job.finish(COMPLETED)
    assert not job.finish(CANCELLED)  # a job ends once
    events, finished = job.log.after(2, timeout=0)
    assert finished and [e.kind for e in events] == ["image", "image", "finished"]
    assert [e.sequence for e in job.log.after(0, 0)[0]] == [1, 2, 3, 4, 5]
    assert events[0].snapshot.images_done == 1 and events[1].snapshot.images_done == 2
    assert job.log.after(0, 0)[0][0].snapshot.state == QUEUED


def test_registry_lookup_and_idempotency():
    registry = JobRegistry()
    job = make_job(1)
    assert registry.add(job, "key") is job
    assert registry.add(make_job(1), "key") is job
    assert registry.get(job.id) is job
    with pytest.raises(NotFound):
        registry.get("nope")


def test_registry_forgets_old_finished_jobs_only():
    registry = JobRegistry(keep_finished=2)
    jobs = [make_job(1) for _ in range(4)]
    for job in jobs:
        registry.add(job)
        job.finish(COMPLETED)
    live = make_job(1)
    registry.add(live)
    assert [j.id for j in registry.newest_first()] == [live.id, jobs[3].id, jobs[2].id]


def test_cancelling_a_finished_job_is_a_failed_precondition():
    from imagineer_generator.jobs import require_cancellable

    job = make_job(1)
    job.finish(COMPLETED)
    with pytest.raises(FailedPrecondition):
        require_cancellable(job)

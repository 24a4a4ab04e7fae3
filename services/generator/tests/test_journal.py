"""The job journal: no job silently vanishes across a restart."""

from __future__ import annotations

from imagineer_generator.jobs import COMPLETED, FAILED, Job
from imagineer_generator.journal import JobJournal
from imagineer_generator.plan import GenerationPlan, ImageTask, LoraChoice, RenderSettings

SETTINGS = RenderSettings(width=64, height=64, steps=4, guidance_scale=7.5, scheduler="euler",
                          loras=(LoraChoice("3", 0.5),))


def make_job(journal: JobJournal, images: int = 2) -> Job:
    tasks = [ImageTask(index=i, prompt="a fox", negative_prompt="", seed=10 + i) for i in range(images)]
    plan = GenerationPlan(settings=SETTINGS, tasks=tasks, base_model="imagineer/tiny-sd", album_name="Batch: a fox")
    return Job(plan=plan, listener=journal.record)


def test_unfinished_jobs_come_back_failed_with_the_reason(tmp_path):
    journal = JobJournal(tmp_path / "jobs.jsonl")
    done, running, queued = make_job(journal), make_job(journal), make_job(journal)
    for job in (done, running, queued):
        job.mark_queued(0)
    done.mark_started("1")
    done.record_image(0, "11")
    done.record_image(1, "12")
    done.finish(COMPLETED)
    running.mark_started("2")
    running.record_image(0, "21")
    running.emit("step", step=1, total_steps=4, image_index=1, batch_size=1)

    recovered = {job.id: job for job in JobJournal(tmp_path / "jobs.jsonl").recover()}

    assert recovered[done.id].state == COMPLETED
    assert [t.image_id for t in recovered[done.id].plan.tasks] == ["11", "12"]
    assert recovered[running.id].state == FAILED
    assert "restarted while this job was running (1 of 2 images" in recovered[running.id].error
    assert recovered[queued.id].state == FAILED and "was queued" in recovered[queued.id].error
    assert recovered[running.id].plan.settings == SETTINGS
    assert recovered[running.id].album_id == "2"
    # Watchers of a recovered job see it end.
    events, finished = recovered[queued.id].log.after(0, timeout=0)
    assert finished and events[-1].kind == "finished"


def test_recovery_compacts_the_file_and_survives_garbage(tmp_path):
    path = tmp_path / "jobs.jsonl"
    journal = JobJournal(path)
    job = make_job(journal)
    job.mark_queued(0)
    job.mark_queued(1)
    with open(path, "a") as handle:
        handle.write("{not json\n")
    jobs = JobJournal(path).recover()
    assert [j.id for j in jobs] == [job.id]
    assert len(path.read_text().splitlines()) == 1
    # A second restart keeps the failed job as it is.
    again = JobJournal(path).recover()
    assert again[0].state == FAILED and again[0].error == jobs[0].error


def test_missing_journal_means_no_jobs(tmp_path):
    assert JobJournal(tmp_path / "none" / "jobs.jsonl").recover() == []


def test_images_that_reached_the_catalog_after_the_last_journal_line_are_not_left_out(tmp_path):
    journal = JobJournal(tmp_path / "jobs.jsonl")
    done, running = make_job(journal, images=3), make_job(journal, images=3)
    for job in (done, running):
        job.mark_queued(0)
        job.mark_started("7")
    running.record_image(0, "31")
    done.record_image(0, "41")
    done.record_image(1, "42")
    done.record_image(2, "43")
    done.finish(COMPLETED)
    asked: list[str] = []

    def catalog_holds(job: Job) -> dict[int, str]:
        asked.append(job.id)
        return {0: "31", 1: "32", 7: "ignored: no such task"}  # image 1 was stored, the kill came before its line

    recovered = {job.id: job for job in JobJournal(tmp_path / "jobs.jsonl").recover(catalog_holds)}
    assert asked == [running.id]  # only unfinished jobs are checked
    assert [t.image_id for t in recovered[running.id].plan.tasks] == ["31", "32", ""]
    assert "(2 of 3 images had been stored)" in recovered[running.id].error
    assert [t.image_id for t in recovered[done.id].plan.tasks] == ["41", "42", "43"]

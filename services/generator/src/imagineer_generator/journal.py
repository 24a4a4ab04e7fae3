"""A small append-only record of jobs on local disk, so a restart never makes a job silently vanish.

It is not a database: one JSON line per state change (never per step). At
start-up the last line of each job is read back; jobs that had not ended are
marked failed with the reason, and the file is rewritten compactly.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from imagineer_generator.jobs import FAILED, TERMINAL, Job, now
from imagineer_generator.plan import GenerationPlan, ImageTask, LoraChoice, RenderSettings

log = logging.getLogger("imagineer.generator.journal")


def _record(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "request_id": job.request_id, "state": job.state, "album_id": job.album_id, "error": job.error,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "plan": asdict(job.plan),
    }


def _plan(data: dict[str, Any]) -> GenerationPlan:
    settings = dict(data["settings"])
    settings["loras"] = tuple(LoraChoice(**lora) for lora in settings.get("loras", ()))
    return GenerationPlan(
        settings=RenderSettings(**settings), tasks=[ImageTask(**task) for task in data["tasks"]],
        base_model=data["base_model"], album_id=data.get("album_id", ""), album_name=data.get("album_name", ""),
        template=data.get("template"), make_public=data.get("make_public", False))


def _job(data: dict[str, Any]) -> Job:
    job = Job(plan=_plan(data["plan"]), id=data["id"], request_id=data.get("request_id", ""))
    job.album_id = data.get("album_id", "")
    job.created_at = datetime.fromisoformat(data["created_at"])
    job.started_at = datetime.fromisoformat(data["started_at"]) if data.get("started_at") else None
    job.ended_at = datetime.fromisoformat(data["ended_at"]) if data.get("ended_at") else None
    job.state, job.error = data["state"], data.get("error", "")
    return job


class JobJournal:
    def __init__(self, path: Path, keep: int = 1000) -> None:
        self.path = path
        self._keep = keep
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, job: Job) -> None:
        line = json.dumps(_record(job), separators=(",", ":"))
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def recover(self, stored_images: Callable[[Job], dict[int, str]] | None = None) -> list[Job]:
        """Jobs of the previous run, oldest first; those that had not ended are failed with the reason.

        ``stored_images(job)`` tells which of an unfinished job's images reached the catalog (task index ->
        image id): a kill between an upload and its journal line must not leave a stored image out of the job.
        """
        latest: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    data = json.loads(line)
                    latest.pop(data["id"], None)  # keep insertion order = order of last change
                    latest[data["id"]] = data
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring unreadable line %d of %s", number, self.path)
        jobs = []
        for data in list(latest.values()):
            try:
                job = _job(data)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring unreadable job %s in %s", data.get("id"), self.path)
                continue
            if job.state not in TERMINAL:
                if stored_images is not None:
                    for index, image_id in stored_images(job).items():
                        if 0 <= index < len(job.plan.tasks):
                            job.plan.tasks[index].image_id = image_id
                done = sum(1 for task in job.plan.tasks if task.image_id)
                job.state, job.ended_at = FAILED, now()
                job.error = (f"the generator restarted while this job was {data['state']} "
                             f"({done} of {len(job.plan.tasks)} images had been stored); start it again")
                log.info("job %s failed by the restart", job.id)
            job.emit("finished", state=job.state, reason=job.error)
            jobs.append(job)
        jobs = sorted(jobs, key=lambda job: job.created_at)[-self._keep:]
        self._rewrite(jobs)
        return jobs

    def _rewrite(self, jobs: list[Job]) -> None:
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            for job in jobs:
                handle.write(json.dumps(_record(job), separators=(",", ":")) + "\n")
        os.replace(temporary, self.path)

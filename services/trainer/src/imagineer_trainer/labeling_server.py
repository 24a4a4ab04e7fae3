"""The LabelingService servicer: translate, call the domain (labeling.LabelingService), translate back; and the
small piece the trainer's app uses to build, serve and stop labeling."""

from __future__ import annotations

import logging

from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import labeling_service_pb2 as api
from imagineer.trainer.v1 import labeling_service_pb2_grpc as api_grpc
from imagineer_common.errors import Unavailable
from imagineer_common.eventlog import Event
from imagineer_common.paging import page_of
from imagineer_common.timestamps import timestamp_message
from imagineer_trainer.config import TrainerSettings
from imagineer_trainer.labeling import LabelingRequest, LabelingService
from imagineer_trainer.labeling_jobs import FAILED_IMAGE, LABELED, SKIPPED, LabelingSnapshot

log = logging.getLogger("imagineer.trainer.labeling")

LABELING_SERVICE_NAME = api.DESCRIPTOR.services_by_name["LabelingService"].full_name
STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in common_pb2.JobState.items() if value}
OUTCOMES = {LABELED: api.IMAGE_OUTCOME_LABELED, FAILED_IMAGE: api.IMAGE_OUTCOME_FAILED,
            SKIPPED: api.IMAGE_OUTCOME_SKIPPED}
RATINGS = {"": api.NSFW_RATING_UNSPECIFIED, "safe": api.NSFW_RATING_SAFE, "suggestive": api.NSFW_RATING_SUGGESTIVE,
           "adult": api.NSFW_RATING_ADULT, "explicit": api.NSFW_RATING_EXPLICIT}


def request_from_proto(message: api.StartLabelingRequest) -> LabelingRequest:
    kind = message.WhichOneof("target") or ""
    return LabelingRequest(target_kind=kind.removesuffix("_id"), target_id=getattr(message, kind) if kind else "",
                           labeler=message.labeler.strip().lower(), request_id=message.request_id)


def summary_message(job: LabelingSnapshot) -> api.LabelingSummary:
    return api.LabelingSummary(
        labeled=job.labeled, failed=job.failed, skipped=job.skipped,
        problems=[api.ImageProblem(image_id=p.image_id, outcome=OUTCOMES[p.outcome], reason=p.reason)
                  for p in job.problems])


def labeling_message(job: LabelingSnapshot) -> api.Labeling:
    request = api.StartLabelingRequest(labeler=job.labeler, request_id=job.request_id)
    setattr(request, f"{job.target_kind}_id", job.target_id)
    return api.Labeling(
        id=job.id, request=request, source_model=job.source_model, state=STATES[job.state],
        total_images=job.total_images, images_done=job.images_done, summary=summary_message(job),
        error_message=job.error, create_time=timestamp_message(job.created_at),
        start_time=timestamp_message(job.started_at), end_time=timestamp_message(job.ended_at))


def event_message(event: Event[LabelingSnapshot]) -> api.WatchLabelingResponse:
    message = api.WatchLabelingResponse(sequence=event.sequence, labeling=labeling_message(event.snapshot))
    data = event.data
    if event.kind == "queued":
        message.queued.queue_position = data["queue_position"]
    elif event.kind == "started":
        message.started.total_images = data["total_images"]
        message.started.images_done = data.get("images_done", 0)
    elif event.kind == "image":
        message.image.CopyFrom(api.ImageLabeledEvent(
            image_id=data["image_id"], index=data["index"], outcome=OUTCOMES[data["outcome"]], reason=data["reason"],
            caption=data.get("caption", ""), tags=data.get("tags", []), nsfw_rating=RATINGS[data.get("nsfw", "")],
            nsfw_flag_set=data.get("nsfw_flag_set", False), labels_replaced=data.get("labels_replaced", 0)))
    else:
        message.finished.CopyFrom(api.LabelingFinishedEvent(state=STATES[data["state"]], reason=data["reason"],
                                                            summary=summary_message(event.snapshot)))
    return message


class LabelingServicer(api_grpc.LabelingServiceServicer):
    def __init__(self, service: LabelingService | None = None, load_error: str = "") -> None:
        self.service = service
        self.load_error = load_error

    def _ready(self) -> LabelingService:
        if self.service is None:
            raise Unavailable(f"labeling could not start: {self.load_error}; see the trainer log",
                              reason="LABELING_UNAVAILABLE")
        return self.service

    def StartLabeling(self, request, context):
        return labeling_message(self._ready().start(request_from_proto(request)).snapshot())

    def GetLabeling(self, request, context):
        return labeling_message(self._ready().get(request.id).snapshot())

    def ListLabelings(self, request, context):
        jobs, token = page_of(self._ready().list(), request.page_size, request.page_token, key=lambda job: job.id)
        return api.ListLabelingsResponse(labelings=[labeling_message(job.snapshot()) for job in jobs],
                                         next_page_token=token)

    def CancelLabeling(self, request, context):
        return labeling_message(self._ready().cancel(request.id).snapshot())

    def WatchLabeling(self, request, context):
        for event in self._ready().watch(request.id, request.after_sequence, context.is_active):
            yield event_message(event)

    # --- what the trainer's app calls ------------------------------------------------------------------------------

    def register(self, server) -> None:
        api_grpc.add_LabelingServiceServicer_to_server(self, server)

    def stop(self, grace_seconds: float) -> None:
        if self.service is not None:
            self.service.stop(grace_seconds)

    def close(self) -> None:
        if self.service is not None:
            self.service.close()
            self.service.catalog.close()


def build_labeling(settings: TrainerSettings) -> LabelingServicer:
    """Labeling is ready at once (its model loads on first use); a broken record folder only disables it."""
    from imagineer_trainer.labeling_catalog import LabelingCatalog
    from imagineer_trainer.labeling_jobs import LabelingStore

    try:
        service = LabelingService(settings=settings.labeling,
                                  catalog=LabelingCatalog(settings.catalog_address, settings.catalog_token,
                                                          tls=settings.catalog_tls),
                                  store=LabelingStore(settings.labelings_dir))
        interrupted = service.recover()
    except Exception as error:
        log.exception("labeling could not start")
        return LabelingServicer(load_error=f"{type(error).__name__}: {error}")
    if interrupted:
        log.warning("%d labelings were interrupted by the last stop; they resume", interrupted)
    service.start_worker()
    log.info("labeling ready; labelers: %s (default %s)", ", ".join(settings.labeling.available()) or "none",
             settings.labeling.default or "none")
    return LabelingServicer(service)

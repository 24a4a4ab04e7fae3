"""The trainer's gRPC servicer: translate, call the domain (service.Trainer), translate back."""

from __future__ import annotations

from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import trainer_service_pb2 as api
from imagineer.trainer.v1 import trainer_service_pb2_grpc as api_grpc
from imagineer_common.errors import InvalidArgument, Unavailable
from imagineer_common.eventlog import Event
from imagineer_common.paging import page_of
from imagineer_common.timestamps import timestamp_message
from imagineer_trainer.request import TrainingRequest
from imagineer_trainer.runs import RunSnapshot
from imagineer_trainer.service import Trainer

SERVICE_NAME = api.DESCRIPTOR.services_by_name["TrainerService"].full_name
STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in common_pb2.JobState.items() if value}
CAPTION_SOURCES = {api.CAPTION_SOURCE_UNSPECIFIED: "default", api.CAPTION_SOURCE_LABELS: "labels",
                   api.CAPTION_SOURCE_PROMPT: "prompt"}


def request_from_proto(message: api.StartTrainingRequest) -> TrainingRequest:
    if message.caption_source not in CAPTION_SOURCES:
        raise InvalidArgument.for_field("caption_source", f"{message.caption_source} is not a known value")
    return TrainingRequest(
        album_ids=list(message.album_ids), name=message.name, base_model=message.base_model, rank=message.rank,
        alpha=message.alpha, learning_rate=message.learning_rate, lr_scheduler=message.lr_scheduler,
        warmup_steps=message.warmup_steps, steps=message.steps, batch_size=message.batch_size,
        resolution=message.resolution, random_crop=message.random_crop,
        seed=message.seed if message.HasField("seed") else None,
        caption_source=CAPTION_SOURCES[message.caption_source], trigger_word=message.trigger_word,
        checkpoint_interval=message.checkpoint_interval, validation_prompts=list(message.validation_prompts),
        train_text_encoder=message.train_text_encoder, request_id=message.request_id)


def request_message(request: TrainingRequest) -> api.StartTrainingRequest:
    source = {text: number for number, text in CAPTION_SOURCES.items()}[request.caption_source]
    message = api.StartTrainingRequest(
        album_ids=request.album_ids, name=request.name, base_model=request.base_model, rank=request.rank,
        alpha=request.alpha, learning_rate=request.learning_rate, lr_scheduler=request.lr_scheduler,
        warmup_steps=request.warmup_steps, steps=request.steps, batch_size=request.batch_size,
        resolution=request.resolution, random_crop=request.random_crop, caption_source=source,
        trigger_word=request.trigger_word, checkpoint_interval=request.checkpoint_interval,
        validation_prompts=request.validation_prompts, train_text_encoder=request.train_text_encoder,
        request_id=request.request_id)
    if request.seed is not None:
        message.seed = request.seed
    return message


def training_message(run: RunSnapshot) -> api.Training:
    return api.Training(
        id=run.id, request=request_message(run.request), state=STATES[run.state], current_step=run.current_step,
        total_steps=run.total_steps, loss=run.loss, image_count=run.image_count, artifact_id=run.artifact_id,
        validation_album_id=run.validation_album_id, error_message=run.error,
        create_time=timestamp_message(run.created_at), start_time=timestamp_message(run.started_at),
        end_time=timestamp_message(run.ended_at))


def event_message(event: Event[RunSnapshot]) -> api.WatchTrainingResponse | None:
    message = api.WatchTrainingResponse(sequence=event.sequence, training=training_message(event.snapshot))
    data = event.data
    if event.kind == "queued":
        message.queued.queue_position = data["queue_position"]
    elif event.kind == "started":
        message.started.from_step = data["from_step"]
    elif event.kind == "step":
        message.step.CopyFrom(api.StepEvent(**data))
    elif event.kind == "checkpoint":
        message.checkpoint.step = data["step"]
    elif event.kind == "validation":
        message.validation.CopyFrom(api.ValidationEvent(step=data["step"], image_ids=data["image_ids"]))
    elif event.kind == "finished":
        message.finished.CopyFrom(api.FinishedEvent(state=STATES[data["state"]], reason=data["reason"]))
    else:
        return None  # internal bookkeeping events (the artifact is on the training itself)
    return message


class TrainerServicer(api_grpc.TrainerServiceServicer):
    def __init__(self) -> None:
        self.trainer: Trainer | None = None  # set once the model has loaded
        self.load_error = ""

    def _ready(self) -> Trainer:
        if self.load_error:
            raise Unavailable(f"the base model could not be loaded: {self.load_error}; see the trainer log",
                              reason="MODEL_LOAD_FAILED")
        if self.trainer is None:
            raise Unavailable("the trainer is still starting", reason="STARTING")
        return self.trainer

    def StartTraining(self, request, context):
        return training_message(self._ready().start(request_from_proto(request)).snapshot())

    def GetTraining(self, request, context):
        return training_message(self._ready().get(request.id).snapshot())

    def ListTrainings(self, request, context):
        runs, token = page_of(self._ready().list(), request.page_size, request.page_token, key=lambda run: run.id)
        return api.ListTrainingsResponse(trainings=[training_message(run.snapshot()) for run in runs],
                                         next_page_token=token)

    def CancelTraining(self, request, context):
        return training_message(self._ready().cancel(request.id).snapshot())

    def WatchTraining(self, request, context):
        for event in self._ready().watch(request.id, request.after_sequence, context.is_active):
            message = event_message(event)
            if message is not None:
                yield message

"""The generator's gRPC servicer: translate, call the domain (service.Generator), translate back."""

from __future__ import annotations

from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as api
from imagineer.generator.v1 import generator_service_pb2_grpc as api_grpc
from imagineer_common.errors import InvalidArgument, Unavailable
from imagineer_common.paging import page_of
from imagineer_common.timestamps import timestamp_message
from imagineer_generator.jobs import JobEvent, JobSnapshot
from imagineer_generator.plan import GenerationRequest, LoraChoice, TemplateSpec
from imagineer_generator.service import Generator

SERVICE_NAME = api.DESCRIPTOR.services_by_name["GeneratorService"].full_name
STATES = {"queued": common_pb2.JOB_STATE_QUEUED, "running": common_pb2.JOB_STATE_RUNNING,
          "completed": common_pb2.JOB_STATE_COMPLETED, "failed": common_pb2.JOB_STATE_FAILED,
          "cancelled": common_pb2.JOB_STATE_CANCELLED}


def request_from_proto(message: api.StartGenerationRequest) -> GenerationRequest:
    params = message.parameters
    template = None
    if message.HasField("template"):
        rows_kind = message.template.WhichOneof("rows")
        template = TemplateSpec(
            template=message.template.template,
            csv=message.template.csv if rows_kind == "csv" else None,
            rows=[dict(row.values) for row in message.template.structured.rows] if rows_kind == "structured" else None)
    if params.loras:
        raise InvalidArgument.for_field("parameters.loras", "use the request's `loras` field (artifact id + weight)")
    return GenerationRequest(
        prompt=params.prompt, negative_prompt=params.negative_prompt,
        seed=params.seed if params.HasField("seed") else None, steps=params.steps,
        guidance_scale=params.guidance_scale, scheduler=params.scheduler, width=params.width, height=params.height,
        base_model=params.base_model,
        loras=[LoraChoice(artifact_id=lora.artifact_id, weight=lora.weight) for lora in message.loras],
        image_count=message.image_count, album_id=message.album_id, album_name=message.album_name,
        template=template, make_public=message.make_public, request_id=message.request_id)


def job_message(job: JobSnapshot) -> api.GenerationJob:
    settings = job.plan.settings
    first = job.plan.tasks[0]
    return api.GenerationJob(
        id=job.id, state=STATES[job.state],
        parameters=common_pb2.GenerationParameters(
            prompt=job.plan.template or first.prompt, negative_prompt=first.negative_prompt, seed=first.seed,
            steps=settings.steps, guidance_scale=settings.guidance_scale, scheduler=settings.scheduler,
            width=settings.width, height=settings.height, base_model=job.plan.base_model),
        loras=[api.LoraSpec(artifact_id=lora.artifact_id, weight=lora.weight) for lora in settings.loras],
        images=[api.PlannedImage(prompt=task.prompt, seed=task.seed, image_id=task.image_id)
                for task in job.plan.tasks],
        album_id=job.album_id, images_done=job.images_done, queue_position=job.queue_position,
        error_message=job.error, create_time=timestamp_message(job.created_at),
        start_time=timestamp_message(job.started_at), end_time=timestamp_message(job.ended_at))


def event_message(event: JobEvent) -> api.WatchGenerationResponse:
    message = api.WatchGenerationResponse(sequence=event.sequence, job=job_message(event.snapshot))
    data = event.data
    if event.kind == "queued":
        message.queued.queue_position = data["queue_position"]
    elif event.kind == "started":
        message.started.album_id = data["album_id"]
    elif event.kind == "step":
        message.step.CopyFrom(api.StepEvent(step=data["step"], total_steps=data["total_steps"],
                                            image_index=data["image_index"], batch_size=data["batch_size"]))
    elif event.kind == "image":
        message.image.CopyFrom(api.ImageEvent(image_index=data["image_index"], image_id=data["image_id"],
                                              seed=data["seed"]))
    else:
        message.finished.CopyFrom(api.FinishedEvent(state=STATES[data["state"]], reason=data["reason"]))
    return message


class GeneratorServicer(api_grpc.GeneratorServiceServicer):
    def __init__(self) -> None:
        self.generator: Generator | None = None  # set once the model has loaded
        self.load_error = ""  # set when it could not be loaded

    def _ready(self) -> Generator:
        if self.load_error:
            raise Unavailable(f"the model could not be loaded: {self.load_error}; see the generator log",
                              reason="MODEL_LOAD_FAILED")
        if self.generator is None:
            raise Unavailable("the generator is still loading its model", reason="MODEL_LOADING")
        return self.generator

    def StartGeneration(self, request, context):
        return job_message(self._ready().start(request_from_proto(request)).snapshot())

    def GetGeneration(self, request, context):
        return job_message(self._ready().get(request.id).snapshot())

    def ListGenerations(self, request, context):
        jobs, token = page_of(self._ready().list(), request.page_size, request.page_token, key=lambda job: job.id)
        return api.ListGenerationsResponse(jobs=[job_message(job.snapshot()) for job in jobs], next_page_token=token)

    def CancelGeneration(self, request, context):
        return job_message(self._ready().cancel(request.id).snapshot())

    def WatchGeneration(self, request, context):
        for event in self._ready().watch(request.id, request.after_sequence, context.is_active):
            yield event_message(event)

    def GetGeneratorInfo(self, request, context):
        generator = self._ready()
        info = generator.info
        return api.GeneratorInfo(model=info.name, is_demo_model=info.is_demo, device=info.device,
                                 schedulers=list(info.schedulers), default_size=info.default_size,
                                 queue_length=len(generator.queue), queue_capacity=generator.queue.capacity)

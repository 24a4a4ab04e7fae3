"""Thin wrappers around the generated stubs for the common tasks; everything goes over gRPC."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from imagineer.catalog.v1 import catalog_service_pb2 as catalog_api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as generator_api
from imagineer.generator.v1 import generator_service_pb2_grpc as generator_grpc
from imagineer.trainer.v1 import trainer_service_pb2 as trainer_api
from imagineer.trainer.v1 import trainer_service_pb2_grpc as trainer_grpc
from imagineer_common.tls import ClientTls, client_tls_from_env, open_channel

DEFAULT_CATALOG = "127.0.0.1:50051"
DEFAULT_GENERATOR = "127.0.0.1:50052"
DEFAULT_TRAINER = "127.0.0.1:50053"
DEVELOPMENT_TOKEN = "imagineer-dev-token"


class ImagineerError(Exception):
    """A call failed. ``bad_input`` tells the caller's mistakes from server faults."""

    BAD_INPUT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                 grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
                                 grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
                                 grpc.StatusCode.PERMISSION_DENIED})

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def bad_input(self) -> bool:
        return self.code in self.BAD_INPUT_CODES

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> ImagineerError:
        return cls(f"{error.code().name}: {error.details()}", error.code())


@dataclass(frozen=True)
class Lora:
    artifact_id: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Lora:
        """``ID`` or ``ID:WEIGHT``."""
        artifact_id, _, weight = text.partition(":")
        try:
            return cls(artifact_id.strip(), float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(f"bad LoRA {text!r}: expected ID or ID:WEIGHT") from None


class Imagineer:
    """Connections to the catalog and the generator with the admin token attached to every call."""

    def __init__(self, *, catalog: str | None = None, generator: str | None = None, trainer: str | None = None,
                 token: str | None = None, tls: ClientTls | None = None) -> None:
        # TLS from IMAGINEER_TLS_CA_FILE (+ IMAGINEER_TLS_CERT_FILE/_KEY_FILE for client certificates) unless given.
        tls = tls or client_tls_from_env("IMAGINEER_")
        # Addresses may be dns:///name:port naming a headless Service: catalog calls then go round-robin over its
        # replicas; generator and trainer calls stay on one replica per client (it holds the jobs it started).
        self._catalog_channel = open_channel(catalog or os.environ.get("IMAGINEER_CATALOG_ADDRESS", DEFAULT_CATALOG),
                                             tls)
        self._generator_channel = open_channel(generator or os.environ.get("IMAGINEER_GENERATOR_ADDRESS",
                                                                           DEFAULT_GENERATOR), tls, per_connection=True)
        self._trainer_channel = open_channel(trainer or os.environ.get("IMAGINEER_TRAINER_ADDRESS", DEFAULT_TRAINER),
                                             tls, per_connection=True)
        self.catalog = catalog_grpc.CatalogServiceStub(self._catalog_channel)
        self.generator = generator_grpc.GeneratorServiceStub(self._generator_channel)
        self.trainer = trainer_grpc.TrainerServiceStub(self._trainer_channel)
        self.metadata = (("authorization", f"Bearer {token or os.environ.get('IMAGINEER_TOKEN', DEVELOPMENT_TOKEN)}"),)

    def __enter__(self) -> Imagineer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._catalog_channel.close()
        self._generator_channel.close()
        self._trainer_channel.close()

    def generate(self, prompt: str, *, negative_prompt: str = "", seed: int | None = None, steps: int = 0,
                 guidance_scale: float = 0.0, scheduler: str = "", width: int = 0, height: int = 0,
                 images: int = 1, loras: list[Lora] | None = None, album_id: str = "",
                 make_public: bool = False) -> generator_api.GenerationJob:
        parameters = common_pb2.GenerationParameters(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale,
            scheduler=scheduler, width=width, height=height)
        if seed is not None:
            parameters.seed = seed
        request = generator_api.StartGenerationRequest(
            parameters=parameters, image_count=images, album_id=album_id, make_public=make_public,
            loras=[generator_api.LoraSpec(artifact_id=lora.artifact_id, weight=lora.weight) for lora in loras or []])
        try:
            return self.generator.StartGeneration(request, metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def watch(self, job_id: str) -> Iterator[generator_api.WatchGenerationResponse]:
        try:
            yield from self.generator.WatchGeneration(generator_api.WatchGenerationRequest(id=job_id),
                                                      metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def generate_and_wait(self, prompt: str, **options) -> generator_api.GenerationJob:
        job = self.generate(prompt, **options)
        last = job
        for event in self.watch(job.id):
            last = event.job
        return last

    def cancel(self, job_id: str) -> generator_api.GenerationJob:
        try:
            return self.generator.CancelGeneration(generator_api.CancelGenerationRequest(id=job_id),
                                                   metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def list_generations(self, page_size: int = 20) -> list[generator_api.GenerationJob]:
        try:
            reply = self.generator.ListGenerations(generator_api.ListGenerationsRequest(page_size=page_size),
                                                   metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None
        return list(reply.jobs)

    def download_image(self, image_id: str) -> tuple[str, bytes]:
        """The image's file name and bytes."""
        parts: list[bytes] = []
        name = f"{image_id}.png"
        try:
            for message in self.catalog.DownloadImage(catalog_api.DownloadImageRequest(id=image_id),
                                                      metadata=self.metadata):
                if message.WhichOneof("payload") == "info":
                    name = message.info.filename or name
                else:
                    parts.append(message.chunk_data)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None
        return name, b"".join(parts)

    def _call(self, method, request):
        try:
            return method(request, metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def train(self, album_ids: list[str], **options) -> trainer_api.Training:
        """Starts a LoRA training; options are StartTrainingRequest fields (steps, rank, learning_rate...)."""
        return self._call(self.trainer.StartTraining, trainer_api.StartTrainingRequest(album_ids=album_ids, **options))

    def watch_training(self, training_id: str) -> Iterator[trainer_api.WatchTrainingResponse]:
        try:
            yield from self.trainer.WatchTraining(trainer_api.WatchTrainingRequest(id=training_id),
                                                  metadata=self.metadata)
        except grpc.RpcError as error:
            raise ImagineerError.from_rpc(error) from None

    def train_and_wait(self, album_ids: list[str], **options) -> trainer_api.Training:
        training = self.train(album_ids, **options)
        for event in self.watch_training(training.id):
            training = event.training
        return training

    def get_training(self, training_id: str) -> trainer_api.Training:
        return self._call(self.trainer.GetTraining, trainer_api.GetTrainingRequest(id=training_id))

    def list_trainings(self, page_size: int = 20) -> list[trainer_api.Training]:
        return list(self._call(self.trainer.ListTrainings, trainer_api.ListTrainingsRequest(page_size=page_size))
                    .trainings)

    def cancel_training(self, training_id: str) -> trainer_api.Training:
        return self._call(self.trainer.CancelTraining, trainer_api.CancelTrainingRequest(id=training_id))

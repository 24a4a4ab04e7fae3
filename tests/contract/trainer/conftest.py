"""Trainer contract-test fixtures: one catalog (SQLite) and one trainer process per test module, stubs, and small
client helpers to make training data in the catalog and to drive trainings the way a client would.

Torch on this CPU: two processes computing with torch at the same time slow each other down a hundredfold (the
OpenMP workers spin). So nothing here imports torch in the test process: the demo model is built once per session
in a subprocess, and every trainer (and generator) loads that folder (``IMAGINEER_TRAINER_MODEL``) instead of
building its own. A test that starts another trainer makes sure the module's trainer is idle first, and every test
leaves the trainers it used idle (``TrainerClient.cancel_all``).

Trainings are small: the demo model, 64 px, batch 2, a few to a few dozen steps (about 0.05 s a step); "long"
trainings (2000 steps) are always cancelled.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from harness.catalog_client import download_artifact, download_image, upload_image
from harness.images import png_bytes
from harness.processes import ADMIN_METADATA, ServiceProcess, trainer_process

from imagineer.catalog.v1 import catalog_service_pb2 as cat_api
from imagineer.catalog.v1 import catalog_service_pb2_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import trainer_service_pb2 as api
from imagineer.trainer.v1 import trainer_service_pb2_grpc

COMPLETED = common_pb2.JOB_STATE_COMPLETED
ENDED = (COMPLETED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED, common_pb2.JOB_STATE_INTERRUPTED)
# The quick settings of the tests' trainings: the demo model's own size, two images a step.
FAST = {"batch_size": 2, "resolution": 64}

_image_seeds = itertools.count(1000)  # every uploaded image differs (the catalog stores identical bytes once)


def state_name(value: int) -> str:
    return common_pb2.JobState.Name(value)


def event_kind(event: api.WatchTrainingResponse) -> str:
    return event.WhichOneof("event")


# --- the demo model, built once per session --------------------------------------------------------------------------




# --- processes -----------------------------------------------------------------------------------------------------










def start_trainer(data_dir: Path, catalog_address: str, model_dir: Path, *, wait: bool = True,
                  **env: str) -> ServiceProcess:
    """A trainer process on ``data_dir`` that loads the prebuilt demo model."""
    return trainer_process(data_dir, catalog_address, IMAGINEER_TRAINER_MODEL=str(model_dir), **env).start(
        wait=wait, timeout=120)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, catalog, demo_model_dir) -> Iterator[ServiceProcess]:
    """One trainer process per test module."""
    service = start_trainer(tmp_path_factory.mktemp("trainer"), catalog.address, demo_model_dir)
    yield service
    with grpc.insecure_channel(service.address) as channel:
        TrainerClient(trainer_service_pb2_grpc.TrainerServiceStub(channel), service).cancel_all()
    service.stop()


@pytest.fixture(scope="module")
def trainer_channel(trainer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(trainer.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def trainer_stub(trainer_channel) -> trainer_service_pb2_grpc.TrainerServiceStub:
    return trainer_service_pb2_grpc.TrainerServiceStub(trainer_channel)


# --- client helpers --------------------------------------------------------------------------------------------------

def training_request(album_ids: list[str] | str, **fields) -> api.StartTrainingRequest:
    """A StartTrainingRequest with the tests' quick defaults (batch 2, 64 px); ``fields`` are its other fields."""
    if isinstance(album_ids, str):
        album_ids = [album_ids]
    return api.StartTrainingRequest(album_ids=album_ids, **{**FAST, **fields})


@dataclass
class TrainerClient:
    """Drives one trainer through its stub, as a client would, with deadlines so no test hangs."""

    stub: trainer_service_pb2_grpc.TrainerServiceStub
    service: ServiceProcess
    metadata: tuple = ADMIN_METADATA

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.service.logs().splitlines()[-lines:])

    def start(self, album_ids: list[str] | str | None = None, *, request: api.StartTrainingRequest | None = None,
              **fields) -> api.Training:
        request = request or training_request(album_ids or [], **fields)
        return self.stub.StartTraining(request, metadata=self.metadata, timeout=30)

    def get(self, training_id: str) -> api.Training:
        return self.stub.GetTraining(api.GetTrainingRequest(id=training_id), metadata=self.metadata, timeout=10)

    def list(self, page_size: int = 0, page_token: str = "") -> api.ListTrainingsResponse:
        return self.stub.ListTrainings(api.ListTrainingsRequest(page_size=page_size, page_token=page_token),
                                       metadata=self.metadata, timeout=10)

    def count(self) -> int:
        return len(self.list(page_size=500).trainings)

    def cancel(self, training_id: str) -> api.Training:
        return self.stub.CancelTraining(api.CancelTrainingRequest(id=training_id), metadata=self.metadata,
                                        timeout=10)

    def watch(self, training_id: str, after_sequence: int = 0, timeout: float = 120):
        return self.stub.WatchTraining(api.WatchTrainingRequest(id=training_id, after_sequence=after_sequence),
                                       metadata=self.metadata, timeout=timeout)

    def events(self, training_id: str, after_sequence: int = 0, timeout: float = 120) -> list[
            api.WatchTrainingResponse]:
        """Every event of the training (after ``after_sequence``) until it ends."""
        try:
            return list(self.watch(training_id, after_sequence, timeout))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AssertionError(f"training {training_id} did not end within {timeout} s; trainer log:\n"
                                     f"{self.log_tail()}") from None
            raise

    def wait_for(self, training_id: str, matches: Callable[[api.WatchTrainingResponse], bool],
                 timeout: float = 60) -> api.WatchTrainingResponse:
        """The first event of the training that ``matches``; the stream is closed as soon as it is seen."""
        stream = self.watch(training_id, timeout=timeout)
        try:
            for event in stream:
                if matches(event):
                    return event
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AssertionError(f"no such event of training {training_id} within {timeout} s; trainer log:\n"
                                     f"{self.log_tail()}") from None
            raise
        finally:
            stream.cancel()
        raise AssertionError(f"training {training_id} ended without such an event; trainer log:\n{self.log_tail()}")

    def wait_for_step(self, training_id: str, step: int, timeout: float = 60) -> api.WatchTrainingResponse:
        return self.wait_for(training_id, lambda e: event_kind(e) == "step" and e.step.step >= step, timeout)

    def finish(self, training_id: str, timeout: float = 120) -> api.Training:
        """The training once it has ended."""
        events = self.events(training_id, timeout=timeout)
        assert events and event_kind(events[-1]) == "finished", f"stream of training {training_id} ended early"
        return events[-1].training

    def run(self, album_ids: list[str] | str | None = None, **fields) -> tuple[api.Training,
                                                                            list[api.WatchTrainingResponse]]:
        """Starts a training and waits for it to end; returns the final training and all its events."""
        training = self.start(album_ids, **fields)
        events = self.events(training.id)
        assert events and event_kind(events[-1]) == "finished", f"stream of training {training.id} ended early"
        return events[-1].training, events

    def complete(self, album_ids: list[str] | str | None = None, **fields) -> tuple[
            api.Training, list[api.WatchTrainingResponse]]:
        """Starts a training and checks that it completes."""
        training, events = self.run(album_ids, **fields)
        assert training.state == COMPLETED, (
            f"training ended {state_name(training.state)}: {training.error_message}\n{self.log_tail()}")
        return training, events

    def cancel_all(self) -> None:
        """Cancels every training still waiting or running and waits for them to end (the next test must find
        the CPU free)."""
        try:
            trainings = self.list(page_size=500).trainings
        except grpc.RpcError:
            return
        unfinished = [training for training in trainings if training.state not in ENDED]
        for training in unfinished:
            try:
                self.cancel(training.id)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
        for training in unfinished:
            self.finish(training.id, timeout=60)


@dataclass
class CatalogClient:
    """What the tests put into the catalog (training data) and read back from it (runs, artifacts, images)."""

    stub: catalog_service_pb2_grpc.CatalogServiceStub
    metadata: tuple = ADMIN_METADATA

    def create_album(self, name: str = "training set") -> res.Album:
        return self.stub.CreateAlbum(cat_api.CreateAlbumRequest(album=res.Album(name=name)), metadata=self.metadata,
                                     timeout=10)

    def upload(self, album_id: str = "", prompt: str = "", size: int = 64) -> res.Image:
        """A new (never seen) noise image, in ``album_id`` when given, generated from ``prompt`` when given."""
        generation = common_pb2.GenerationParameters(prompt=prompt) if prompt else None
        reply = upload_image(self.stub, png_bytes(size, size, seed=next(_image_seeds)), self.metadata,
                             filename="train.png", album_id=album_id, generation=generation)
        assert not reply.already_existed
        return reply.image

    def label(self, image_id: str, text: str, label_type: int = res.LABEL_TYPE_CAPTION) -> res.Label:
        return self.stub.CreateLabel(cat_api.CreateLabelRequest(
            image_id=image_id, label=res.Label(text=text, label_type=label_type)), metadata=self.metadata, timeout=10)

    def training_album(self, count: int = 4, *, captions: bool = True, prompts: bool = False,
                       name: str = "training set") -> res.Album:
        """An album of ``count`` images, each with a caption label and/or a generation prompt (or neither)."""
        album = self.create_album(name)
        for index in range(count):
            image = self.upload(album.id, prompt=f"a painting of a red fox, number {index}" if prompts else "")
            if captions:
                self.label(image.id, f"a photo of a small cat, number {index}")
        return album

    def album_image_ids(self, album_id: str) -> list[str]:
        reply = self.stub.ListAlbumImages(cat_api.ListAlbumImagesRequest(album_id=album_id, page_size=500),
                                          metadata=self.metadata, timeout=10)
        return [entry.image.id for entry in reply.album_images]

    def image(self, image_id: str) -> res.Image:
        return self.stub.GetImage(cat_api.GetImageRequest(id=image_id), metadata=self.metadata, timeout=10)

    def image_bytes(self, image_id: str) -> bytes:
        info, data = download_image(self.stub, image_id, self.metadata)
        assert info is not None and info.size_bytes == len(data)
        return data

    def training_run(self, run_id: str) -> res.TrainingRun:
        return self.stub.GetTrainingRun(cat_api.GetTrainingRunRequest(id=run_id), metadata=self.metadata, timeout=10)

    def training_runs(self, states: tuple[int, ...] = ()) -> list[res.TrainingRun]:
        runs: list[res.TrainingRun] = []
        token = ""
        while True:
            reply = self.stub.ListTrainingRuns(cat_api.ListTrainingRunsRequest(
                page_size=500, page_token=token, states=list(states)), metadata=self.metadata, timeout=10)
            runs.extend(reply.training_runs)
            token = reply.next_page_token
            if not token:
                return runs

    def training_run_count(self) -> int:
        return len(self.training_runs())

    def wait_for_run(self, run_id: str, matches: Callable[[res.TrainingRun], bool],
                     timeout: float = 30) -> res.TrainingRun:
        """The catalog's record of the run once it ``matches`` (the trainer updates it every couple of seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.training_run(run_id)
            if matches(run) or time.monotonic() > deadline:
                return run
            time.sleep(0.2)

    def create_training_run(self, run: res.TrainingRun) -> res.TrainingRun:
        return self.stub.CreateTrainingRun(cat_api.CreateTrainingRunRequest(training_run=run),
                                           metadata=self.metadata, timeout=10)

    def set_run_state(self, run_id: str, state: int) -> res.TrainingRun:
        from google.protobuf import field_mask_pb2

        return self.stub.UpdateTrainingRun(cat_api.UpdateTrainingRunRequest(
            training_run=res.TrainingRun(id=run_id, state=state),
            update_mask=field_mask_pb2.FieldMask(paths=["state"])), metadata=self.metadata, timeout=10)

    def artifact(self, artifact_id: str) -> res.Artifact:
        return self.stub.GetArtifact(cat_api.GetArtifactRequest(id=artifact_id), metadata=self.metadata, timeout=10)

    def artifact_bytes(self, artifact_id: str) -> bytes:
        info, data = download_artifact(self.stub, artifact_id, self.metadata)
        assert info is not None and info.size_bytes == len(data)
        return data

    def artifacts_of_run(self, run_id: str) -> list[res.Artifact]:
        reply = self.stub.ListArtifacts(cat_api.ListArtifactsRequest(training_run_id=run_id, page_size=500),
                                        metadata=self.metadata, timeout=10)
        return list(reply.artifacts)


@pytest.fixture(scope="module")
def trn(trainer_stub, trainer) -> TrainerClient:
    """The module trainer's client helper."""
    return TrainerClient(trainer_stub, trainer)


@pytest.fixture(scope="module")
def cat(catalog_stub) -> CatalogClient:
    """The module catalog's client helper."""
    return CatalogClient(catalog_stub)


@pytest.fixture(scope="module")
def album(cat) -> res.Album:
    """The module's training album: four captioned images."""
    return cat.training_album(4, name="four captioned images")


@pytest.fixture(autouse=True)
def _leave_the_trainer_idle(request) -> Iterator[None]:
    """After each test, cancels what it left running, so one failure does not spill into the next test."""
    yield
    if "trn" in request.fixturenames:
        request.getfixturevalue("trn").cancel_all()


class TrainerFleet:
    """Trainers of a test or module of their own against the module catalog, each on its own data dir unless told."""

    def __init__(self, tmp_path_factory, catalog_address: str, model_dir: Path) -> None:
        self._tmp = tmp_path_factory
        self._catalog_address = catalog_address
        self._model_dir = model_dir
        self._started: list[tuple[ServiceProcess, grpc.Channel]] = []

    def start(self, data_dir: Path | None = None, **env: str) -> TrainerClient:
        service = start_trainer(data_dir or self._tmp.mktemp("trainer"), self._catalog_address, self._model_dir,
                                **env)
        channel = grpc.insecure_channel(service.address)
        self._started.append((service, channel))
        return TrainerClient(trainer_service_pb2_grpc.TrainerServiceStub(channel), service)

    def stop_all(self) -> None:
        for service, channel in self._started:
            if service.process is not None and service.process.poll() is None:
                TrainerClient(trainer_service_pb2_grpc.TrainerServiceStub(channel), service).cancel_all()
            channel.close()
            service.stop()
        self._started.clear()


@pytest.fixture
def trainers(tmp_path_factory, catalog, demo_model_dir) -> Iterator[Callable[..., TrainerClient]]:
    """Starts trainers of the test's own (``trainers(data_dir=None, **env)`` -> TrainerClient) against the module
    catalog; those still running are made idle and stopped at the end of the test. Use them only while no other
    trainer is busy."""
    fleet = TrainerFleet(tmp_path_factory, catalog.address, demo_model_dir)
    yield fleet.start
    fleet.stop_all()


@pytest.fixture(scope="module")
def module_trainers(tmp_path_factory, catalog, demo_model_dir) -> Iterator[Callable[..., TrainerClient]]:
    """As ``trainers``, for module fixtures: they stop at the end of the module (or when the caller stops them)."""
    fleet = TrainerFleet(tmp_path_factory, catalog.address, demo_model_dir)
    yield fleet.start
    fleet.stop_all()

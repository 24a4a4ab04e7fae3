"""Generator contract-test fixtures: one catalog (SQLite) and one generator process per test module, stubs and
small client helpers to drive them, and the heavy files (the demo model, LoRA weights) built once per session.

Torch on this CPU: two processes computing with torch at the same time slow each other down a hundredfold (the
OpenMP workers spin). So nothing here imports torch in the test process; the demo model and the LoRA files are
built by ``build_fixtures.py`` in a subprocess, before the generators that use them start, and a test that starts
a second generator makes sure the first one is idle. Every generator loads the same prebuilt demo model
(``IMAGINEER_GENERATOR_MODEL``), except the one of the health test, which builds its own on start-up as a
first-time user's would.

A test module can set ``GENERATOR_ENV = {...}`` (``IMAGINEER_GENERATOR_*`` variables) for its generator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from harness.catalog_client import artifact_requests, download_image
from harness.processes import ADMIN_METADATA, ServiceProcess, generator_process

from imagineer.catalog.v1 import catalog_service_pb2 as cat_api
from imagineer.catalog.v1 import catalog_service_pb2_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as gen_api
from imagineer.generator.v1 import generator_service_pb2_grpc

DEMO_MODEL_NAME = "imagineer/tiny-sd"
BUILD_SCRIPT = Path(__file__).with_name("build_fixtures.py")
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
TERMINAL = (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)
# The defaults of the generation requests the tests make: small and quick (64x64, 4 steps, about 0.1 s an image).
FAST = {"steps": 4, "width": 64, "height": 64}


def _build(*args: str, timeout: float = 300) -> str:
    """Runs ``build_fixtures.py`` in its own process (torch stays out of the test process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(BUILD_SCRIPT), *args], env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"build_fixtures.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


# --- files built once per session ---------------------------------------------------------------------------------




@pytest.fixture(scope="session")
def lora_artifact_bytes(tmp_path_factory, demo_model_dir) -> dict[str, bytes]:
    """Artifact files, by name:

    * ``a``, ``b``, ``c``: real rank-4 LoRAs for the demo model (peft, saved as diffusers ``save_lora_weights`` does);
    * ``incompatible``: a LoRA whose cross-attention adapters expect a 48-wide text encoder (the model's is 32);
    * ``garbage``: bytes that are no safetensors file at all (to be uploaded as a LORA anyway);
    * ``not_lora``: a file for a non-LoRA artifact (kind OTHER).
    """
    out_dir = tmp_path_factory.mktemp("loras")
    _build("loras", str(demo_model_dir), str(out_dir))
    files = {name: (out_dir / folder / LORA_WEIGHTS_NAME).read_bytes()
             for name, folder in (("a", "lora-a"), ("b", "lora-b"), ("c", "lora-c"), ("incompatible", "incompatible"))}
    files["garbage"] = b"this is not a safetensors file, whatever its kind says\n" * 8
    files["not_lora"] = b'{"note": "an arbitrary artifact, not LoRA weights"}\n'
    return files


# --- processes, one catalog and one generator per module ------------------------------------------------------------










def start_generator(data_dir: Path, catalog_address: str, model_dir: Path | None, *, wait: bool = True,
                    **env: str) -> ServiceProcess:
    """A generator process; ``model_dir`` None makes it build the demo model into ``data_dir/models``."""
    if model_dir is not None:
        env = {"IMAGINEER_GENERATOR_MODEL": str(model_dir), **env}
    return generator_process(data_dir, catalog_address, **env).start(wait=wait, timeout=120)


@pytest.fixture(scope="module")
def generator(request, tmp_path_factory, catalog, demo_model_dir) -> Iterator[ServiceProcess]:
    """One generator process per test module (the module's ``GENERATOR_ENV`` adds settings)."""
    env = getattr(request.module, "GENERATOR_ENV", {})
    service = start_generator(tmp_path_factory.mktemp("generator"), catalog.address, demo_model_dir, **env)
    yield service
    with grpc.insecure_channel(service.address) as channel:
        GeneratorClient(generator_service_pb2_grpc.GeneratorServiceStub(channel), service).cancel_all()
    service.stop()


@pytest.fixture(scope="module")
def generator_channel(generator) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(generator.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def generator_stub(generator_channel) -> generator_service_pb2_grpc.GeneratorServiceStub:
    return generator_service_pb2_grpc.GeneratorServiceStub(generator_channel)


# --- client helpers ---------------------------------------------------------------------------------------------

def event_kind(event: gen_api.WatchGenerationResponse) -> str:
    return event.WhichOneof("event")


def generation_request(prompt: str = "a red fox in a forest", *, seed: int | None = 1, steps: int = FAST["steps"],
                       width: int = FAST["width"], height: int = FAST["height"], scheduler: str = "",
                       guidance_scale: float = 0.0, negative_prompt: str = "", base_model: str = "",
                       **fields) -> gen_api.StartGenerationRequest:
    """A StartGenerationRequest with the tests' quick defaults; ``fields`` are the request's other fields."""
    parameters = common_pb2.GenerationParameters(
        prompt=prompt, negative_prompt=negative_prompt, steps=steps, width=width, height=height,
        scheduler=scheduler, guidance_scale=guidance_scale, base_model=base_model)
    if seed is not None:
        parameters.seed = seed
    return gen_api.StartGenerationRequest(parameters=parameters, **fields)


@dataclass
class GeneratorClient:
    """Drives one generator through its stub, as a client would, with deadlines so no test hangs."""

    stub: generator_service_pb2_grpc.GeneratorServiceStub
    service: ServiceProcess
    metadata: tuple = ADMIN_METADATA

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.service.logs().splitlines()[-lines:])

    def start(self, prompt: str = "a red fox in a forest", **kwargs) -> gen_api.GenerationJob:
        request = kwargs.pop("request", None) or generation_request(prompt, **kwargs)
        return self.stub.StartGeneration(request, metadata=self.metadata, timeout=30)

    def get(self, job_id: str) -> gen_api.GenerationJob:
        return self.stub.GetGeneration(gen_api.GetGenerationRequest(id=job_id), metadata=self.metadata, timeout=10)

    def cancel(self, job_id: str) -> gen_api.GenerationJob:
        return self.stub.CancelGeneration(gen_api.CancelGenerationRequest(id=job_id), metadata=self.metadata,
                                          timeout=10)

    def watch(self, job_id: str, after_sequence: int = 0, timeout: float = 120) -> Iterator[
            gen_api.WatchGenerationResponse]:
        return self.stub.WatchGeneration(gen_api.WatchGenerationRequest(id=job_id, after_sequence=after_sequence),
                                         metadata=self.metadata, timeout=timeout)

    def events(self, job_id: str, after_sequence: int = 0, timeout: float = 120) -> list[
            gen_api.WatchGenerationResponse]:
        """Every event of the job (after ``after_sequence``) until it ends."""
        try:
            return list(self.watch(job_id, after_sequence, timeout))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AssertionError(f"job {job_id} did not end within {timeout} s; generator log:\n"
                                     f"{self.log_tail()}") from None
            raise

    def wait_for(self, job_id: str, kind: str, timeout: float = 60) -> gen_api.WatchGenerationResponse:
        """The first event of ``kind`` (queued, started, step, image, finished) of the job."""
        for event in self.watch(job_id, timeout=timeout):
            if event_kind(event) == kind:
                return event
        raise AssertionError(f"job {job_id} ended without a {kind} event:\n{self.log_tail()}")

    def finish(self, job_id: str, timeout: float = 120) -> gen_api.GenerationJob:
        """The job once it has ended."""
        events = self.events(job_id, timeout=timeout)
        assert events and event_kind(events[-1]) == "finished", f"stream of job {job_id} ended early"
        return events[-1].job

    def run(self, prompt: str = "a red fox in a forest", **kwargs) -> tuple[gen_api.GenerationJob,
                                                                            list[gen_api.WatchGenerationResponse]]:
        """Starts a job and waits for it to end; returns the final job and all its events."""
        job = self.start(prompt, **kwargs)
        events = self.events(job.id)
        return events[-1].job, events

    def complete(self, prompt: str = "a red fox in a forest", **kwargs) -> gen_api.GenerationJob:
        """Starts a job and checks that it completes."""
        job, _ = self.run(prompt, **kwargs)
        assert job.state == common_pb2.JOB_STATE_COMPLETED, (
            f"job ended {common_pb2.JobState.Name(job.state)}: {job.error_message}\n{self.log_tail()}")
        return job

    def cancel_all(self) -> None:
        """Cancels every job still waiting or running (a test must not leave the CPU busy for the next)."""
        try:
            reply = self.stub.ListGenerations(gen_api.ListGenerationsRequest(page_size=500), metadata=self.metadata,
                                              timeout=10)
        except grpc.RpcError:
            return
        for job in reply.jobs:
            if job.state not in TERMINAL:
                try:
                    self.cancel(job.id)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
        for job in reply.jobs:
            if job.state not in TERMINAL:
                self.finish(job.id, timeout=60)

    def info(self) -> gen_api.GeneratorInfo:
        return self.stub.GetGeneratorInfo(gen_api.GetGeneratorInfoRequest(), metadata=self.metadata, timeout=10)


@dataclass
class CatalogClient:
    """What the tests read from (and put into) the catalog."""

    stub: catalog_service_pb2_grpc.CatalogServiceStub
    metadata: tuple = ADMIN_METADATA

    def image(self, image_id: str) -> res.Image:
        return self.stub.GetImage(cat_api.GetImageRequest(id=image_id), metadata=self.metadata, timeout=10)

    def image_bytes(self, image_id: str) -> bytes:
        info, data = download_image(self.stub, image_id, self.metadata)
        assert info is not None and info.size_bytes == len(data)
        return data

    def job_bytes(self, job: gen_api.GenerationJob) -> list[bytes]:
        """The PNG files of a finished job, in image order."""
        return [self.image_bytes(image.image_id) for image in job.images]

    def album(self, album_id: str) -> res.Album:
        return self.stub.GetAlbum(cat_api.GetAlbumRequest(id=album_id), metadata=self.metadata, timeout=10)

    def album_image_ids(self, album_id: str) -> list[str]:
        reply = self.stub.ListAlbumImages(cat_api.ListAlbumImagesRequest(album_id=album_id, page_size=500),
                                          metadata=self.metadata, timeout=10)
        return [entry.image.id for entry in reply.album_images]

    def album_count(self) -> int:
        count, token = 0, ""
        while True:
            reply = self.stub.ListAlbums(cat_api.ListAlbumsRequest(page_size=500, page_token=token),
                                         metadata=self.metadata, timeout=10)
            count += len(reply.albums)
            token = reply.next_page_token
            if not token:
                return count

    def create_album(self, name: str) -> res.Album:
        return self.stub.CreateAlbum(cat_api.CreateAlbumRequest(album=res.Album(name=name)), metadata=self.metadata,
                                     timeout=10)

    def upload_artifact(self, data: bytes, name: str, kind: int = res.ARTIFACT_KIND_LORA,
                        filename: str = LORA_WEIGHTS_NAME) -> res.Artifact:
        reply = self.stub.UploadArtifact(
            artifact_requests(data, name=name, kind=kind, filename=filename, base_model=DEMO_MODEL_NAME,
                              rank=4 if kind == res.ARTIFACT_KIND_LORA else 0),
            metadata=self.metadata, timeout=30)
        return reply.artifact


@pytest.fixture(scope="module")
def gen(generator_stub, generator) -> GeneratorClient:
    """The module generator's client helper."""
    return GeneratorClient(generator_stub, generator)


@pytest.fixture(scope="module")
def cat(catalog_stub) -> CatalogClient:
    """The module catalog's client helper."""
    return CatalogClient(catalog_stub)


@pytest.fixture(autouse=True)
def _leave_the_generator_idle(request) -> Iterator[None]:
    """After each test, cancels what it left running, so one failure does not spill into the next test."""
    yield
    if "gen" in request.fixturenames:
        request.getfixturevalue("gen").cancel_all()


@pytest.fixture
def extra_generator(tmp_path_factory, catalog, demo_model_dir, gen) -> Iterator:
    """Starts more generators (``extra_generator(**env)`` -> GeneratorClient) against the module catalog; they stop
    at the end of the test. The module generator is idle meanwhile (its jobs are cancelled first)."""
    started: list[tuple[ServiceProcess, grpc.Channel]] = []

    def start(model_dir: Path | None = demo_model_dir, catalog_address: str | None = None, wait: bool = True,
              data_dir: Path | None = None, **env: str) -> GeneratorClient:
        gen.cancel_all()
        service = start_generator(data_dir or tmp_path_factory.mktemp("extra-generator"),
                                  catalog_address or catalog.address, model_dir, wait=wait, **env)
        channel = grpc.insecure_channel(service.address)
        started.append((service, channel))
        return GeneratorClient(generator_service_pb2_grpc.GeneratorServiceStub(channel), service)

    yield start
    for service, channel in started:
        GeneratorClient(generator_service_pb2_grpc.GeneratorServiceStub(channel), service).cancel_all()
        channel.close()
        service.stop()

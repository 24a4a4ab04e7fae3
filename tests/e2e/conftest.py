"""End-to-end fixtures: the three services as separate processes on free ports, reached only through the public
gRPC API (the `imagineer_client` module and the generated stubs).

Only the services compute with torch; the test process never does (two torch processes on these two cores slow
each other down a hundredfold).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.processes import ADMIN_TOKEN, ServiceProcess, catalog_process, generator_process, trainer_process

from imagineer_client.client import Imagineer


@dataclass
class Platform:
    catalog: ServiceProcess
    generator: ServiceProcess
    trainer: ServiceProcess

    def client(self) -> Imagineer:
        return Imagineer(catalog=self.catalog.address, generator=self.generator.address,
                         trainer=self.trainer.address, token=ADMIN_TOKEN)

    def services(self) -> list[ServiceProcess]:
        return [self.catalog, self.generator, self.trainer]

    def stop(self) -> None:
        for service in reversed(self.services()):
            service.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {service.name} ---\n{service.logs()[-4000:]}" for service in self.services())


def start_platform(root: Path, model_dir: Path) -> Platform:
    catalog = catalog_process(root / "catalog").start()
    model = {"IMAGINEER_GENERATOR_MODEL": str(model_dir)}
    generator = generator_process(root / "generator", catalog.address, **model).start(timeout=180)
    trainer = trainer_process(root / "trainer", catalog.address, IMAGINEER_TRAINER_MODEL=str(model_dir),
                              IMAGINEER_TRAINER_LABELER_LOCAL_MODEL="demo").start(timeout=180)
    return Platform(catalog, generator, trainer)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, demo_model_dir) -> Iterator[Platform]:
    """One platform for a whole module (the story tests)."""
    running = start_platform(tmp_path_factory.mktemp("platform"), demo_model_dir)
    yield running
    running.stop()


@pytest.fixture
def fresh_platform(tmp_path, demo_model_dir) -> Iterator[Platform]:
    """A platform of its own, for tests that kill and restart services."""
    running = start_platform(tmp_path, demo_model_dir)
    try:
        yield running
    finally:
        running.stop()

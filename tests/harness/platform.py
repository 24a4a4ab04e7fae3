"""The three services as separate processes on free ports, for end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def start_platform(root: Path, model_dir: Path, **trainer_env: str) -> Platform:
    catalog = catalog_process(root / "catalog").start()
    model = {"IMAGINEER_GENERATOR_MODEL": str(model_dir)}
    generator = generator_process(root / "generator", catalog.address, **model).start(timeout=180)
    trainer_env = {"IMAGINEER_TRAINER_MODEL": str(model_dir), "IMAGINEER_TRAINER_LABELER_LOCAL_MODEL": "demo",
                   **trainer_env}
    trainer = trainer_process(root / "trainer", catalog.address, **trainer_env).start(timeout=180)
    return Platform(catalog, generator, trainer)

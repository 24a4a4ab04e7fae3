"""Reading the rendered manifests and the Dockerfile for the deployment tests."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _deploy_check():
    spec = importlib.util.spec_from_file_location("deploy_check", ROOT / "scripts" / "deploy_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("deploy_check", module)
    spec.loader.exec_module(module)
    return module


deploy_check = _deploy_check()
OVERLAYS = deploy_check.OVERLAYS


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(deploy_check.render(overlay))


def of_kind(overlay: str, kind: str) -> list[dict]:
    return [m for m in rendered(overlay) if m["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> dict:
    matches = [m for m in of_kind(overlay, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} in {overlay}: {len(matches)} found"
    return matches[0]


@dataclass(frozen=True)
class Container:
    overlay: str
    owner: str  # Deployment/name or Job/name
    pod: dict  # the pod spec
    pod_metadata: dict
    spec: dict  # the container
    init: bool

    @property
    def service(self) -> str:
        """catalog, generator or trainer, from the image imagineer/<service>[:tag]."""
        match = re.fullmatch(r"imagineer/(\w+)(:.+)?", self.spec["image"])
        assert match, f"{self.owner}: unexpected image {self.spec['image']}"
        return match.group(1)


def containers(overlay: str) -> list[Container]:
    found = []
    for manifest in rendered(overlay):
        if manifest["kind"] not in ("Deployment", "Job"):
            continue
        template = manifest["spec"]["template"]
        owner = f"{manifest['kind']}/{manifest['metadata']['name']}"
        for init, key in ((True, "initContainers"), (False, "containers")):
            for container in template["spec"].get(key, []):
                found.append(Container(overlay, owner, template["spec"], template["metadata"], container, init))
    return found


SECRET_SAMPLES = {"admin-token": "a-token", "database-url": "postgresql+psycopg://imagineer:pw@db:5432/imagineer"}


def environment(container: Container) -> dict[str, str]:
    """The variables a container starts with (ConfigMaps resolved, Secrets and resource fields as samples)."""
    values: dict[str, str] = {}
    for source in container.spec.get("envFrom", []):
        config_map = named(container.overlay, "ConfigMap", source["configMapRef"]["name"])
        values.update(config_map["data"])
    for variable in container.spec.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable["valueFrom"]:
            values[variable["name"]] = SECRET_SAMPLES[variable["valueFrom"]["secretKeyRef"]["key"]]
        elif "resourceFieldRef" in variable["valueFrom"]:
            values[variable["name"]] = "2"
        else:
            raise AssertionError(f"{container.owner}: unexpected source for {variable['name']}")
    return values


@dataclass(frozen=True)
class ImageTarget:
    name: str
    base: str
    lines: tuple[str, ...]  # instructions, continuation lines joined

    def instructions(self, keyword: str) -> list[str]:
        return [line.split(None, 1)[1] for line in self.lines if line.split(None, 1)[0].upper() == keyword]

    def env(self) -> dict[str, str]:
        values = {}
        for instruction in self.instructions("ENV"):
            for name, value in re.findall(r"(\w+)=(\S+)", instruction):
                values[name] = value
        return values


@cache
def dockerfile_targets() -> dict[str, ImageTarget]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    targets: dict[str, ImageTarget] = {}
    current: list[str] = []
    name = base = ""
    for line in [*lines, "FROM end AS end"]:
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            if name:
                targets[name] = ImageTarget(name, base, tuple(current))
            base, name, current = match.group(1), match.group(2), []
        elif name:
            current.append(line)
    return targets


def console_scripts(service: str) -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    return pyproject["project"].get("scripts", {})

"""The manifests render, validate against the Kubernetes API, and agree with the code and the images."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness.manifests import (
    OVERLAYS,
    ROOT,
    Container,
    console_scripts,
    containers,
    deploy_check,
    dockerfile_targets,
    environment,
    named,
    of_kind,
    rendered,
)

from imagineer_common.server import LIVENESS_SERVICE

SETTINGS = {
    "catalog": ("imagineer_catalog.config", "CatalogSettings"),
    "generator": ("imagineer_generator.config", "GeneratorSettings"),
    "trainer": ("imagineer_trainer.config", "TrainerSettings"),
}
CLIS = {"catalog": "imagineer_catalog.cli", "generator": "imagineer_generator.cli", "trainer": "imagineer_trainer.cli",
        "cli": "imagineer_client.cli"}
PACKAGE_DIRS = {"catalog": "catalog", "generator": "generator", "trainer": "trainer", "cli": "client"}
# Variables a manifest or image may set that the libraries under the services read, each for a reason.
LIBRARY_VARIABLES = {
    "OMP_NUM_THREADS": "torch: one thread per CPU of the container's limit, not per CPU of the node",
    "PYTHONDONTWRITEBYTECODE": "python: no .pyc writes on a read-only root filesystem",
    "PYTHONUNBUFFERED": "python: log lines leave at once",
    "HOME": "libraries that write under ~ write to the /tmp emptyDir",
    "TMPDIR": "tempfile: the /tmp emptyDir",
    "HF_HOME": "huggingface: caches on the /tmp emptyDir",
    "HF_HUB_OFFLINE": "huggingface: never reach a model hub from a pod",
    "GRPC_VERBOSITY": "gRPC core: no plain-text INFO lines between the JSON log lines",
    "PATH": "the virtual environment's console scripts",
    "PIP_DISABLE_PIP_VERSION_CHECK": "build stage only",
    "PIP_NO_CACHE_DIR": "build stage only",
}


class RecordingEnviron(dict):
    """os.environ for one settings read: remembers every name asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def read_settings(service: str, values: dict[str, str], monkeypatch):
    """The service's settings object as it would start with exactly ``values``, and the names it read."""
    module_name, class_name = SETTINGS[service]
    settings_class = getattr(importlib.import_module(module_name), class_name)
    recording = RecordingEnviron(values)
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", recording)
        settings = settings_class.from_env()
    return settings, recording.asked


def service_containers(overlay: str) -> list[Container]:
    return [c for c in containers(overlay) if c.service in SETTINGS]


def test_every_overlay_renders_and_validates_against_the_kubernetes_schemas():
    """What `make deploy-check` runs: kustomize build of base and each overlay, strict schema validation."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "deploy_check.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for overlay in OVERLAYS:
        for version in deploy_check.KUBERNETES_VERSIONS:
            assert f"deploy/{overlay}: " in result.stdout and f"valid for Kubernetes {version}" in result.stdout


def test_validation_is_strict_enough_to_fail_a_broken_manifest():
    deployment = copy.deepcopy(named("overlays/local", "Deployment", "imagineer-generator"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["grcp"] = probe.pop("grpc")  # a misspelled field
    problems = deploy_check.validate([deployment], deploy_check.KUBERNETES_VERSIONS[0])
    assert problems and "grcp" in problems[0]
    deployment = copy.deepcopy(named("overlays/local", "Deployment", "imagineer-generator"))
    deployment["spec"]["replicas"] = "two"
    assert deploy_check.validate([deployment], deploy_check.KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_a_manifest_sets_is_read_by_its_service(overlay, monkeypatch):
    for container in service_containers(overlay):
        values = environment(container)
        _settings, asked = read_settings(container.service, values, monkeypatch)
        for name in values:
            if name.startswith("IMAGINEER_"):
                assert name in asked, f"{overlay} {container.owner}/{container.spec['name']} sets {name}, " \
                                      f"which {container.service} never reads"
            else:
                assert name in LIBRARY_VARIABLES, f"{container.owner} sets {name}: not a setting of the service"


def test_every_variable_an_image_sets_is_read_by_its_service(monkeypatch):
    for target in SETTINGS:
        values = dockerfile_targets()["runtime"].env() | dockerfile_targets()[target].env()
        _settings, asked = read_settings(target, values, monkeypatch)
        for name in values:
            assert name in asked or name in LIBRARY_VARIABLES, f"image {target} sets {name}, which nothing reads"


def _port(container: dict, name: str) -> int:
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"{container['name']}: no single port named {name}"
    return ports[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_probes_and_services_match_what_the_service_listens_on(overlay, monkeypatch):
    services = of_kind(overlay, "Service")
    for container in service_containers(overlay):
        if container.init or container.owner.startswith("Job/"):
            continue
        settings, _ = read_settings(container.service, environment(container), monkeypatch)
        spec = container.spec
        assert settings.host == "0.0.0.0", f"{container.owner} listens on {settings.host}, unreachable from outside"
        assert _port(spec, "grpc") == settings.port
        assert _port(spec, "metrics") == settings.metrics_port
        annotations = container.pod_metadata["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == settings.metrics_port
        # gRPC probes on the standard health service; kubelet cannot speak TLS, so with TLS on they use the
        # plaintext health-only port.
        probe_port = settings.port if settings.tls is None else settings.health_port
        assert probe_port is not None
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind not in spec:
                assert kind == "startupProbe" and container.service == "catalog"
                continue
            assert spec[kind]["grpc"]["port"] == probe_port, f"{container.owner} {kind}"
            expected_service = LIVENESS_SERVICE if kind == "livenessProbe" else None
            assert spec[kind]["grpc"].get("service") == expected_service, f"{container.owner} {kind}"
        if settings.health_port is not None:
            assert _port(spec, "grpc-health") == settings.health_port
        if container.service == "generator":
            startup = spec["startupProbe"]
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "too little time to load a model"
        labels = container.pod_metadata["labels"]
        selecting = [s for s in services
                     if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        assert selecting, f"no Service selects {container.owner}"
        for service in selecting:
            (port,) = service["spec"]["ports"]
            assert port["name"] == "grpc" and port["appProtocol"] == "grpc"
            assert port["port"] == settings.port and port["targetPort"] == "grpc"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_catalog_addresses_name_a_service_of_the_catalog(overlay, monkeypatch):
    catalog_labels = named(overlay, "Deployment", "imagineer-catalog")["spec"]["template"]["metadata"]["labels"]
    for container in service_containers(overlay):
        if container.service == "catalog":
            continue
        settings, _ = read_settings(container.service, environment(container), monkeypatch)
        match = re.fullmatch(r"dns:///([\w-]+):(\d+)", settings.catalog_address)
        assert match, settings.catalog_address
        service = named(overlay, "Service", match.group(1))
        assert all(catalog_labels.get(k) == v for k, v in service["spec"]["selector"].items())
        assert int(match.group(2)) == service["spec"]["ports"][0]["port"]
        if overlay == "overlays/production":  # round-robin needs every pod's address: a headless Service
            assert service["spec"]["clusterIP"] == "None"
        if settings.tls is not None:  # a catalog that requires client certificates gets one
            assert settings.catalog_tls is not None and settings.catalog_tls.cert_file is not None


def test_images_and_commands_exist_in_the_build(monkeypatch):
    targets = dockerfile_targets()
    makefile = (ROOT / "Makefile").read_text()
    (image_targets,) = re.findall(r"^IMAGE_TARGETS := (.+)$", makefile, re.MULTILINE)
    assert set(image_targets.split()) == set(CLIS), "make images builds every service image and only those"
    for target in image_targets.split():
        image = targets[target]
        assert image.base == "runtime"
        (entrypoint,) = image.instructions("ENTRYPOINT")
        script = json.loads(entrypoint)[0]  # exec form: a JSON array
        assert script in console_scripts(PACKAGE_DIRS[target])
        assert any(f"pip install --no-index --find-links=/wheels imagineer-{PACKAGE_DIRS[target]}" in line
                   for line in image.instructions("RUN"))
        assert image.instructions("USER") == ["10001:10001"]
    for overlay in OVERLAYS:
        for container in containers(overlay):
            target = targets[container.service]
            command = container.spec["command"]
            assert command[0] == json.loads(target.instructions("ENTRYPOINT")[0])[0], container.owner
            # The service's own entry point accepts the arguments (argparse would exit on an unknown command or
            # option); a deliberately bad port then stops it at the settings, before it serves or migrates.
            monkeypatch.setenv(f"IMAGINEER_{container.service.upper()}_PORT", "not-a-port")
            assert importlib.import_module(CLIS[container.service]).main(command[1:]) == 2, command
            assert container.pod["securityContext"]["runAsUser"] == 10001


def test_images_are_built_the_hardened_way():
    targets = dockerfile_targets()
    runtime = targets["runtime"]
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\}", runtime.base)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", (ROOT / "docker" / "Dockerfile").read_text(),
                     re.MULTILINE)
    # The runtime stages install nothing from the distribution (no compilers), only the built wheels.
    for name in ("runtime", *CLIS):
        assert not any("apt-get" in line for line in targets[name].instructions("RUN")), name
    assert runtime.env()["HOME"] == "/tmp" and runtime.env()["TMPDIR"] == "/tmp"
    # Code generation runs the laptop's own `make protos` in the build stage.
    assert any(line.startswith("make protos") for line in targets["build"].instructions("RUN"))
    assert "grpc_tools.protoc" in (ROOT / "Makefile").read_text().split("\nprotos:", 1)[1].split("\n\n", 1)[0]
    # The generator and trainer get torch from the CPU wheel index unless a GPU build says otherwise.
    assert "--extra-index-url" in " ".join(targets["model-wheels"].instructions("RUN"))
    ignored = (ROOT / ".dockerignore").read_text()
    assert "services/common/src/imagineer" in ignored and "*" in ignored.splitlines()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_and_containers_are_hardened(overlay):
    for container in containers(overlay):
        pod = container.pod["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault", container.owner
        assert container.pod["automountServiceAccountToken"] is False
        security = container.spec["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        resources = container.spec["resources"]
        assert resources["requests"] and resources["limits"], container.owner
        mounts = {m["mountPath"]: m["name"] for m in container.spec["volumeMounts"]}
        volumes = {v["name"]: v for v in container.pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"
        assert "/data" in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_as_a_job_and_catalog_pods_wait_for_them(overlay, monkeypatch, tmp_path):
    job = named(overlay, "Job", "imagineer-catalog-migrate")
    (migrate,) = [c for c in containers(overlay) if c.owner == "Job/imagineer-catalog-migrate"]
    assert migrate.spec["command"] == ["imagineer-catalog", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    catalog = [c for c in containers(overlay) if c.owner == "Deployment/imagineer-catalog"]
    (wait,) = [c for c in catalog if c.init]
    assert wait.spec["command"][:4] == ["imagineer-catalog", "migrate", "--check", "--wait"]
    for container in catalog:
        settings, _ = read_settings("catalog", environment(container), monkeypatch)
        assert settings.auto_upgrade is False, "catalog servers in a cluster never upgrade the schema themselves"
    # The real commands, with the manifests' settings on a scratch SQLite database: before the Job the check
    # fails, the Job's command upgrades, then the init container's check passes.
    def run(container: Container, command: list[str]) -> subprocess.CompletedProcess:
        values = environment(container)
        values.pop("IMAGINEER_CATALOG_DATABASE_URL", None)
        values["IMAGINEER_CATALOG_DATA_DIR"] = str(tmp_path / "data")
        executable = str(Path(sys.executable).parent / command[0])
        return subprocess.run([executable, *command[1:]], env={**os.environ, **values}, capture_output=True,
                              text=True, timeout=120)

    check = wait.spec["command"][:3]
    assert run(wait, check).returncode == 1
    upgraded = run(migrate, migrate.spec["command"])
    assert upgraded.returncode == 0 and "upgraded" in upgraded.stdout, upgraded.stdout + upgraded.stderr
    checked = run(wait, wait.spec["command"])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_production_runs_on_gpus_with_postgresql_scaling_and_round_robin(monkeypatch):
    overlay = "overlays/production"
    for name in ("imagineer-generator", "imagineer-trainer"):
        pod = named(overlay, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert any(m["mountPath"] == "/models" and m["readOnly"] for m in container["volumeMounts"])
        (service,) = [c for c in containers(overlay) if c.owner == f"Deployment/{name}"]
        settings, _ = read_settings(service.service, environment(service), monkeypatch)
        assert settings.device == "cuda" and str(settings.model).startswith("/models/")
    for container in [c for c in containers(overlay) if c.service == "catalog"]:
        settings, _ = read_settings("catalog", environment(container), monkeypatch)
        assert settings.database_url.startswith("postgresql"), container.owner
    hpa = named(overlay, "HorizontalPodAutoscaler", "imagineer-generator")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "imagineer-generator"}
    metric_names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert metric_names == ["imagineer_generator_queue_depth"]
    headless = named(overlay, "Service", "imagineer-generator-headless")
    assert headless["spec"]["clusterIP"] == "None"
    pdb = named(overlay, "PodDisruptionBudget", "imagineer-generator")
    assert pdb["spec"]["selector"]["matchLabels"] == headless["spec"]["selector"]
    claim = named(overlay, "PersistentVolumeClaim", "imagineer-models")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_the_generator_metric_the_autoscaler_uses_is_one_the_generator_exports():
    source = (ROOT / "services" / "generator" / "src" / "imagineer_generator" / "app.py").read_text()
    assert '"imagineer_generator_queue_depth"' in source


def _selects(selector: dict, labels: dict) -> bool:
    if "matchLabels" in selector and any(labels.get(k) != v for k, v in selector["matchLabels"].items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_what_is_needed(overlay):
    policies = of_kind(overlay, "NetworkPolicy")
    default = named(overlay, "NetworkPolicy", "imagineer-default-deny")
    assert default["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    pods = {c.owner.split("/", 1)[1]: c.pod_metadata["labels"] for c in containers(overlay)}

    def egress_ports(pod: str) -> set[int]:
        return {port["port"] for policy in policies if "Egress" in policy["spec"]["policyTypes"]
                and _selects(policy["spec"]["podSelector"], pods[pod])
                for rule in policy["spec"].get("egress", []) for port in rule.get("ports", [])}

    def ingress_ports(pod: str) -> set[int]:
        return {port["port"] for policy in policies if "Ingress" in policy["spec"]["policyTypes"]
                and _selects(policy["spec"]["podSelector"], pods[pod])
                for rule in policy["spec"].get("ingress", []) for port in rule.get("ports", [])}

    database = {5432} if overlay == "overlays/production" else set()
    assert egress_ports("imagineer-catalog") == {53} | database
    assert egress_ports("imagineer-catalog-migrate") == {53} | database
    assert egress_ports("imagineer-generator") == {53, 50051}
    assert egress_ports("imagineer-trainer") == {53, 50051}
    assert ingress_ports("imagineer-catalog") == {50051, 9464}
    assert ingress_ports("imagineer-generator") == {50052, 9464}
    assert ingress_ports("imagineer-trainer") == {50053, 9464}
    assert ingress_ports("imagineer-catalog-migrate") == set()


def test_nothing_machine_specific_or_secret_is_in_the_manifests():
    for overlay in OVERLAYS:
        for manifest in rendered(overlay):
            text = repr(manifest)
            assert "hostPath" not in text and "/work/" not in text and "127.0.0.1" not in text
            if manifest["kind"] == "Secret":
                assert overlay == "overlays/local", "production secrets are created in the cluster, not in git"


@pytest.mark.parametrize("service", SETTINGS)
def test_docs_deploy_describes_every_setting_the_service_reads(service, monkeypatch):
    docs = (ROOT / "docs" / "deploy.md").read_text()
    _settings, asked = read_settings(service, {}, monkeypatch)
    prefix = f"IMAGINEER_{service.upper()}_"
    for name in sorted(n for n in asked if n.startswith("IMAGINEER_")):
        suffix = name.removeprefix(prefix)
        assert f"`{name}`" in docs or f"`<P>{suffix}`" in docs, f"docs/deploy.md does not describe {name}"

"""The images install wheels of the services (docker/Dockerfile); here the same wheels are built without
Docker and checked for what the containers need: the generated code, the migrations, the console scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _build_wheel(package: str, out: Path) -> zipfile.ZipFile:
    # Built from a copy, as the image's build context would hold it: no build/ folder left in the work tree.
    source = out / "source"
    shutil.copytree(ROOT / "services" / package, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "-q", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob(f"imagineer_{package}-*.whl")
    return zipfile.ZipFile(wheel)


def _entry_points(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    return wheel.read(name).decode()


def test_the_common_wheel_carries_the_generated_code(tmp_path):
    names = set(_build_wheel("common", tmp_path).namelist())
    for service in ("catalog", "generator", "trainer"):
        assert f"imagineer/{service}/v1/{service}_service_pb2.py" in names
        assert f"imagineer/{service}/v1/{service}_service_pb2_grpc.py" in names
    assert "imagineer_common/metrics.py" in names and "imagineer_common/tls.py" in names


def test_the_catalog_wheel_carries_its_migrations_and_command(tmp_path):
    wheel = _build_wheel("catalog", tmp_path)
    names = set(wheel.namelist())
    versions = sorted((ROOT / "services/catalog/src/imagineer_catalog/migrations/versions").glob("0*.py"))
    assert versions
    for revision in versions:
        assert f"imagineer_catalog/migrations/versions/{revision.name}" in names
    assert "imagineer_catalog/migrations/env.py" in names
    assert "imagineer-catalog = imagineer_catalog.cli:main" in _entry_points(wheel)


@pytest.mark.parametrize("package, script", [("generator", "imagineer-generator"), ("trainer", "imagineer-trainer"),
                                             ("client", "imagineer")])
def test_service_wheels_declare_their_commands(tmp_path, package, script):
    assert f"{script} = imagineer_{package}.cli:main" in _entry_points(_build_wheel(package, tmp_path))

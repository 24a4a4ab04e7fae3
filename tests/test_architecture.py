"""The design's boundaries, checked on every test run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_import_contracts_hold():
    """Generator and trainer never reach the database; domain code never sees gRPC (see .importlinter)."""
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


def test_import_contracts_catch_a_violation(tmp_path):
    """The forbidden-import contract really fails when a service imports SQLAlchemy."""
    package = tmp_path / "imagineer_generator_probe"
    package.mkdir()
    (package / "__init__.py").write_text("import sqlalchemy\n")
    config = tmp_path / "probe.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    imagineer_generator_probe\ninclude_external_packages = True\n\n"
        "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
        "source_modules =\n    imagineer_generator_probe\nforbidden_modules =\n    sqlalchemy\n")
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache", "--config", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout


def test_protos_pass_buf_lint():
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    buf_path = str(buf) if buf.exists() else shutil.which("buf")
    assert buf_path, "buf is missing: run `make install`"
    result = subprocess.run([buf_path, "lint"], cwd=ROOT / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_not_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    generated = [path for path in tracked if path.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))]
    assert generated == []

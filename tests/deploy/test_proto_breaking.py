"""`buf breaking` (what `make proto-breaking` runs against main) fails a change that breaks the v1 contracts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def _breaking(changed: Path, against: Path) -> subprocess.CompletedProcess:
    assert BUF.exists(), "buf is missing: run `make install`"
    return subprocess.run([str(BUF), "breaking", str(changed), "--against", str(against)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def protos_copy(tmp_path) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    return copy


def test_unchanged_protos_are_not_breaking(protos_copy):
    result = _breaking(protos_copy, ROOT / "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_deleted_field_breaks_the_contract(protos_copy):
    path = protos_copy / "imagineer" / "catalog" / "v1" / "resources.proto"
    text = path.read_text()
    # Delete the first numbered field of the Album message.
    album = re.search(r"message Album \{(.*?)\n\}", text, re.DOTALL)
    assert album, "resources.proto has no Album message"
    field = re.search(r"\n\s+[\w.]+ (\w+) = \d+;", album.group(1))
    path.write_text(text.replace(field.group(0), "", 1))
    result = _breaking(protos_copy, ROOT / "protos")
    assert result.returncode != 0
    assert f'"{field.group(1)}"' in result.stdout or field.group(1) in result.stdout, result.stdout


def test_a_renumbered_field_breaks_the_contract(protos_copy):
    path = protos_copy / "imagineer" / "generator" / "v1" / "generator_service.proto"
    text = path.read_text()
    match = re.search(r"(\n\s+[\w.]+ \w+ = )(\d+);", text)
    path.write_text(text.replace(match.group(0), f"{match.group(1)}{int(match.group(2)) + 900};", 1))
    result = _breaking(protos_copy, ROOT / "protos")
    assert result.returncode != 0, result.stdout


def test_make_proto_breaking_compares_against_the_main_branch():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nproto-breaking:", 1)[1].split("\n\n", 1)[0]
    assert "breaking" in recipe and ".git#branch=main,subdir=protos" in recipe

"""`imagineer artifacts …` and the Python client's artifact calls against a real catalog: LoRAs out to other
tools and in from them, with the checks a user relies on (sha256, no half-written files, no overwrites)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from harness.processes import ADMIN_TOKEN
from safetensors.numpy import save_file

from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_client import cli
from imagineer_client.client import Imagineer, ImagineerError


@pytest.fixture(scope="module")
def client(catalog):
    with Imagineer(catalog=catalog.address, token=ADMIN_TOKEN) as connection:
        yield connection


def lora_file(folder: Path, seed: int, name: str = "style.safetensors") -> Path:
    """A small LoRA-shaped safetensors file, as other tools write them."""
    rng = np.random.default_rng(seed)
    path = folder / name
    save_file({"unet.down.lora_A.weight": rng.standard_normal((4, 32), dtype=np.float32),
               "unet.down.lora_B.weight": rng.standard_normal((32, 4), dtype=np.float32)}, str(path),
              metadata={"format": "pt"})
    return path


def run(catalog, capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["--catalog", catalog.address, "--token", ADMIN_TOKEN, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(catalog, capsys, *argv):
    code, out, err = run(catalog, capsys, "--json", *argv)
    assert code == cli.EXIT_OK, out + err
    return json.loads(out)


def test_upload_list_show_download_round_trip(catalog, capsys, client, tmp_path):
    source = lora_file(tmp_path, seed=1)
    uploaded = run_json(catalog, capsys, "artifacts", "upload", str(source), "--base-model", "imagineer/tiny-sd",
                        "--rank", "4")
    artifact = uploaded["artifact"]
    assert not uploaded.get("already_existed")
    assert (artifact["name"], artifact["kind"], artifact["rank"]) == ("style", "ARTIFACT_KIND_LORA", 4)
    assert artifact["filename"] == "style.safetensors" and int(artifact["sizeBytes"]) == source.stat().st_size

    listed = run_json(catalog, capsys, "artifacts", "list", "--kind", "lora")
    assert artifact["id"] in [entry["id"] for entry in listed]
    assert run_json(catalog, capsys, "artifacts", "show", artifact["id"])[0]["sha256"] == artifact["sha256"]

    out = tmp_path / "out"
    out.mkdir()
    downloaded = run_json(catalog, capsys, "artifacts", "download", artifact["id"], "--out", str(out))
    assert Path(downloaded["path"]) == out / "style.safetensors"
    assert (out / "style.safetensors").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["style.safetensors"], "no partial file is left behind"


def test_the_same_file_twice_is_one_artifact(catalog, capsys, tmp_path):
    source = lora_file(tmp_path, seed=2)
    first = run_json(catalog, capsys, "artifacts", "upload", str(source), "--name", "first")
    again = run_json(catalog, capsys, "artifacts", "upload", str(source), "--name", "second")
    assert again["already_existed"] and again["artifact"] == first["artifact"]
    code, out, _ = run(catalog, capsys, "artifacts", "upload", str(source))
    assert code == 0 and f"already stored as artifact {first['artifact']['id']}" in out


def test_a_file_that_is_not_safetensors_is_refused_as_a_lora_before_any_upload(catalog, capsys, client, tmp_path):
    before = {a.id for a in client.list_artifacts(limit=500)}
    for content, reason in ((b"PK\x03\x04 a zip archive", "safetensors header"), (b"short", "too short"),
                            ((20).to_bytes(8, "little") + b"{not json at all!!}", "not valid JSON")):
        path = tmp_path / "weights.safetensors"
        path.write_bytes(content)
        code, out, _ = run(catalog, capsys, "artifacts", "upload", str(path))
        assert code == cli.EXIT_BAD_INPUT and reason in out, out
    assert {a.id for a in client.list_artifacts(limit=500)} == before
    # Not claimed to be a LoRA, any file is welcome.
    other = run_json(catalog, capsys, "artifacts", "upload", str(path), "--kind", "other")
    assert other["artifact"]["kind"] == "ARTIFACT_KIND_OTHER"


def test_download_never_overwrites_unless_asked(catalog, capsys, client, tmp_path):
    source = lora_file(tmp_path, seed=3)
    artifact = client.upload_artifact(source, name="kept").artifact
    target = tmp_path / "mine.safetensors"
    target.write_bytes(b"my own file")
    code, out, _ = run(catalog, capsys, "artifacts", "download", artifact.id, "--out", str(target))
    assert code == cli.EXIT_BAD_INPUT and "--force" in out
    assert target.read_bytes() == b"my own file"
    assert run(catalog, capsys, "artifacts", "download", artifact.id, "--out", str(target), "--force")[0] == 0
    assert target.read_bytes() == source.read_bytes()


def test_unknown_ids_are_bad_input_and_write_nothing(catalog, capsys, client, tmp_path):
    code, out, _ = run(catalog, capsys, "artifacts", "download", "999999", "--out", str(tmp_path / "x"))
    assert code == cli.EXIT_BAD_INPUT and "NOT_FOUND" in out
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ImagineerError) as caught:
        client.download_artifact("999999", tmp_path / "y")
    assert caught.value.bad_input and list(tmp_path.iterdir()) == []
    assert run(catalog, capsys, "artifacts", "upload", str(tmp_path / "missing.safetensors"))[0] == cli.EXIT_BAD_INPUT


def test_delete_removes_the_artifact(catalog, capsys, client, tmp_path):
    artifact = client.upload_artifact(lora_file(tmp_path, seed=4), name="doomed").artifact
    assert run_json(catalog, capsys, "artifacts", "delete", artifact.id) == {"deleted": [artifact.id]}
    code, out, _ = run(catalog, capsys, "artifacts", "show", artifact.id)
    assert code == cli.EXIT_BAD_INPUT and "NOT_FOUND" in out


def test_tables_for_people(catalog, capsys, client, tmp_path):
    artifact = client.upload_artifact(lora_file(tmp_path, seed=5), name="shown", kind="lora").artifact
    assert artifact.kind == res.ARTIFACT_KIND_LORA
    code, out, _ = run(catalog, capsys, "artifacts", "list")
    assert code == 0 and "shown" in out and "lora" in out
    code, out, _ = run(catalog, capsys, "artifacts", "show", artifact.id)
    assert code == 0 and artifact.sha256 in out

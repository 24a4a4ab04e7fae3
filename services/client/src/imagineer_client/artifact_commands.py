"""`imagineer artifacts list|show|download|upload|delete`: trained LoRAs and other weights in the catalog.

`download` takes a trained LoRA out to other tools (a diffusers-layout safetensors file); `upload` brings in one
made elsewhere, to use with `imagineer generate --lora ID:WEIGHT`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from imagineer.catalog.v1 import resources_pb2 as catalog_pb2
from imagineer_client.catalog_commands import delete_each, emit, transfer_bar
from imagineer_client.client import client_from_args

EXIT_OK, EXIT_BAD_INPUT = 0, 2
KINDS = ("lora", "checkpoint", "other")
KIND_NAMES = {value: name.removeprefix("ARTIFACT_KIND_").lower() for name, value in catalog_pb2.ArtifactKind.items()}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def safetensors_problem(path: Path) -> str:
    """Why ``path`` is not a safetensors file ("" when it is one): an 8-byte little-endian header length, then
    that many bytes of JSON describing the tensors."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return "it is too short to be a safetensors file"
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= MAX_SAFETENSORS_HEADER:
            return "it does not start with a safetensors header"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return "its safetensors header is not valid JSON"
    if not isinstance(header, dict) or not any(key != "__metadata__" for key in header):
        return "its safetensors header names no tensors"
    return ""


def _size(size_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size_bytes < 1024 or unit == "GiB":
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024
    return ""


def _table(artifacts: list[catalog_pb2.Artifact]) -> Table:
    table = Table("id", "name", "kind", "base model", "rank", "size", "training run", "created")
    for artifact in artifacts:
        table.add_row(artifact.id, artifact.name, KIND_NAMES[artifact.kind], artifact.base_model,
                      str(artifact.rank or ""), _size(artifact.size_bytes), artifact.training_run_id,
                      artifact.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"))
    return table


def _list(args, console: Console) -> int:
    with client_from_args(args) as client:
        artifacts = client.list_artifacts(kind=args.kind or "", training_run_id=args.run, limit=args.limit)
    emit(args, console, artifacts, _table(artifacts))
    return EXIT_OK


def _show(args, console: Console) -> int:
    with client_from_args(args) as client:
        artifact = client.get_artifact(args.id)
    emit(args, console, [artifact], _table([artifact]))
    if not args.json:
        console.print(f"file {artifact.filename}, sha256 {artifact.sha256}")
        for key, value in sorted(artifact.metadata.items()):
            console.print(f"  {key}: {value}")
    return EXIT_OK


def _download(args, console: Console) -> int:
    with client_from_args(args) as client:
        artifact = client.get_artifact(args.id)
        target = Path(args.out) if args.out else Path(artifact.filename)
        if target.is_dir():
            target = target / artifact.filename
        if target.exists() and not args.force:
            console.print(f"[red]error:[/red] out: {target} exists; give --force to replace it")
            return EXIT_BAD_INPUT
        with transfer_bar(console, args.json, "downloading", artifact.size_bytes) as (progress, task):
            client.download_artifact(args.id, target, on_bytes=lambda done: progress.update(task, completed=done))
    if args.json:
        print(json.dumps({"artifact": json_format.MessageToDict(artifact), "path": str(target)}, indent=2))
    else:
        console.print(f"saved artifact {artifact.id} ({artifact.name}) to {target}")
    return EXIT_OK


def _upload(args, console: Console) -> int:
    source = Path(args.file)
    if not source.is_file():
        console.print(f"[red]error:[/red] file: {source} does not exist")
        return EXIT_BAD_INPUT
    if args.kind == "lora" and (problem := safetensors_problem(source)):
        console.print(f"[red]error:[/red] file: {source} cannot be a LoRA: {problem}")
        return EXIT_BAD_INPUT
    name = args.name or source.stem
    with client_from_args(args) as client, transfer_bar(console, args.json, "uploading",
                                                        source.stat().st_size) as (progress, task):
        reply = client.upload_artifact(source, name=name, kind=args.kind, base_model=args.base_model, rank=args.rank,
                                       on_bytes=lambda done: progress.update(task, completed=done))
    artifact = reply.artifact
    if args.json:
        document = {"artifact": json_format.MessageToDict(artifact), "already_existed": reply.already_existed}
        print(json.dumps(document, indent=2))
        return EXIT_OK
    if reply.already_existed:
        console.print(f"these bytes were already stored as artifact {artifact.id} ({artifact.name})")
    else:
        console.print(f"stored artifact {artifact.id} ({artifact.name})")
    if artifact.kind == catalog_pb2.ARTIFACT_KIND_LORA:
        console.print(f"use it with `imagineer generate PROMPT --lora {artifact.id}:0.8`")
    return EXIT_OK


def _delete(args, console: Console) -> int:
    with client_from_args(args) as client:
        return delete_each(args, console, client.delete_artifact, "artifact")


def add_commands(commands) -> None:
    """Registers `imagineer artifacts …` on the top-level sub-parser set."""
    artifacts = commands.add_parser("artifacts", help="trained LoRAs and other weights: list, download, upload"
                                    ).add_subparsers(dest="artifacts_command", required=True)
    listing = artifacts.add_parser("list", help="artifacts, newest first")
    listing.add_argument("--kind", choices=KINDS)
    listing.add_argument("--run", default="", help="only what this training run produced")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=_list)
    show = artifacts.add_parser("show", help="one artifact with its file and metadata")
    show.add_argument("id")
    show.set_defaults(handler=_show)
    download = artifacts.add_parser("download", help="save an artifact's file (checked against its sha256)")
    download.add_argument("id")
    download.add_argument("--out", default="", help="file or folder (default: its file name, here)")
    download.add_argument("--force", action="store_true", help="replace an existing file")
    download.set_defaults(handler=_download)
    upload = artifacts.add_parser("upload", help="store a weights file, for example a LoRA made elsewhere")
    upload.add_argument("file")
    upload.add_argument("--name", default="", help="display name (default: the file name without extension)")
    upload.add_argument("--kind", choices=KINDS, default="lora")
    upload.add_argument("--base-model", default="", help="the model the weights belong to")
    upload.add_argument("--rank", type=int, default=0, help="LoRA rank, when known")
    upload.set_defaults(handler=_upload)
    delete = artifacts.add_parser("delete", help="delete artifacts (a file goes when nothing refers to it)")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.set_defaults(handler=_delete)

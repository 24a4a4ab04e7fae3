"""`imagineer images|albums|labels|import|backup|restore`: the catalog part of the command line.

Lists print a table (or one JSON document with --json); changes print the changed record.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from imagineer.catalog.v1 import catalog_service_pb2 as catalog_api
from imagineer.catalog.v1 import resources_pb2 as catalog_pb2
from imagineer_client.client import ImagineerError, client_from_args

EXIT_OK, EXIT_FAULT, EXIT_BAD_INPUT = 0, 1, 2
LABEL_TYPES = {"caption": catalog_pb2.LABEL_TYPE_CAPTION, "tag": catalog_pb2.LABEL_TYPE_TAG,
               "manual": catalog_pb2.LABEL_TYPE_MANUAL}
ALBUM_TYPE_NAMES = {value: name.removeprefix("ALBUM_TYPE_").lower() for name, value in catalog_pb2.AlbumType.items()}
IMPORT_OUTCOME_NAMES = {value: name.removeprefix("IMPORT_OUTCOME_").lower()
                        for name, value in catalog_api.ImportOutcome.items()}
LABEL_TYPE_NAMES = {value: name.removeprefix("LABEL_TYPE_").lower() for name, value in catalog_pb2.LabelType.items()}


def emit(args, console: Console, messages, table: Table | None) -> None:
    """Prints protobuf messages as JSON for scripts, or the table for people."""
    if args.json:
        documents = [json_format.MessageToDict(message) for message in messages]
        print(json.dumps(documents, indent=2))
    elif table is not None:
        console.print(table)


def _flags(image: catalog_pb2.Image) -> str:
    return ", ".join(flag for flag, on in (("public", image.is_public), ("nsfw", image.is_nsfw)) if on) or "private"


def _image_table(images: list[catalog_pb2.Image], positions: list[int] | None = None) -> Table:
    table = Table("position" if positions is not None else "id", "id", "file", "size", "prompt", "flags")
    if positions is None:
        table.columns.pop(0)
    for index, image in enumerate(images):
        row = [image.id, image.filename, f"{image.generation.width or '?'}x{image.generation.height or '?'}",
               image.generation.prompt[:50], _flags(image)]
        table.add_row(*([str(positions[index])] if positions is not None else []), *row)
    return table


def _album_table(albums: list[catalog_pb2.Album]) -> Table:
    table = Table("id", "name", "type", "images", "training source", "public")
    for album in albums:
        table.add_row(album.id, album.name, ALBUM_TYPE_NAMES[album.album_type], str(album.image_count),
                      "yes" if album.is_training_source else "", "yes" if album.is_public else "")
    return table


def _label_table(labels: list[catalog_pb2.Label]) -> Table:
    table = Table("id", "type", "text", "source")
    for label in labels:
        table.add_row(label.id, LABEL_TYPE_NAMES[label.label_type], label.text, label.source_model or label.created_by)
    return table


# --- images ----------------------------------------------------------------------------------------------------


def _images_list(args, console: Console) -> int:
    with client_from_args(args) as client:
        images = client.list_images(album_id=args.album, limit=args.limit)
    emit(args, console, images, _image_table(images))
    return EXIT_OK


def _images_show(args, console: Console) -> int:
    with client_from_args(args) as client:
        image = client.get_image(args.id)
        labels = client.list_labels(args.id)
    if args.json:
        document = json_format.MessageToDict(image)
        document["labels"] = [json_format.MessageToDict(label) for label in labels]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    console.print(_image_table([image]))
    generation = image.generation
    if generation.prompt:
        console.print(f"prompt: {generation.prompt}\nseed {generation.seed}, {generation.steps} steps, "
                      f"guidance {generation.guidance_scale}, scheduler {generation.scheduler or 'default'}")
    if labels:
        console.print(_label_table(labels))
    return EXIT_OK


def _images_download(args, console: Console) -> int:
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    with client_from_args(args) as client:
        paths = []
        for image_id in args.ids:
            name, data = client.download_image(image_id)
            path = folder / f"{image_id}-{Path(name).name}"
            path.write_bytes(data)
            paths.append(path)
    if args.json:
        print(json.dumps([str(path) for path in paths]))
    else:
        for path in paths:
            console.print(f"saved {path}")
    return EXIT_OK


def _images_update(args, console: Console) -> int:
    fields = {name: value for name, value in (("is_public", args.public), ("is_nsfw", args.nsfw))
              if value is not None}
    if not fields:
        console.print("[red]error:[/red] nothing to change: give --public/--private or --nsfw/--not-nsfw")
        return EXIT_BAD_INPUT
    with client_from_args(args) as client:
        image = client.update_image(args.id, **fields)
    emit(args, console, [image], _image_table([image]))
    return EXIT_OK


def delete_each(args, console: Console, delete, what: str) -> int:
    """Deletes ``args.ids`` one by one with ``delete``, saying so for each (or once, as JSON)."""
    for item_id in args.ids:
        delete(item_id)
        if not args.json:
            console.print(f"deleted {what} {item_id}")
    if args.json:
        print(json.dumps({"deleted": args.ids}))
    return EXIT_OK


def _images_delete(args, console: Console) -> int:
    with client_from_args(args) as client:
        return delete_each(args, console, client.delete_image, "image")


# --- albums ----------------------------------------------------------------------------------------------------


def _albums_list(args, console: Console) -> int:
    filters = {"is_training_source": True} if args.training_sources else {}
    with client_from_args(args) as client:
        albums = client.list_albums(limit=args.limit, **filters)
    emit(args, console, albums, _album_table(albums))
    return EXIT_OK


def _albums_create(args, console: Console) -> int:
    with client_from_args(args) as client:
        album = client.create_album(args.name, description=args.description, is_public=args.public,
                                    is_training_source=args.training_source)
    emit(args, console, [album], _album_table([album]))
    return EXIT_OK


def _albums_show(args, console: Console) -> int:
    with client_from_args(args) as client:
        album = client.get_album(args.id)
        members = client.album_images(args.id, limit=args.limit)
    if args.json:
        document = json_format.MessageToDict(album)
        document["images"] = [json_format.MessageToDict(member) for member in members]
        print(json.dumps(document, indent=2))
        return EXIT_OK
    console.print(_album_table([album]))
    console.print(_image_table([member.image for member in members], [member.position for member in members]))
    return EXIT_OK


def _albums_add(args, console: Console) -> int:
    with client_from_args(args) as client:
        client.add_to_album(args.id, args.image_ids, args.position)
        album = client.get_album(args.id)
    emit(args, console, [album], _album_table([album]))
    return EXIT_OK


def _albums_remove(args, console: Console) -> int:
    with client_from_args(args) as client:
        client.remove_from_album(args.id, args.image_ids)
        album = client.get_album(args.id)
    emit(args, console, [album], _album_table([album]))
    return EXIT_OK


def _albums_training_source(args, console: Console) -> int:
    with client_from_args(args) as client:
        album = client.update_album(args.id, is_training_source=not args.off)
    emit(args, console, [album], _album_table([album]))
    return EXIT_OK


def _albums_delete(args, console: Console) -> int:
    with client_from_args(args) as client:
        client.delete_album(args.id)
    if args.json:
        print(json.dumps({"deleted": args.id}))
    else:
        console.print(f"deleted album {args.id} (its images stay in the catalog)")
    return EXIT_OK


# --- labels ----------------------------------------------------------------------------------------------------


def _labels_list(args, console: Console) -> int:
    with client_from_args(args) as client:
        labels = client.list_labels(args.image_id)
    emit(args, console, labels, _label_table(labels))
    return EXIT_OK


def _labels_add(args, console: Console) -> int:
    with client_from_args(args) as client:
        label = client.add_label(args.image_id, args.text, LABEL_TYPES[args.type])
    emit(args, console, [label], _label_table([label]))
    return EXIT_OK


def _labels_delete(args, console: Console) -> int:
    with client_from_args(args) as client:
        client.delete_label(args.id)
    if args.json:
        print(json.dumps({"deleted": args.id}))
    else:
        console.print(f"deleted label {args.id}")
    return EXIT_OK


# --- import, backup, restore -----------------------------------------------------------------------------------


def _import(args, console: Console) -> int:
    """Streams a legacy outputs folder import with a bar; --verbose prints one line per file."""
    directory = str(Path(args.directory).resolve())
    summary = None
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with client_from_args(args) as client, Progress(*columns, console=console, transient=True,
                                                   disable=args.json) as progress:
        task = progress.add_task("files", total=None)
        for event in client.import_outputs(directory, make_public=args.public):
            if event.WhichOneof("event") == "summary":
                summary = event.summary
                continue
            progress.update(task, completed=event.file.files_done, total=event.file.files_total)
            if args.verbose and not args.json:
                outcome = IMPORT_OUTCOME_NAMES[event.file.outcome]
                console.print(f"{event.file.relative_path}: {outcome} {event.file.message}".rstrip())
    if summary is None:
        raise ImagineerError("the import ended without a summary")
    if args.json:
        print(json.dumps(json_format.MessageToDict(summary, always_print_fields_with_no_presence=True), indent=2))
    else:
        console.print(f"imported {summary.imported}, already present {summary.already_present}, "
                      f"failed {summary.failed}, albums created {summary.albums_created}")
    return EXIT_FAULT if summary.failed else EXIT_OK


def _backup(args, console: Console) -> int:
    target = Path(args.file)
    with client_from_args(args) as client, transfer_bar(console, args.json, "backing up") as (progress, task):
        manifest = client.backup(target, on_bytes=lambda done: progress.update(task, completed=done))
    _print_manifest(args, console, manifest, f"backed up to {target}")
    return EXIT_OK


def _restore(args, console: Console) -> int:
    source = Path(args.file)
    if not source.is_file():
        console.print(f"[red]error:[/red] file: {source} does not exist")
        return EXIT_BAD_INPUT
    with client_from_args(args) as client, transfer_bar(console, args.json, "restoring",
                                                        source.stat().st_size) as (progress, task):
        manifest = client.restore(source, on_bytes=lambda done: progress.update(task, completed=done))
    _print_manifest(args, console, manifest, f"restored from {source}")
    return EXIT_OK


@contextmanager
def transfer_bar(console: Console, quiet: bool, description: str, total: int | None = None):
    """A byte-count bar (of ``total`` bytes, when known); yields the Progress and its task for the caller to
    update."""
    columns = (TextColumn(description), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        yield progress, progress.add_task("transfer", total=total)


def _print_manifest(args, console: Console, manifest, what: str) -> None:
    if args.json:
        print(json.dumps(json_format.MessageToDict(manifest, always_print_fields_with_no_presence=True), indent=2))
    else:
        console.print(f"{what}: {manifest.row_count} rows, {manifest.file_count} files "
                      f"({manifest.file_bytes} bytes), schema revision {manifest.schema_revision}")


# --- parser ----------------------------------------------------------------------------------------------------


def add_commands(commands) -> None:
    """Registers the catalog commands on the top-level sub-parser set."""
    images = commands.add_parser("images", help="images in the catalog").add_subparsers(dest="images_command",
                                                                                         required=True)
    listing = images.add_parser("list", help="images, newest first")
    listing.add_argument("--album", default="", help="only this album's images")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=_images_list)
    show = images.add_parser("show", help="one image with its generation record and labels")
    show.add_argument("id")
    show.set_defaults(handler=_images_show)
    download = images.add_parser("download", help="save image files into a folder")
    download.add_argument("ids", nargs="+", metavar="ID")
    download.add_argument("--out", default=".", help="folder (default: here)")
    download.set_defaults(handler=_images_download)
    update = images.add_parser("update", help="change an image's flags")
    update.add_argument("id")
    update.add_argument("--public", action="store_true", default=None)
    update.add_argument("--private", dest="public", action="store_false")
    update.add_argument("--nsfw", action="store_true", default=None)
    update.add_argument("--not-nsfw", dest="nsfw", action="store_false")
    update.set_defaults(handler=_images_update)
    delete = images.add_parser("delete", help="delete images and their files")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.set_defaults(handler=_images_delete)

    albums = commands.add_parser("albums", help="albums and their ordered images").add_subparsers(
        dest="albums_command", required=True)
    listing = albums.add_parser("list", help="albums, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--training-sources", action="store_true", help="only albums marked as training sources")
    listing.set_defaults(handler=_albums_list)
    create = albums.add_parser("create", help="a new manual album")
    create.add_argument("name")
    create.add_argument("--description", default="")
    create.add_argument("--public", action="store_true")
    create.add_argument("--training-source", action="store_true", help="mark it as a training source")
    create.set_defaults(handler=_albums_create)
    show = albums.add_parser("show", help="an album and its images in order")
    show.add_argument("id")
    show.add_argument("--limit", type=int, default=200)
    show.set_defaults(handler=_albums_show)
    add = albums.add_parser("add", help="append images (or insert them at --position)")
    add.add_argument("id")
    add.add_argument("image_ids", nargs="+", metavar="IMAGE_ID")
    add.add_argument("--position", type=int, help="zero-based position to insert at")
    add.set_defaults(handler=_albums_add)
    remove = albums.add_parser("remove", help="take images out of an album (they stay in the catalog)")
    remove.add_argument("id")
    remove.add_argument("image_ids", nargs="+", metavar="IMAGE_ID")
    remove.set_defaults(handler=_albums_remove)
    source = albums.add_parser("training-source", help="mark an album as a training source (or --off)")
    source.add_argument("id")
    source.add_argument("--off", action="store_true")
    source.set_defaults(handler=_albums_training_source)
    delete = albums.add_parser("delete", help="delete an album (not its images)")
    delete.add_argument("id")
    delete.set_defaults(handler=_albums_delete)

    labels = commands.add_parser("labels", help="captions, tags and other labels of images").add_subparsers(
        dest="labels_command", required=True)
    listing = labels.add_parser("list", help="an image's labels")
    listing.add_argument("image_id")
    listing.set_defaults(handler=_labels_list)
    add = labels.add_parser("add", help="add a label to an image")
    add.add_argument("image_id")
    add.add_argument("text")
    add.add_argument("--type", choices=sorted(LABEL_TYPES), default="manual")
    add.set_defaults(handler=_labels_add)
    delete = labels.add_parser("delete", help="delete a label")
    delete.add_argument("id")
    delete.set_defaults(handler=_labels_delete)

    importing = commands.add_parser("import", help="import a legacy outputs folder the catalog can read")
    importing.add_argument("directory")
    importing.add_argument("--private", dest="public", action="store_false", default=None,
                           help="import as private (default: public, as the legacy app did)")
    importing.add_argument("--verbose", action="store_true", help="one line per file")
    importing.set_defaults(handler=_import)

    backup = commands.add_parser("backup", help="download a consistent backup of the whole catalog")
    backup.add_argument("file")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser("restore", help="restore a backup into an empty catalog")
    restore.add_argument("file")
    restore.set_defaults(handler=_restore)


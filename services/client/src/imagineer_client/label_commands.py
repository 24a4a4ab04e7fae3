"""`imagineer label image|album ID` and `imagineer labeling list|watch|cancel`: AI labeling on the trainer.

Exit codes as the rest of the CLI: 0 when the labeling completed (its summary tells which images failed), 1 when
it failed, was cancelled or interrupted, or the server faulted, 2 when the request was refused.
"""

from __future__ import annotations

import argparse
import json

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import labeling_service_pb2 as api
from imagineer_client.client import client_from_args
from imagineer_client.progress import follow_labeling

EXIT_OK, EXIT_FAULT = 0, 1
STATE_NAMES = {value: name.removeprefix("JOB_STATE_").lower() for name, value in common_pb2.JobState.items()}
OUTCOMES = {value: name.removeprefix("IMAGE_OUTCOME_").lower() for name, value in api.ImageOutcome.items()}


def _exit_code(labeling: api.Labeling) -> int:
    return EXIT_OK if STATE_NAMES[labeling.state] == "completed" else EXIT_FAULT


def print_labeling(labeling: api.Labeling, args, console: Console) -> None:
    if args.json:
        print(json.dumps(json_format.MessageToDict(labeling, preserving_proto_field_name=True), indent=2))
        return
    state = STATE_NAMES[labeling.state]
    colour = "green" if state == "completed" else "red" if state in ("failed", "cancelled") else "yellow"
    target = labeling.request.WhichOneof("target") or "target"
    console.print(f"labeling [bold]{labeling.id}[/bold] of {target.removesuffix('_id')} "
                  f"{getattr(labeling.request, target, '')} with {labeling.source_model}: [{colour}]{state}[/{colour}]"
                  + (f" ({labeling.error_message})" if labeling.error_message else ""))
    summary = labeling.summary
    console.print(f"{labeling.images_done}/{labeling.total_images} images: {summary.labeled} labeled, "
                  f"{summary.failed} failed, {summary.skipped} skipped")
    if summary.problems:
        table = Table("image", "outcome", "reason")
        for problem in summary.problems:
            table.add_row(problem.image_id, OUTCOMES[problem.outcome], problem.reason)
        console.print(table)


def _label(args, console: Console) -> int:
    with client_from_args(args) as client:
        labeling = client.label(labeler=args.labeler, **{f"{args.label_kind}_id": args.id})
        if not args.no_wait:
            labeling = follow_labeling(client, labeling, console, quiet=args.json)
    print_labeling(labeling, args, console)
    return EXIT_OK if args.no_wait else _exit_code(labeling)


def _list(args, console: Console) -> int:
    with client_from_args(args) as client:
        labelings = client.list_labelings(args.limit)
    if args.json:
        print(json.dumps([json_format.MessageToDict(item, preserving_proto_field_name=True) for item in labelings],
                         indent=2))
        return EXIT_OK
    table = Table("id", "target", "labeler", "state", "images", "labeled", "failed", "skipped")
    for item in labelings:
        kind = item.request.WhichOneof("target") or ""
        table.add_row(item.id, f"{kind.removesuffix('_id')} {getattr(item.request, kind, '') if kind else ''}",
                      item.source_model, STATE_NAMES[item.state], f"{item.images_done}/{item.total_images}",
                      str(item.summary.labeled), str(item.summary.failed), str(item.summary.skipped))
    console.print(table)
    return EXIT_OK


def _watch(args, console: Console) -> int:
    with client_from_args(args) as client:
        labeling = follow_labeling(client, client.get_labeling(args.id), console, quiet=args.json)
    print_labeling(labeling, args, console)
    return _exit_code(labeling)


def _cancel(args, console: Console) -> int:
    with client_from_args(args) as client:
        print_labeling(client.cancel_labeling(args.id), args, console)
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `label` and `labeling` to the CLI's subcommands."""
    label = commands.add_parser("label", help="AI-label an image or an album: caption, tags, NSFW rating")
    targets = label.add_subparsers(dest="label_kind", required=True)
    for kind, text in (("image", "one catalog image"), ("album", "every image of a catalog album")):
        target = targets.add_parser(kind, help=f"label {text}")
        target.add_argument("id", help=f"the catalog {kind} id")
        target.add_argument("--labeler", default="", choices=["local", "anthropic"], metavar="{local,anthropic}",
                            help="which labeler (default: the trainer's IMAGINEER_TRAINER_LABELER)")
        target.add_argument("--no-wait", action="store_true", help="print the queued labeling and return")
        target.set_defaults(handler=_label)

    jobs = commands.add_parser("labeling", help="labeling jobs").add_subparsers(dest="labeling_command",
                                                                                 required=True)
    listing = jobs.add_parser("list", help="recent labelings, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=_list)
    watch = jobs.add_parser("watch", help="follow a labeling until it ends")
    watch.add_argument("id")
    watch.set_defaults(handler=_watch)
    cancel = jobs.add_parser("cancel", help="cancel a labeling (it stops before its next image)")
    cancel.add_argument("id")
    cancel.set_defaults(handler=_cancel)

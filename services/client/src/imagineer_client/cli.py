"""`imagineer`: the command line for the Imagineer services.

Exit codes: 0 success, 2 bad input (the request was refused), 1 a server fault or a failed job, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from imagineer.common.v1 import common_pb2
from imagineer.generator.v1 import generator_service_pb2 as api
from imagineer_client import artifact_commands, catalog_commands, label_commands, scrape_commands
from imagineer_client.client import Imagineer, ImagineerError, Lora, client_from_args
from imagineer_client.progress import follow_generation, follow_training
from imagineer_common.env import SettingError

EXIT_OK, EXIT_FAULT, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
STATE_NAMES = {value: name.removeprefix("JOB_STATE_").lower() for name, value in common_pb2.JobState.items()}


def _generate(args, console: Console) -> int:
    try:
        loras = [Lora.parse(text) for text in args.lora]
        rows_csv = Path(args.rows).read_text(encoding="utf-8") if args.rows else ""
    except (ValueError, OSError) as error:
        console.print(f"[red]error:[/red] {error}")
        return EXIT_BAD_INPUT
    with client_from_args(args) as client:
        job = client.generate(args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                              guidance_scale=args.guidance, scheduler=args.scheduler, width=args.width,
                              height=args.height, images=args.n, loras=loras, album_id=args.album,
                              album_name=args.album_name, make_public=args.public,
                              template=args.prompt if args.rows else "", rows_csv=rows_csv)
        if args.no_wait:
            _print_job(job, args, console)
            return EXIT_OK
        job = follow_generation(client, job, console, quiet=args.json)
        saved = _save(client, job, Path(args.out)) if args.out else []
    _print_job(job, args, console, saved)
    return EXIT_OK if STATE_NAMES[job.state] == "completed" else EXIT_FAULT


def _save(client: Imagineer, job, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for image in job.images:
        if image.image_id:
            name, data = client.download_image(image.image_id)
            target = folder / name
            target.write_bytes(data)
            saved.append(target)
    return saved


def _print_job(job, args, console: Console, saved: list[Path] | None = None) -> None:
    if args.json:
        data = json_format.MessageToDict(job, preserving_proto_field_name=True)
        if saved:
            data["saved_files"] = [str(path) for path in saved]
        print(json.dumps(data, indent=2))
        return
    state = STATE_NAMES[job.state]
    colour = "green" if state == "completed" else "red" if state in ("failed", "cancelled") else "yellow"
    console.print(f"job [bold]{job.id}[/bold]: [{colour}]{state}[/{colour}]"
                  + (f" ({job.error_message})" if job.error_message else ""))
    if job.album_id:
        console.print(f"album {job.album_id}")
    table = Table("#", "seed", "catalog id", "prompt")
    for index, image in enumerate(job.images):
        table.add_row(str(index), str(image.seed), image.image_id or "-", image.prompt)
    console.print(table)
    for path in saved or []:
        console.print(f"saved {path}")


def _jobs_list(args, console: Console) -> int:
    with client_from_args(args) as client:
        jobs = client.list_generations(args.limit)
    if args.json:
        print(json.dumps([json_format.MessageToDict(job, preserving_proto_field_name=True) for job in jobs], indent=2))
        return EXIT_OK
    table = Table("id", "state", "images", "album", "prompt")
    for job in jobs:
        table.add_row(job.id, STATE_NAMES[job.state], f"{job.images_done}/{len(job.images)}", job.album_id,
                      job.parameters.prompt[:60])
    console.print(table)
    return EXIT_OK


def _jobs_cancel(args, console: Console) -> int:
    with client_from_args(args) as client:
        _print_job(client.cancel(args.id), args, console)
    return EXIT_OK


def _jobs_watch(args, console: Console) -> int:
    with client_from_args(args) as client:
        job = follow_generation(client, _get(client, args.id), console, quiet=args.json)
    _print_job(job, args, console)
    return EXIT_OK if STATE_NAMES[job.state] == "completed" else EXIT_FAULT


def _get(client: Imagineer, job_id: str):
    try:
        return client.generator.GetGeneration(api.GetGenerationRequest(id=job_id), metadata=client.metadata)
    except grpc.RpcError as error:
        raise ImagineerError.from_rpc(error) from None


def _train(args, console: Console) -> int:
    options = {"steps": args.steps, "rank": args.rank, "learning_rate": args.learning_rate,
               "batch_size": args.batch_size, "resolution": args.resolution, "name": args.name,
               "trigger_word": args.trigger, "validation_prompts": args.validate,
               "checkpoint_interval": args.checkpoint_every}
    if args.seed is not None:
        options["seed"] = args.seed
    with client_from_args(args) as client:
        training = client.train(args.album, **options)
        if args.no_wait:
            _print_training(training, args, console)
            return EXIT_OK
        training = follow_training(client, training, console, quiet=args.json)
    _print_training(training, args, console)
    return EXIT_OK if STATE_NAMES[training.state] == "completed" else EXIT_FAULT


def _print_training(training, args, console: Console) -> None:
    if args.json:
        print(json.dumps(json_format.MessageToDict(training, preserving_proto_field_name=True), indent=2))
        return
    state = STATE_NAMES[training.state]
    colour = "green" if state == "completed" else "red" if state in ("failed", "cancelled") else "yellow"
    console.print(f"training [bold]{training.id}[/bold] ({training.request.name}): [{colour}]{state}[/{colour}]"
                  + (f" ({training.error_message})" if training.error_message else ""))
    console.print(f"step {training.current_step}/{training.total_steps}, loss {training.loss:.4f}, "
                  f"{training.image_count} images")
    if training.artifact_id:
        console.print(f"LoRA artifact {training.artifact_id}: use it with "
                      f"`imagineer generate PROMPT --lora {training.artifact_id}:0.8`")


def _runs_list(args, console: Console) -> int:
    with client_from_args(args) as client:
        trainings = client.list_trainings(args.limit)
    if args.json:
        print(json.dumps([json_format.MessageToDict(t, preserving_proto_field_name=True) for t in trainings], indent=2))
        return EXIT_OK
    table = Table("id", "name", "state", "step", "loss", "artifact")
    for training in trainings:
        table.add_row(training.id, training.request.name, STATE_NAMES[training.state],
                      f"{training.current_step}/{training.total_steps}", f"{training.loss:.4f}", training.artifact_id)
    console.print(table)
    return EXIT_OK


def _runs_watch(args, console: Console) -> int:
    with client_from_args(args) as client:
        training = follow_training(client, client.get_training(args.id), console, quiet=args.json)
    _print_training(training, args, console)
    return EXIT_OK if STATE_NAMES[training.state] == "completed" else EXIT_FAULT


def _runs_cancel(args, console: Console) -> int:
    with client_from_args(args) as client:
        _print_training(client.cancel_training(args.id), args, console)
    return EXIT_OK


def _add_global_options(parser: argparse.ArgumentParser, *, default=None) -> None:
    parser.add_argument("--catalog", default=default,
                        help="catalog address (default $IMAGINEER_CATALOG_ADDRESS or 127.0.0.1:50051)")
    parser.add_argument("--generator", default=default,
                        help="generator address (default $IMAGINEER_GENERATOR_ADDRESS or 127.0.0.1:50052)")
    parser.add_argument("--trainer", default=default,
                        help="trainer address (default $IMAGINEER_TRAINER_ADDRESS or 127.0.0.1:50053)")
    parser.add_argument("--token", default=default,
                        help="admin token (default $IMAGINEER_TOKEN or the development token)")
    parser.add_argument("--json", action="store_true", default=default if default is not None else False,
                        help="print JSON for scripts instead of tables")


def _accept_global_options_after_commands(parser: argparse.ArgumentParser) -> None:
    """`imagineer albums list --json` as well as `imagineer --json albums list`: every command takes the global
    options too, without overriding what was given before the command when it is not repeated."""
    for action in parser._actions:  # argparse offers no public walk of its sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    _accept_global_options_after_commands(sub)
                else:
                    _add_global_options(sub, default=argparse.SUPPRESS)


def _status(args, console: Console) -> int:
    with client_from_args(args) as client:
        statuses = client.status()
    if args.json:
        print(json.dumps([vars(status) for status in statuses], indent=2))
    else:
        table = Table("service", "grpc service", "state", "detail")
        for status in statuses:
            colour = "green" if status.state == "SERVING" else "red"
            table.add_row(status.name, status.service, f"[{colour}]{status.state}[/{colour}]", status.detail)
        console.print(table)
    return EXIT_OK if all(status.state == "SERVING" for status in statuses) else EXIT_FAULT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagineer", description="Command line for the Imagineer services.")
    _add_global_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="is each service up, and what the generator has loaded")
    status.set_defaults(handler=_status)

    generate = commands.add_parser("generate", help="generate images and store them in the catalog")
    generate.add_argument("prompt", help="the prompt, or with --rows a template such as 'a {animal} in {place}'")
    generate.add_argument("--rows", metavar="CSV_FILE",
                          help="expand the prompt as a template over this CSV's rows (header = variable names)")
    generate.add_argument("--album-name", default="", help="name of the new album (default from the prompt)")
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    generate.add_argument("--steps", type=int, default=0, help="denoising steps (default 25)")
    generate.add_argument("--guidance", type=float, default=0.0, help="guidance scale (default 7.5)")
    generate.add_argument("--scheduler", default="", help="ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, pndm…")
    generate.add_argument("--width", type=int, default=0)
    generate.add_argument("--height", type=int, default=0)
    generate.add_argument("-n", type=int, default=1, help="number of images")
    generate.add_argument("--lora", action="append", default=[], metavar="ID[:WEIGHT]",
                          help="LoRA artifact id and weight; repeat for several")
    generate.add_argument("--album", default="", help="add to this album instead of a new batch album")
    generate.add_argument("--public", action="store_true", help="make the images public")
    generate.add_argument("--out", help="also save the images into this folder")
    generate.add_argument("--no-wait", action="store_true", help="print the queued job and return")
    generate.set_defaults(handler=_generate)

    jobs = commands.add_parser("jobs", help="generation jobs").add_subparsers(dest="jobs_command", required=True)
    listing = jobs.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=_jobs_list)
    cancel = jobs.add_parser("cancel", help="cancel a job")
    cancel.add_argument("id")
    cancel.set_defaults(handler=_jobs_cancel)
    watch = jobs.add_parser("watch", help="follow a job until it ends")
    watch.add_argument("id")
    watch.set_defaults(handler=_jobs_watch)

    train = commands.add_parser("train", help="train a LoRA from catalog albums")
    train.add_argument("--album", action="append", required=True, help="album id; repeat for several")
    train.add_argument("--steps", type=int, default=0, help="optimisation steps (default 200)")
    train.add_argument("--rank", type=int, default=0, help="LoRA rank (default 8)")
    train.add_argument("--learning-rate", type=float, default=0.0, help="default 1e-4")
    train.add_argument("--batch-size", type=int, default=0, help="default 4")
    train.add_argument("--resolution", type=int, default=0, help="default: the model's size")
    train.add_argument("--seed", type=int)
    train.add_argument("--name", default="")
    train.add_argument("--trigger", default="", help="trigger word prepended to every caption")
    train.add_argument("--validate", action="append", default=[], metavar="PROMPT",
                       help="validation prompt rendered at each checkpoint; repeat for several")
    train.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (default 50)")
    train.add_argument("--no-wait", action="store_true", help="print the queued training and return")
    train.set_defaults(handler=_train)

    runs = commands.add_parser("runs", help="training runs").add_subparsers(dest="runs_command", required=True)
    runs_list = runs.add_parser("list", help="recent trainings, newest first")
    runs_list.add_argument("--limit", type=int, default=20)
    runs_list.set_defaults(handler=_runs_list)
    runs_watch = runs.add_parser("watch", help="follow a training until it ends")
    runs_watch.add_argument("id")
    runs_watch.set_defaults(handler=_runs_watch)
    runs_cancel = runs.add_parser("cancel", help="cancel a training")
    runs_cancel.add_argument("id")
    runs_cancel.set_defaults(handler=_runs_cancel)

    catalog_commands.add_commands(commands)
    artifact_commands.add_commands(commands)
    label_commands.add_commands(commands)
    scrape_commands.add_commands(commands)
    _accept_global_options_after_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.json)
    try:
        return args.handler(args, console)
    except ImagineerError as error:
        console.print(f"[red]error:[/red] {error}")
        return EXIT_BAD_INPUT if error.bad_input else EXIT_FAULT
    except SettingError as error:
        console.print(f"[red]configuration error:[/red] {error}")
        return EXIT_BAD_INPUT
    except OSError as error:  # a local file that cannot be read or written
        console.print(f"[red]error:[/red] {error}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

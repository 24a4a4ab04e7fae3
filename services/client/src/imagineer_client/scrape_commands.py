"""`imagineer scrape start URL | list | watch ID | cancel ID`: web scrapes run by the trainer into the catalog.

Exit codes as the rest of the CLI: 0 success, 2 refused request, 1 a server fault or a scrape that did not
complete, 130 interrupted.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import scraping_service_pb2 as api
from imagineer_client.client import Imagineer, client_from_args

EXIT_OK, EXIT_FAULT = 0, 1
STATE_NAMES = {value: name.removeprefix("JOB_STATE_").lower() for name, value in common_pb2.JobState.items()}


def _as_dict(scrape: api.Scrape) -> dict:
    return json_format.MessageToDict(scrape, preserving_proto_field_name=True)


def _print_scrape(scrape: api.Scrape, args, console: Console) -> None:
    if args.json:
        print(json.dumps(_as_dict(scrape), indent=2))
        return
    state = STATE_NAMES[scrape.state]
    colour = "green" if state == "completed" else "red" if state in ("failed", "cancelled") else "yellow"
    console.print(f"scrape [bold]{scrape.id}[/bold] of {scrape.request.source_url}: [{colour}]{state}[/{colour}]"
                  + (f" ({scrape.error_message})" if scrape.error_message else ""))
    console.print(f"{scrape.pages_seen} pages, {scrape.images_found} images found, {scrape.images_kept} kept, "
                  f"{scrape.images_skipped} skipped, {scrape.error_count} errors")
    if scrape.skip_reasons:
        console.print("skipped: " + ", ".join(f"{reason} {count}" for reason, count in sorted(
            scrape.skip_reasons.items())))
    if scrape.album_id:
        console.print(f"album {scrape.album_id} (private)")


def _follow(client: Imagineer, scrape: api.Scrape, console: Console, *, quiet: bool) -> api.Scrape:
    """A live bar: images handled of those found, with pages and kept images alongside."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        task = progress.add_task("scraping", total=None, info="")
        for event in client.watch_scrape(scrape.id):
            scrape = event.scrape
            progress.update(task, description=scrape.stage or "scraping",
                            completed=scrape.images_kept + scrape.images_skipped, total=scrape.images_found or None,
                            info=f"{scrape.pages_seen} pages, {scrape.images_kept} kept")
    return scrape


def _done(scrape: api.Scrape) -> int:
    return EXIT_OK if STATE_NAMES[scrape.state] == "completed" else EXIT_FAULT


def _start(args, console: Console) -> int:
    options = {"max_pages": args.max_pages, "max_images": args.max_images, "min_width": args.min_width,
               "min_height": args.min_height, "allowed_formats": args.format, "album_name": args.album_name,
               "request_id": args.request_id,
               "link_policy": api.LINK_POLICY_FOLLOW_ALL if args.follow_links else api.LINK_POLICY_SAME_SITE}
    if args.depth is not None:
        options["max_depth"] = args.depth
    with client_from_args(args) as client:
        scrape = client.start_scrape(args.url, **options)
        if args.no_wait:
            _print_scrape(scrape, args, console)
            return EXIT_OK
        scrape = _follow(client, scrape, console, quiet=args.json)
    _print_scrape(scrape, args, console)
    return _done(scrape)


def _list(args, console: Console) -> int:
    with client_from_args(args) as client:
        scrapes = client.list_scrapes(args.limit)
    if args.json:
        print(json.dumps([_as_dict(scrape) for scrape in scrapes], indent=2))
        return EXIT_OK
    table = Table("id", "state", "pages", "kept", "skipped", "album", "source")
    for scrape in scrapes:
        table.add_row(scrape.id, STATE_NAMES[scrape.state], str(scrape.pages_seen), str(scrape.images_kept),
                      str(scrape.images_skipped), scrape.album_id, scrape.request.source_url[:60])
    console.print(table)
    return EXIT_OK


def _watch(args, console: Console) -> int:
    with client_from_args(args) as client:
        scrape = _follow(client, client.get_scrape(args.id), console, quiet=args.json)
    _print_scrape(scrape, args, console)
    return _done(scrape)


def _cancel(args, console: Console) -> int:
    with client_from_args(args) as client:
        _print_scrape(client.cancel_scrape(args.id), args, console)
    return EXIT_OK


def add_commands(commands) -> None:
    """Adds `scrape` and its subcommands to the CLI's subparsers."""
    scrape = commands.add_parser("scrape", help="collect images from the web into a private scraped album")
    actions = scrape.add_subparsers(dest="scrape_command", required=True)
    start = actions.add_parser("start", help="start a scrape and follow it until it ends")
    start.add_argument("url", help="the http(s) page to start from")
    start.add_argument("--depth", type=int, help="links to follow from the start page (default 2; 0 = only it)")
    start.add_argument("--max-pages", type=int, default=0, help="most pages to fetch (default 20)")
    start.add_argument("--max-images", type=int, default=0, help="most images to import (default 100)")
    start.add_argument("--follow-links", action="store_true", help="follow links to other sites too")
    start.add_argument("--min-width", type=int, default=0, help="smallest width to keep (default 256)")
    start.add_argument("--min-height", type=int, default=0, help="smallest height to keep (default 256)")
    start.add_argument("--format", action="append", default=[], metavar="FORMAT",
                       help="png, jpeg, webp, gif or bmp; repeat for several (default png, jpeg, webp, gif)")
    start.add_argument("--album-name", default="", help="name of the new album")
    start.add_argument("--request-id", default="", help="idempotency key: a retry returns the first scrape")
    start.add_argument("--no-wait", action="store_true", help="print the queued scrape and return")
    start.set_defaults(handler=_start)
    listing = actions.add_parser("list", help="recent scrapes, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=_list)
    watch = actions.add_parser("watch", help="follow a scrape until it ends")
    watch.add_argument("id")
    watch.set_defaults(handler=_watch)
    cancel = actions.add_parser("cancel", help="cancel a scrape (what it imported is kept)")
    cancel.add_argument("id")
    cancel.set_defaults(handler=_cancel)

"""``tuner retime``: time a study's front again, every kept model side by side."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._cli import _console, _storage_arg, positive_int
from ._exceptions import EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "retime",
        help="time the front's kept models again, side by side on this machine",
    )
    p.add_argument("study", help="study name")
    from .storage._retimed import DEFAULT_ROUNDS

    p.add_argument(
        "--rounds",
        type=positive_int,
        default=DEFAULT_ROUNDS,
        help="times each model is timed, in rotated orders; the medians are kept "
        f"(default {DEFAULT_ROUNDS})",
    )
    p.add_argument(
        "--artifacts",
        metavar="DIR",
        help="artifacts folder, when it moved since the study ran (holds one folder per study)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster whose node offers the front's measure.target (default $RAY_ADDRESS); "
        "a front timed on a target is timed there again",
    )
    p.add_argument(
        "--here",
        action="store_true",
        help="time a front timed on a measure.target on this machine instead",
    )
    from ._cli import add_ship_arg

    add_ship_arg(p)
    p.add_argument("--json", action="store_true", help="print the re-timing as JSON")
    _storage_arg(p)
    p.set_defaults(func=_cmd_retime)


def _cmd_retime(args: argparse.Namespace) -> int:
    from ._retime import retime

    # Progress goes to stderr, so that --json's standard output stays one document.
    progress = _console(stderr=True)
    result = retime(
        args.study,
        storage=args.storage,
        rounds=args.rounds,
        artifacts=args.artifacts,
        progress=lambda line: progress.print(line, markup=False, soft_wrap=True),
        address=args.address,
        here=args.here,
        ship=not args.no_ship,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return EXIT_OK
    _print_retiming(_console(), result)
    return EXIT_OK


def _print_retiming(console: Any, result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .storage import retiming_notes, retiming_rows

    table = Table(
        title=(
            f"front of {result.study}, re-timed side by side on {result.where} "
            f"({result.rounds} rounds, {result.when})"
        ),
        title_justify="left",
    )
    rows = retiming_rows(result)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("runtime", "stored on") else "right")
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()))
    console.print(table)
    for warning, note in retiming_notes(result):
        console.print(
            ("[bold yellow]warning:[/] " if warning else "") + escape(note), highlight=False
        )
    kept = (
        "this re-timing is kept on the study and the dashboard shows it beside them"
        if result.kept
        else "this re-timing was not kept on the study (see above); --json prints it"
    )
    console.print(f"the stored figures are unchanged; {kept}", highlight=False)

"""``tuner compare``: studies side by side on the objectives they share."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._cli import _console, _open_readonly, _storage_arg
from ._exceptions import EXIT_OK, SpecError, storage_error


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="studies side by side: each front's share of one box, and the joint front",
    )
    p.add_argument("studies", nargs="+", metavar="STUDY", help="two or more study names")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _storage_arg(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .storage import StoreError, compare_studies

    names = list(dict.fromkeys(args.studies))
    if len(names) < 2:
        raise SpecError(f"studies: got {names!r}; expected two or more study names")
    store = _open_readonly(args.storage)
    try:
        comparison = compare_studies(store, names)
    except StoreError as exc:
        raise storage_error(exc) from exc
    finally:
        store.engine.dispose()
    if len(comparison.objectives) < 2:
        shared = ", ".join(comparison.objectives) or "none"
        left = f"; left out: {', '.join(comparison.left_out)}" if comparison.left_out else ""
        raise SpecError(
            f"studies: {', '.join(names)} share fewer than two objectives the same way round "
            f"(shared: {shared}{left}); there is no trade-off to compare"
        )
    if args.json:
        print(json.dumps(_as_dict(comparison), indent=2))
        return EXIT_OK
    _print(_console(), comparison)
    return EXIT_OK


def _as_dict(comparison: Any) -> dict[str, Any]:
    return {
        "objectives": comparison.objectives,
        "left_out": comparison.left_out,
        "studies": [
            {
                "study": s.name,
                "trials_compared": len(s.trials),
                "front": [r.number for r in s.front],
                "joint_front": s.joint,
                "hypervolume": s.hypervolume,
            }
            for s in comparison.studies
        ],
    }


def _print(console: Any, comparison: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    shared = ", ".join(
        f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in comparison.objectives.items()
    )
    left = f"; left out: {', '.join(comparison.left_out)}" if comparison.left_out else ""
    table = Table(title=f"compared on {shared}{left}", title_justify="left")
    rows = comparison.rows()
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "study" else "right")
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row.values()))
    console.print(table)
    joint = sum(len(s.joint) for s in comparison.studies)
    if joint:
        holders = sorted(comparison.studies, key=lambda s: -len(s.joint))
        console.print(
            f"joint front: {joint} trials, no trial of any of these studies better on every "
            "objective; " + ", ".join(f"{escape(s.name)} holds {len(s.joint)}" for s in holders),
            soft_wrap=True,
        )
    console.print(
        "hypervolume: the share of one box that the study's front dominates, higher is "
        "better; the box spans each objective from its best value over every study's trials "
        "to a tenth of that range past the worst",
        soft_wrap=True,
    )

"""``tuner submit`` and ``tuner jobs``: sweeps as Ray jobs on a cluster."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from ._exceptions import EXIT_FAILED, EXIT_OK


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help="Ray dashboard address, e.g. http://HEAD:8265 (else $RAY_API_SERVER_ADDRESS)",
    )


def add_parser(sub: Any) -> None:
    from ._cli import positive_int

    p = sub.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray job")
    p.add_argument("spec", help="YAML spec inside the working directory, or a shipped spec's name")
    _address_arg(p)
    p.add_argument(
        "--storage",
        metavar="URL",
        help="study store URL the cluster can reach (else the spec's, "
        "else $TUNER_STORAGE, else sqlite:///tuner.db)",
    )
    p.add_argument(
        "--n-trials", type=positive_int, help="total finished trials (COMPLETE + PRUNED)"
    )
    p.add_argument(
        "--workers", type=positive_int, default=1, help="trials in flight at once (default 1)"
    )
    p.add_argument("--study-name", help="name in the store (default: the spec's name)")
    p.add_argument("--working-dir", default=".", help="folder shipped to the cluster (default .)")
    p.add_argument("--wait", action="store_true", help="wait until the job ends")
    p.add_argument("--follow", action="store_true", help="print the job's log until it ends")
    p.set_defaults(func=_cmd_submit)

    jobs = sub.add_parser("jobs", help="sweeps submitted to a Ray cluster")
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", parser_class=type(jobs))
    actions.required = True
    ls = actions.add_parser("list", help="submitted sweeps, newest first")
    _address_arg(ls)
    ls.set_defaults(func=_cmd_list)
    for name, helptext, func in (
        ("status", "state of one submitted sweep", _cmd_status),
        ("logs", "log of one submitted sweep", _cmd_logs),
        ("stop", "stop a submitted sweep", _cmd_stop),
    ):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("submission_id", help="as printed by tuner submit / tuner jobs list")
        _address_arg(a)
        if name == "logs":
            a.add_argument("--follow", action="store_true", help="keep printing until the job ends")
        a.set_defaults(func=func)


def _console() -> Any:
    import shutil

    from rich.console import Console

    # Submission ids stay on one line when the output is a file or a pipe.
    width = max(shutil.get_terminal_size((160, 40)).columns, 140)
    return Console(highlight=False, soft_wrap=True, width=width)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _print_info(console: Any, info: Any) -> None:
    console.print(
        f"job [bold]{info.submission_id}[/]: study {info.study}, {info.status}"
        + (f" on {info.storage}" if info.storage else "")
        + (f" - {info.message}" if info.message else "")
    )


def _cmd_submit(args: argparse.Namespace) -> int:
    from . import _submit

    info = _submit.submit(
        args.spec,
        address=args.address,
        storage=args.storage,
        n_trials=args.n_trials,
        workers=args.workers,
        study_name=args.study_name,
        working_dir=args.working_dir,
    )
    console = _console()
    _print_info(console, info)
    address = f" --address {args.address}" if args.address else ""
    if not (args.wait or args.follow):
        console.print(
            f"next:\n  tuner jobs status {info.submission_id}{address}\n"
            f"  tuner jobs logs {info.submission_id}{address} --follow"
        )
        return EXIT_OK
    jobs_client = _submit.client(args.address)
    if args.follow:
        info = _submit.follow(jobs_client, info.submission_id)
    else:
        info = _submit.wait(jobs_client, info.submission_id)
    _print_info(console, info)
    return EXIT_OK if info.status == "SUCCEEDED" else EXIT_FAILED


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from . import _submit

    jobs = _submit.list_jobs(_submit.client(args.address))
    console = _console()
    if not jobs:
        console.print("no sweeps submitted to this cluster yet")
        return EXIT_OK
    table = Table()
    for col in ("submission id", "study", "status", "started", "ended"):
        table.add_column(col, no_wrap=True)
    table.add_column("store", overflow="fold")
    for j in jobs:
        table.add_row(
            j.submission_id, j.study, j.status, _when(j.start_time), _when(j.end_time), j.storage
        )
    console.print(table)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from . import _submit

    info = _submit.job_info(_submit.client(args.address), args.submission_id)
    _print_info(_console(), info)
    return EXIT_OK


def _cmd_logs(args: argparse.Namespace) -> int:
    from . import _submit

    jobs_client = _submit.client(args.address)
    if args.follow:
        info = _submit.follow(jobs_client, args.submission_id)
        return EXIT_OK if info.status == "SUCCEEDED" else EXIT_FAILED
    print(_submit.logs(jobs_client, args.submission_id), end="")
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    from . import _submit

    jobs_client = _submit.client(args.address)
    stopped = _submit.stop(jobs_client, args.submission_id)
    info = _submit.job_info(jobs_client, args.submission_id)
    _print_info(_console(), info)
    if not stopped and info.status not in _submit.TERMINAL:
        return EXIT_FAILED
    return EXIT_OK

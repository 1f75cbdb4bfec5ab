"""The ``tuner`` command line.

Every command that touches a store takes ``--storage URL`` (else ``$TUNER_STORAGE``,
else ``sqlite:///tuner.db``). Errors print one line and exit non-zero: 2 for bad input
(spec, arguments, storage URL), 1 for anything that failed while running.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._exceptions import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    SpecError,
    TunerError,
    storage_error,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse names the flag in the error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer >= 1")
    return value


def _console(stderr: bool = False) -> Any:
    import shutil

    from rich.console import Console

    # Tables stay readable when the output is a file or a pipe, not only a terminal.
    width = max(shutil.get_terminal_size((160, 40)).columns, 120)
    return Console(stderr=stderr, highlight=False, width=width)


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        metavar="URL",
        help="study store URL (else $TUNER_STORAGE, else sqlite:///tuner.db)",
    )


# --- run -----------------------------------------------------------------------------


def _add_run(sub: Any) -> None:
    from ._spec import shipped_specs

    p = sub.add_parser("run", help="run (or resume) a study until its budget is met")
    p.add_argument(
        "spec",
        help=f"YAML spec file, or the name of a shipped spec ({', '.join(shipped_specs())})",
    )
    _storage_arg(p)
    p.add_argument(
        "--n-trials", type=positive_int, help="total finished trials (COMPLETE + PRUNED)"
    )
    p.add_argument(
        "--workers", type=positive_int, default=1, help="trials in flight at once (default 1)"
    )
    p.add_argument("--study-name", help="name in the store (default: the spec's name)")
    p.add_argument("--backend", choices=["inline", "local", "ray"], help="where trials run")
    p.add_argument(
        "--address", help="Ray cluster address (backend ray; else $RAY_ADDRESS or a local Ray)"
    )
    add_ship_arg(p)
    p.add_argument("--json", action="store_true", help="print the Pareto front as JSON")
    p.set_defaults(func=_cmd_run)


def add_ship_arg(p: Any) -> None:
    p.add_argument(
        "--no-ship",
        action="store_true",
        help="with --address: do not ship this folder to the cluster (its nodes share it, or "
        "have the workload installed)",
    )


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """Dispatcher options from ``--address``, which implies ``--backend ray``."""
    if not args.address:
        if not getattr(args, "no_ship", False):
            return {}
        if args.backend != "ray" or not os.environ.get("RAY_ADDRESS"):
            raise SpecError(
                "--no-ship: only used joining a Ray cluster (--address, or --backend ray with "
                "RAY_ADDRESS set)"
            )
        return {"ship": False}
    if args.backend not in (None, "ray"):
        raise SpecError(f"--address: only used with --backend ray, got --backend {args.backend}")
    args.backend = "ray"
    return {"address": args.address, **({"ship": False} if args.no_ship else {})}


def _cmd_run(args: argparse.Namespace) -> int:
    from ._run import result_as_json, run
    from .storage.commands import retime_command

    options = backend_options(args)
    result = run(
        args.spec,
        storage=args.storage,
        n_trials=args.n_trials,
        workers=args.workers,
        backend=args.backend,
        study_name=args.study_name,
        progress=not args.json,
        **options,
    )
    if args.json:
        print(result_as_json(result))
        return EXIT_OK
    console = _console()
    counts = result.counts
    console.print(
        f"\nstudy [bold]{result.study_name}[/] on {result.storage_url}: "
        f"{counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} stopped early, "
        f"{counts.get('FAIL', 0)} failed ({result.trials_run} run now)"
    )
    _print_front(
        console,
        result.pareto_front,
        result.objectives,
        title="Pareto front",
        retime=retime_command(result.study_name, storage=args.storage),
    )
    storage_flag = "" if args.storage is None else f" --storage '{result.storage_url}'"
    name = result.study_name
    steps = [
        (f"tuner best {name}{storage_flag}", "the front again (--json for scripts)"),
        (f"tuner status {name}{storage_flag}", "trials by state, failures, epochs"),
        (f"tuner dashboard{storage_flag}", "see the trade-off in the browser"),
    ]
    budget, pick = _example_budget(result.pareto_front, result.objectives)
    if budget:
        steps.append(
            (f'tuner pick {name} --where "{budget}"{storage_flag}', "best trial within a budget")
        )
    if pick is not None:
        from .storage.commands import export_command

        steps.append(
            (export_command(name, pick, storage=args.storage), "ship that trial, re-measured")
        )
    width = max(len(cmd) for cmd, _ in steps)
    console.print("\nnext:")
    for cmd, what in steps:
        console.print(f"  {cmd.ljust(width)}   {what}", markup=False)
    return EXIT_OK


def _example_budget(front: Sequence[Any], objectives: dict[str, str]) -> tuple[str, int | None]:
    """A budget that about half of the front meets, and the trial `tuner pick` would take."""
    from .storage import Bound, best_within

    limits: dict[str, float] = {}
    for metric in ("latency_ms", "size_bytes"):
        values = sorted(r.values[metric] for r in front if metric in r.values)
        if values:
            middle = values[len(values) // 2]
            # Rounded up, so the trial at the middle is inside the example budget.
            limits[metric] = (
                float(f"{middle * 1.005:.3g}") if metric == "latency_ms" else int(middle) + 1
            )
    best = best_within(front, objectives, [Bound(m, max=v) for m, v in limits.items()])
    text = ", ".join(f"{m}<={v:g}" for m, v in limits.items())
    return text, None if best is None else best.number


def _fmt(metric: str, value: Any) -> str:
    from .storage import show_metric

    return show_metric(metric, value, unit=False)


_HEADERS = {
    "accuracy": "val acc",
    "test_accuracy": "test acc",
    "size_bytes": "size",
    "latency_ms": "latency ms",
    "latency_ms_p90": "p90 ms",
    "latency_ms_batch": "batch ms",
    "latency_ms_batch_p90": "batch p90 ms",
    "sparsity": "sparsity",
    "param_count": "params",
}
_COMPRESSION = ("prune_threshold", "prune_structure", "finetune_epochs", "quantize")


def _describe_params(params: dict[str, Any]) -> str:
    """Training settings in one short line; compression has its own columns."""
    short = {"optimizer": "", "batch_size": "bs=", "weight_decay": "wd=", "momentum": "mom="}
    parts = []
    for key, value in params.items():
        if key in _COMPRESSION:
            continue
        prefix = short.get(key, f"{key}=")
        parts.append(f"{prefix}{value:.3g}" if isinstance(value, float) else f"{prefix}{value}")
    return " ".join(parts)


def _print_front(
    console: Any,
    front: Sequence[Any],
    objectives: dict[str, str],
    *,
    title: str,
    retime: str | None = None,
    retimed: Any = None,
) -> None:
    """The front as a table, with a warning where its latencies do not compare (timed on
    several kinds of machine, or while the machine's speed moved) and then ``retime``, the
    command that times it again side by side; and what its last re-timing (``retimed``, a
    :class:`~tuner.storage.Retiming`) found."""
    from rich.markup import escape
    from rich.table import Table

    from .storage import latency_p90, mixed_machines, precision, sparsity_label, speed_spread

    if not front:
        console.print("no complete trial meets the constraints yet")
        return
    table = Table(title=f"{title} ({len(front)} trials)", title_justify="left")
    table.add_column("trial", justify="right", no_wrap=True)
    columns = list(objectives)
    for extra in ("test_accuracy", latency_p90(objectives), "sparsity", "param_count"):
        if extra not in columns:
            columns.append(extra)
    for c in columns:
        arrow = {"maximize": " ↑", "minimize": " ↓"}.get(objectives.get(c, ""), "")
        table.add_column(_HEADERS.get(c, c) + arrow, justify="right", no_wrap=True)
    table.add_column("sparsity kind", no_wrap=True)
    table.add_column("precision", no_wrap=True)
    table.add_column("training")
    for r in front:
        row = [str(r.number)]
        for c in columns:
            row.append(_fmt(c, r.values.get(c, r.metrics.get(c))))
        row.append(sparsity_label(r.params, r.metrics))
        kind = precision(r.metrics)
        layers = r.metrics.get(f"{kind}_layers") or []
        row.append(f"{kind}, {len(layers)} layers" if layers else kind)
        row.append(_describe_params(r.params))
        table.add_row(*row)
    console.print(table)
    mixed = mixed_machines(r.metrics for r in front)
    if mixed:
        console.print(f"[bold yellow]warning:[/] {escape(mixed)}", highlight=False)
    moved = speed_spread((r.metrics for r in front), least=3)
    if moved:
        console.print(f"note: {escape(moved)}", highlight=False)
    if (mixed or moved) and retime:
        console.print(f"  {retime}   times the front again side by side here", markup=False)
    if retimed is not None:
        _print_retimed(console, front, retimed, retime)


def _print_retimed(console: Any, front: Sequence[Any], retimed: Any, retime: str | None) -> None:
    """A line on the front's last re-timing: the trials it took off, those new since."""
    numbers = {r.number for r in front}
    timed = {t.number for t in retimed.trials}
    console.print(
        f"re-timed side by side on {retimed.where} ({retimed.when}): "
        f"{len(timed & numbers)} of these trials",
        markup=False,
    )
    for number, by in retimed.dominated.items():
        if number in numbers:
            console.print(
                f"[bold yellow]warning:[/] trial {number} is off the front once timed together "
                f"with trial {by}",
                highlight=False,
            )
    newer = retimed.joined(numbers)
    if newer:
        listed = ", ".join(str(n) for n in newer)
        again = f": {retime} times it again" if retime else ""
        kind = "trial" if len(newer) == 1 else "trials"
        console.print(f"{kind} {listed} joined the front since{again}", markup=False)


# --- status / best -----------------------------------------------------------------


def check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise SpecError(f"--port: got {port}; expected a port number from 1 to 65535")


def serve(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server until it exits or Ctrl+C stops it (then it is stopped, exit 0)."""
    import subprocess

    proc = subprocess.Popen(command, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return EXIT_OK


def _open_readonly(url_arg: str | None) -> Any:
    from .storage import StoreError, open_storage, resolve_url

    try:
        return open_storage(resolve_url(url_arg), read_only=True, heartbeat=False)
    except StoreError as exc:
        raise storage_error(exc) from exc


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="studies in the store, or one study's trials by state")
    p.add_argument("study", nargs="?", help="study name (default: every study)")
    _storage_arg(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="for scripts: every study's counts, or one study's counts, epochs and front",
    )
    p.set_defaults(func=_cmd_status)


def _machine(record: Any) -> str:
    """The machine of the worker that ran ``record`` (its ``worker``: ``host (pid N)``)."""
    from .storage.keys import WORKER_ATTR

    worker = str(record.metrics.get(WORKER_ATTR) or "")
    return worker.rsplit(" (pid ", 1)[0] if worker else "unrecorded"


def _by_machine(records: Sequence[Any]) -> dict[str, dict[str, int]]:
    """Trials that started, and those that failed, on each machine."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        if r.datetime_start is None:
            continue
        m = out.setdefault(_machine(r), {"trials": 0, "failed": 0})
        m["trials"] += 1
        m["failed"] += r.state == "FAIL"
    return out


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .storage import StoreError, mask_url, pareto_front, read_records, read_studies, resolve_url
    from .storage.commands import retime_command

    store = _open_readonly(args.storage)
    console = _console()
    try:
        if args.study is None:
            summaries = read_studies(store)
            if args.json:
                print(
                    json.dumps(
                        [
                            {
                                "study": s.name,
                                "state": "running" if s.is_running else "idle",
                                "counts": _state_counts(s.counts),
                                "last_update": s.last_update,
                            }
                            for s in summaries
                        ],
                        indent=2,
                        default=str,
                    )
                )
                return EXIT_OK
            console.print(f"store {mask_url(resolve_url(args.storage))}")
            if not summaries:
                console.print("no studies yet: tuner run search_spaces/digits_mlp.yaml")
                return EXIT_OK
            table = Table()
            for col in (
                "study",
                "state",
                "complete",
                "stopped",
                "failed",
                "running",
                "last update",
            ):
                table.add_column(col)
            for s in summaries:
                c = s.counts
                table.add_row(
                    s.name,
                    "running" if s.is_running else "idle",
                    str(c.get("COMPLETE", 0)),
                    str(c.get("PRUNED", 0)),
                    str(c.get("FAIL", 0)),
                    str(c.get("RUNNING", 0) + c.get("WAITING", 0)),
                    s.last_update.strftime("%Y-%m-%d %H:%M:%S") if s.last_update else "-",
                )
            console.print(table)
            return EXIT_OK
        records = read_records(store, args.study)
    except StoreError as exc:
        raise storage_error(exc) from exc
    from .storage import (
        counted,
        load_study_readonly,
        show_duration,
        show_epochs,
        stored_retiming,
        study_objectives,
    )
    from .storage.keys import WORKER_ATTR

    study = load_study_readonly(store, args.study)
    objectives = study_objectives(study)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    epochs = sum(
        int(r.metrics.get("epochs", len(r.curve)))
        for r in records
        if r.state in ("COMPLETE", "PRUNED")
    )
    # Epochs saved: what the finished trials would have trained without early stopping.
    spec_attr = study.user_attrs.get("tuner.spec") or {}
    max_epochs = (spec_attr.get("budget") or {}).get("max_epochs")
    epochs_saved = None
    if isinstance(max_epochs, int):
        finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        epochs_saved = max(0, max_epochs * finished - epochs)
    saved = f", {epochs_saved} saved by early stopping" if epochs_saved is not None else ""
    machines = _by_machine(records)
    running = [r for r in records if r.state == "RUNNING"]
    if args.json:
        front = pareto_front(records, objectives)
        print(
            json.dumps(
                {
                    "study": args.study,
                    "counts": _state_counts(counts),
                    "epochs": epochs,
                    "epochs_saved": epochs_saved,
                    "front": [
                        {"number": r.number, "params": r.params, "values": r.values} for r in front
                    ],
                    "running": [
                        {
                            "number": r.number,
                            "worker": r.metrics.get(WORKER_ATTR),
                            "since": r.datetime_start,
                        }
                        for r in running
                    ],
                    "machines": machines,
                },
                indent=2,
                default=str,
            )
        )
        return EXIT_OK
    console.print(
        f"study [bold]{args.study}[/]: {counts.get('COMPLETE', 0)} complete, "
        f"{counts.get('PRUNED', 0)} stopped early, {counts.get('FAIL', 0)} failed, "
        f"{counts.get('RUNNING', 0)} running, {counts.get('WAITING', 0)} waiting; "
        f"{epochs} epochs trained{saved}"
    )
    stopped = [r for r in records if r.state == "PRUNED"]
    for r in stopped[-3:]:
        reason = str(r.metrics.get("stopped_reason") or "stopped early")
        console.print(f"  trial {r.number} stopped after {show_epochs(len(r.curve))}: {reason}")
    failed = [r for r in records if r.state == "FAIL" and r.error]
    for r in failed[-3:]:
        on = f" on {_machine(r)}" if len(machines) > 1 else ""
        console.print(f"  trial {r.number} failed{on}: {(r.error or '').splitlines()[0]}")
    now = datetime.datetime.now()
    for r in running[:5]:
        worker = r.metrics.get(WORKER_ATTR) or "a worker"
        since = (
            f" for {show_duration((now - r.datetime_start).total_seconds())}"
            if r.datetime_start
            else ""
        )
        console.print(f"  trial {r.number} running on {worker}{since}")
    if len(machines) > 1:  # where failures gather on one machine of a cluster, it shows
        console.print(
            "  machines: "
            + ", ".join(
                f"{name} {counted(m['trials'], 'trial')}"
                + (f" ({m['failed']} failed)" if m["failed"] else "")
                for name, m in machines.items()
            )
        )
    _print_front(
        console,
        pareto_front(records, objectives),
        objectives,
        title="Pareto front",
        retime=retime_command(args.study, storage=args.storage),
        retimed=stored_retiming(study.user_attrs),
    )
    return EXIT_OK


_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _state_counts(counts: dict[str, int]) -> dict[str, int]:
    """Trials by state, every state named (zero where none), for scripts."""
    return {state.lower(): int(counts.get(state, 0)) for state in _STATES}


def _add_best(sub: Any) -> None:
    p = sub.add_parser("best", help="the Pareto front of a study")
    p.add_argument("study", help="study name")
    _storage_arg(p)
    p.add_argument("--json", action="store_true", help="a JSON list of {number, params, values}")
    p.set_defaults(func=_cmd_best)


def _cmd_best(args: argparse.Namespace) -> int:
    from .storage import (
        StoreError,
        load_study_readonly,
        pareto_front,
        read_records,
        stored_retiming,
        study_objectives,
    )
    from .storage.commands import retime_command

    store = _open_readonly(args.storage)
    try:
        study = load_study_readonly(store, args.study)
        objectives = study_objectives(study)
        front = pareto_front(read_records(store, args.study), objectives)
    except StoreError as exc:
        raise storage_error(exc) from exc
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "number": r.number,
                        "params": r.params,
                        "values": r.values,
                        "metrics": r.metrics,
                    }
                    for r in front
                ],
                indent=2,
                default=str,
            )
        )
        return EXIT_OK
    _print_front(
        _console(),
        front,
        objectives,
        title=f"Pareto front of {args.study}",
        retime=retime_command(args.study, storage=args.storage),
        retimed=stored_retiming(study.user_attrs),
    )
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------

_COMMANDS: list[Callable[[Any], None]] = [_add_run, _add_status, _add_best]


def _extra_commands() -> list[Callable[[Any], None]]:
    """Commands that live in their own modules (each has ``add_parser(sub)``)."""
    import importlib

    found = []
    for module in (
        "tuner._cli_dashboard",
        "tuner._cli_ray",
        "tuner._cli_nightly",
        "tuner._cli_export",
        "tuner._cli_retime",
        "tuner._cli_delete",
        "tuner._cli_compare",
        "tuner._cli_tensorboard",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        found.append(mod.add_parser)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tuner",
        description="Tune PyTorch training and compression: accuracy, size and latency of the model you ship.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tuner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in _COMMANDS + _extra_commands():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # User workloads named 'package.module:function' are imported from where tuner runs.
    from ._folder import shadowing_error

    folder = os.getcwd()
    error = shadowing_error(folder)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if folder not in sys.path:
        sys.path.insert(0, folder)
    parser = build_parser()
    args = parser.parse_args(argv)
    import logging

    from .storage import StoreError

    logging.getLogger("optuna").setLevel(logging.WARNING)
    previous = _stop_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StoreError as exc:  # the store package's own errors, where none was converted
        print(f"error: {exc}", file=sys.stderr)
        return storage_error(exc).exit_code
    except KeyboardInterrupt as exc:
        print(
            "interrupted: finished trials are kept, trials in flight are failed and will be "
            "retried; run the same command to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, a scheduler, ``tuner jobs stop``), handled like Ctrl-C."""


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the command the way Ctrl-C does: workers stopped, trials failed."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(_signum: int, _frame: object) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, terminated)


if __name__ == "__main__":
    raise SystemExit(main())

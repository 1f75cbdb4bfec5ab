"""``tuner pick`` and ``tuner export``: choose the trial to ship and write it to a file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._cli import _console, _fmt, _open_readonly, _storage_arg
from ._exceptions import EXIT_FAILED, EXIT_OK, storage_error
from .storage.commands import EXPORT_SUFFIX as _SUFFIX


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pick", help="the best trial within a budget, e.g. latency_ms<=2")
    p.add_argument("study", help="study name")
    p.add_argument(
        "--where",
        default="",
        metavar="BUDGET",
        help='comma-separated bounds on any metric, e.g. "latency_ms<=2, size_bytes<=50000"',
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--maximize", metavar="METRIC", help="metric to maximize (default: accuracy)"
    )
    target.add_argument("--minimize", metavar="METRIC", help="metric to minimize instead")
    p.add_argument("--json", action="store_true", help="print the pick as JSON")
    _storage_arg(p)
    p.set_defaults(func=_cmd_pick)

    p = sub.add_parser(
        "export", help="write a trial's compressed model (ONNX, torch.export pt2, state_dict)"
    )
    p.add_argument("study", help="study name")
    p.add_argument("--trial", type=int, required=True, help="trial number (see tuner pick)")
    p.add_argument(
        "--format", default="onnx", help=f"file format: {', '.join(_SUFFIX)} (default onnx)"
    )
    p.add_argument("--out", metavar="PATH", help="file to write (default STUDY-trialN.EXT)")
    p.add_argument(
        "--artifacts",
        metavar="DIR",
        help="artifacts folder, when it moved since the study ran (holds one folder per study)",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train the trial again (same params and seed) when its model was not kept",
    )
    _storage_arg(p)
    p.set_defaults(func=_cmd_export)


def _export_command(args: argparse.Namespace, number: int, fmt: str = "onnx") -> str:
    from .storage.commands import export_command

    out = f"{args.study}-trial{number}{_SUFFIX[fmt]}"
    return export_command(args.study, number, storage=args.storage, fmt=fmt, out=out)


def _cmd_pick(args: argparse.Namespace) -> int:
    from ._artifacts import artifact_status
    from ._pick import parse_where, pick, pick_as_dict
    from .storage import StoreError, load_study_readonly, study_objectives
    from .storage._records import to_record

    clauses = parse_where(args.where) if args.where.strip() else []
    store = _open_readonly(args.storage)
    try:
        study = load_study_readonly(store, args.study)
    except StoreError as exc:
        raise storage_error(exc) from exc
    objectives = study_objectives(study)
    records = [to_record(t, list(objectives)) for t in study.get_trials(deepcopy=False)]
    target = args.maximize or args.minimize
    direction = "minimize" if args.minimize else "maximize"
    result = pick(records, objectives, clauses, target=target, direction=direction)
    if args.json:
        out = pick_as_dict(result, args.study)
        if result.trial is not None:
            status = artifact_status(study, result.trial.number, fetch=False)
            out["artifact"] = (
                "study store"
                if status.in_store
                else None
                if status.path is None
                else str(status.path)
            )
            out["artifact_status"] = status.reason or "kept"
            out["export"] = _export_command(args, result.trial.number)
        print(json.dumps(out, indent=2, default=str))
        return EXIT_OK if result.trial is not None else EXIT_FAILED
    console = _console()
    if result.trial is None:
        console.print(f"[bold red]{result.message(args.study)}[/]")
        return EXIT_FAILED
    status = artifact_status(study, result.trial.number, fetch=False)
    _print_pick(console, args, result, objectives, status)
    return EXIT_OK


def _print_pick(
    console: Any, args: argparse.Namespace, result: Any, objectives: dict[str, str], status: Any
) -> None:
    from rich.table import Table

    from .storage import metric_value, quantize_mode, show_metric, show_param

    trial = result.trial
    console.print(result.message(args.study))
    table = Table(title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("budget")
    bounds: dict[str, list[str]] = {}
    for c in result.clauses:
        edge = c.max if c.max is not None else c.min
        bounds.setdefault(c.metric, []).append(f"{c.op} {show_metric(c.metric, edge)}")
    shown = [result.target, *objectives, "test_accuracy", *bounds]
    # One column holds every metric, so each value carries its unit.
    for metric in dict.fromkeys(shown):
        value = metric_value(trial, metric)
        mark = " (picked by)" if metric == result.target else ""
        table.add_row(
            f"{metric}{mark}", show_metric(metric, value), ", ".join(bounds.get(metric, []))
        )
    console.print(table)
    console.print("params: " + ", ".join(f"{k}={show_param(v)}" for k, v in trial.params.items()))
    if quantize_mode(trial.params, trial.metrics) == "float8":
        console.print("not exported: float8 is made for the GPU the trial ran on")
    elif status.path is not None or status.in_store:
        console.print(
            f"model kept {'in the study store' if status.in_store else f'at {status.path}'}"
        )
        console.print(f"next:\n  {_export_command(args, trial.number)}")
    else:
        console.print(f"[yellow]{status.reason}[/]")
        console.print(f"next:\n  {_export_command(args, trial.number)} --retrain")


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._artifacts import ArtifactMissing
    from ._export import export_trial, rerun_trial
    from ._formats import check_format

    check_format(args.format)
    out = Path(args.out or f"{args.study}-trial{args.trial}{_SUFFIX[args.format]}")
    store = _open_readonly(args.storage)
    console = _console()
    tm = None
    if args.retrain:
        console.print(f"training trial {args.trial} of {args.study} again (same params and seed)")
        tm, _ = rerun_trial(store, args.study, args.trial)
    try:
        report = export_trial(
            store, args.study, args.trial, args.format, out, folder=args.artifacts, tm=tm
        )
    except ArtifactMissing as exc:
        hint = ""
        if "dropped" in str(exc) or "kept no" in str(exc) or "missing" in str(exc):
            hint = f"; re-run it with: {_export_command(args, args.trial, args.format)} --retrain"
        console.print(f"[bold red]error:[/] {exc}{hint}", soft_wrap=True)
        return EXIT_FAILED
    _print_report(console, report)
    return EXIT_OK


def _print_report(console: Any, report: Any) -> None:
    from rich.table import Table

    size = report.path.stat().st_size
    console.print(
        f"wrote {report.path} ({report.format}, {_fmt('size_bytes', size)}) from trial "
        f"{report.trial} of {report.study}"
    )
    if report.format == "onnx":
        console.print("checked with onnx.checker; loaded and run in ONNX Runtime (CPU)")
    if report.int8_nodes:
        counts: dict[str, int] = {}
        for op in report.int8_nodes:
            counts[op] = counts.get(op, 0) + 1
        kind = "int8 nodes" if report.format == "onnx" else "int8 layers"
        listed = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in counts.items())
        console.print(f"{kind}: {len(report.int8_nodes)} ({listed})")
    else:
        console.print("int8: none (float32 weights)")
    if report.sparsity is not None:
        console.print(f"weights that are zero: {_fmt('sparsity', report.sparsity)}")
    table = Table(title=f"trial {report.trial}: stored vs exported file", title_justify="left")
    for col, justify in (
        ("metric", "left"),
        ("stored", "right"),
        ("exported file", "right"),
        ("change", "right"),
        ("tolerance", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in report.figures:
        change = f.change
        if change is None:
            shown = "-"
        elif f.metric.endswith("accuracy"):
            shown = f"{100 * change:+.1f} pt"
        else:
            shown = f"{100 * change:+.1f}%"
        style = "bold yellow" if f.differs else ""
        table.add_row(
            f.metric,
            _fmt(f.metric, f.stored),
            _fmt(f.metric, f.exported),
            f"[{style}]{shown}[/]" if style else shown,
            f.tolerance or "-",
        )
    console.print(table)
    runtime = "onnxruntime" if report.format == "onnx" else "torch"
    for f in report.warnings:
        why = ""
        if f.metric == "latency_ms" and report.stored_target:
            why = (
                f"; the trial was timed on the measure.target node {report.stored_target!r}, "
                "this file on this machine"
            )
        elif f.metric == "latency_ms" and report.stored_runtime != runtime:
            why = (
                f"; the trial measured latency in {report.stored_runtime} and this file runs "
                f"in {runtime} (measure: {{runtime: {runtime}}} makes the search measure it)"
            )
        elif f.metric == "size_bytes" and report.stored_size_format != report.format:
            why = (
                "; the stored size is tuner's shipping encoding of the PyTorch model, "
                f"this is the {report.format} file"
            )
            if report.format == "onnx":
                why += " (measure: {runtime: onnxruntime} makes the search measure this file)"
        limit = "1 point" if f.metric.endswith("accuracy") else "5%"
        console.print(
            f"[bold yellow]warning:[/] {f.metric} of the exported file differs from the stored "
            f"figure by more than {limit}{why}"
        )

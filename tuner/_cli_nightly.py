"""``tuner nightly`` and ``tuner schedule``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._exceptions import SpecError


def add_parser(sub: Any) -> None:
    from ._cli import add_ship_arg, positive_int

    p = sub.add_parser(
        "nightly",
        help="tonight's sweep of a spec: resumable, warm-started, with a morning report",
        description="Run (or finish) the study <spec name>-<date>, warm-started from the "
        "previous night, and write a report comparing the two fronts. Exit 0 when the "
        "night is as good as the last, 3 when it regressed, 4 when the night is already "
        "running elsewhere.",
    )
    p.add_argument("spec", help="YAML spec file, or the name of a shipped spec")
    p.add_argument("--date", help="the night, YYYY-MM-DD (default: today, local time)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="study store URL (else $TUNER_STORAGE, else sqlite:///tuner.db)",
    )
    p.add_argument("--n-trials", type=positive_int, help="the night's total of finished trials")
    p.add_argument(
        "--report-dir",
        default="nightly-reports",
        metavar="DIR",
        help="where the Markdown and HTML reports go (default ./nightly-reports)",
    )
    p.add_argument("--backend", choices=["inline", "local", "ray"], help="where trials run")
    p.add_argument(
        "--workers", type=positive_int, default=1, help="trials in flight at once (default 1)"
    )
    p.add_argument("--address", help="Ray cluster address (backend ray)")
    add_ship_arg(p)
    p.set_defaults(func=_cmd_nightly)

    s = sub.add_parser(
        "schedule",
        help="run a spec's nightly sweep every day (cron or a systemd user timer)",
    )
    s.add_argument("action", choices=["install", "remove", "show"])
    s.add_argument("spec", nargs="?", help="YAML spec file (remove/show also take the spec's name)")
    s.add_argument("--at", metavar="HH:MM", help="time of day to start, 24-hour (install)")
    s.add_argument(
        "--backend",
        choices=["cron", "systemd"],
        help="the scheduler (default: cron if installed, else systemd)",
    )
    s.add_argument("--print", action="store_true", help="only print what would be installed")
    s.add_argument(
        "--storage",
        metavar="URL",
        help="study store URL for the nightly runs (else $TUNER_STORAGE now, else the spec's)",
    )
    s.add_argument("--address", help="submit each night to this Ray cluster (tuner submit)")
    s.add_argument(
        "--report-dir",
        metavar="DIR",
        help="where reports and the log go (default ./nightly-reports, made absolute)",
    )
    s.set_defaults(func=_cmd_schedule)


def _cmd_nightly(args: argparse.Namespace) -> int:
    import optuna

    from ._cli import backend_options
    from ._exceptions import EXIT_LOCKED, NightLocked
    from ._nightly import nightly
    from .storage import counted, show_metric

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = backend_options(args)
    try:
        result = nightly(
            args.spec,
            date=args.date,
            storage=args.storage,
            n_trials=args.n_trials,
            report_dir=args.report_dir,
            workers=args.workers,
            backend=args.backend,
            progress=True,
            **options,
        )
    except NightLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    report = result.report
    run = result.run
    if result.took_over:
        print(f"took over the lock of a run that is gone ({result.took_over})")
    print(
        f"night {result.study_name} on {run.storage_url}: "
        f"{run.n_finished} finished ({result.trials_run} run now)"
        + (
            f", warm-started with {report.warm_start_trials} Pareto points of {report.previous_study}"
            if report.previous_study
            else ", the first night of this spec"
        )
    )
    change = report.hypervolume_change
    print(
        f"hypervolume {report.hypervolume:.4g}"
        + (
            f" (last night {report.previous_hypervolume:.4g}, {100 * change:+.1f}%)"
            if change is not None
            else ""
        )
        + f"; front {len(report.front)} points"
        + (
            f", {len(report.new_points)} new, {len(report.lost_points)} lost"
            if report.previous_study
            else ""
        )
    )
    if report.drift:
        print(
            f"same settings as last night ({report.drift_settings}), tonight / last night: "
            + ", ".join(f"{m} x{v:.2f}" for m, v in report.drift.items())
        )
    if report.machine_speed is not None:
        print(
            f"machine: a fixed computation timed beside each trial took x{report.machine_speed:.2f} "
            "as long tonight as last night (median)"
        )
    if report.machines:
        print(f"warning: tonight's and last night's trials: {report.machines}")
    for c in report.constraints:
        print(
            f"best {report.accuracy_metric} with {c.text}: {show_metric(report.accuracy_metric, c.tonight_best)} "
            f"({c.tonight_meeting} trials meet it)"
        )
    if report.regressed:
        print("REGRESSED: " + "; ".join(report.reasons))
    else:
        print(f"verdict: {report.verdict}")
    print("report: " + ", ".join(str(p) for p in result.files.values()))
    if result.webhook_error:
        print(f"warning: {result.webhook_error}", file=sys.stderr)
    for deleted in result.dropped:
        removed = f": removed {deleted.describe()}" if deleted.models or deleted.runs else ""
        print(
            f"deleted the older night {deleted.study} ({counted(deleted.trials, 'trial')}, "
            f"nightly.keep_nights){removed}"
        )
        for path, why in deleted.left.items():
            print(f"warning: left {path}: {why}", file=sys.stderr)
    for name, why in result.not_dropped.items():
        print(f"warning: the older night {name} was kept for now: {why}", file=sys.stderr)
    return result.exit_code


def _cmd_schedule(args: argparse.Namespace) -> int:
    from . import _schedule

    scheduler = args.backend or _schedule.default_scheduler()
    if args.action == "show":
        name = _schedule.spec_name_of(args.spec) if args.spec else None
        for line in _schedule.show(name):
            print(line)
        return 0
    if not args.spec:
        raise SpecError(f"schedule {args.action}: missing SPEC; expected a YAML spec file")
    if args.action == "remove":
        for line in _schedule.remove(_schedule.spec_name_of(args.spec), scheduler):
            print(line)
        return 0
    plan = _schedule.plan(
        args.spec,
        at=args.at,
        storage=args.storage,
        address=args.address,
        report_dir=args.report_dir,
    )
    if args.print:
        if scheduler == "cron":
            print(_schedule.cron_line(plan))
        else:
            for name, content in _schedule.systemd_units(plan).items():
                print(f"# {_schedule.systemd_dir() / name}\n{content}")
        if plan.storage:
            print(
                f"# install also writes TUNER_STORAGE to {plan.env_file} (mode 0600), "
                "so the URL stays out of the schedule"
            )
        return 0
    for line in _schedule.install(plan, scheduler):
        print(line)
    return 0

"""tuner against the tuners people already use, on the same trials and the same compute.

Every arm searches the shipped mnist1d-cnn spec (its search space, 40 trials x 30 epochs)
and runs the same trial: tuner's own training, compression and measurement, which the
peers call as a plain function (``bench/_peer_trial.py``). Only the search and the
scheduling differ. The arms:

* ``tuner``        tuner as shipped: the spec's sampler (TPE) with ``early_stopping: asha``
* ``optuna-tpe``   Optuna's ``TPESampler`` on the three objectives, every trial to the end
                   (Optuna prunes single-objective studies only)
* ``optuna-nsga2`` Optuna's ``NSGAIISampler`` with ``population_size=10``: its default of 50
                   is more than the 40-trial budget, which would make it random search
* ``optuna-gp``    Optuna's ``GPSampler`` (multi-objective: log expected hypervolume improvement)
* ``syne-moasha``  Syne Tune's ``MOASHA`` on error, size and latency (its defaults:
                   ``grace_period=1``, ``reduction_factor=3``; ``max_t`` = the spec's epochs),
                   trials run by its ``PythonBackend``, one at a time; ``sleep_time=0.1`` s
                   (default 5 s, in which a stopped trial of this size trains on for many
                   epochs). MOASHA ranks every report on all three metrics, so each report
                   carries the size and latency of the model as it would ship, measured once
                   per trial on its freshly built model: structure and precision set them.
* ``ray-asha``     Ray Tune's ``ASHAScheduler`` (its defaults: ``grace_period=1``,
                   ``reduction_factor=4``; ``max_t`` = the spec's epochs) on validation
                   accuracy, its search the default random variant generator; size and
                   latency are measured when a trial ends (Ray's schedulers rank one metric)
* ``random``       Optuna's ``RandomSampler``, every trial to the end

Compute is epochs: training epochs, the fine-tune and quantization-aware epochs after
compression, and for tuner the fractions of an epoch its rungs fine-tune copies for. Each
arm runs in a process of its own pinned to one core, two arms at a time, one torch thread.
Latency is an objective, so every model every arm kept is timed again at the end, all in
one process on one core, interleaved; the hypervolumes use those timings. The hypervolume
is measured against one fixed reference point as a fraction of the box up to the ideal
point, as in ``bench/early_stopping.py``.

Run from the repository root (``pip install -c .ci/constraints.txt -e '.[bench]'``)::

    .venv/bin/python bench/peers.py                        # 40 trials x 30 epochs, seeds 0-2
    .venv/bin/python bench/peers.py --trials 8 --epochs 6 --seeds 0   # a quick look

It prints one table and writes ``peers.png``: hypervolume against epochs, one line per arm
(mean over seeds).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _peer_trial import (  # noqa: E402
    active_params,
    bench_spec,
    quick_measure,
    read_log,
    recovery_epochs,
    run_trial,
)
from early_stopping import _hypervolume, _pin_to_a_core, _retime  # noqa: E402

ARMS = (
    "tuner",
    "optuna-tpe",
    "optuna-nsga2",
    "optuna-gp",
    "syne-moasha",
    "ray-asha",
    "random",
)


_COMPRESSIONS_VAR = "TUNER_BENCH_COMPRESSIONS"
_EARLY_STOPPING_VAR = "TUNER_BENCH_EARLY_STOPPING"
_SAMPLER_VAR = "TUNER_BENCH_SAMPLER"

# -- the arms ------------------------------------------------------------------------------


def _tuner(spec: Any, seed: int, folder: Path) -> list[dict[str, Any]]:
    """tuner.run as a user runs it; its trials, in the order they ended."""
    import tuner

    name = f"tuner-s{seed}"
    sampler = json.loads(os.environ.get(_SAMPLER_VAR, "{}"))
    spec = spec.with_overrides(
        name=name,
        sampler={"name": spec.sampler.name, **sampler, "seed": seed},
        early_stopping=json.loads(os.environ.get(_EARLY_STOPPING_VAR, '"asha"')),
    )
    reuse = os.environ.get(_COMPRESSIONS_VAR)
    if reuse:
        budget = {**spec.to_dict()["budget"], "compressions_per_training": int(reuse)}
        spec = spec.with_overrides(budget=budget)
    tuner.run(spec, storage=f"sqlite:///{folder / 'study.db'}")
    return _tuner_events(spec, seed, folder)


def _tuner_events(spec: Any, seed: int, folder: Path) -> list[dict[str, Any]]:
    """tuner's trials from its study, in the order they ended."""
    import optuna

    from tuner._artifacts import artifact_status
    from tuner.storage import open_storage, read_records

    name = f"tuner-s{seed}"
    url = f"sqlite:///{folder / 'study.db'}"
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
    ended = {t.number: t.datetime_complete for t in study.trials}
    events = []
    records = read_records(open_storage(url, heartbeat=False), name)
    for r in sorted(records, key=lambda r: ended[r.number] or datetime.max):
        if r.state not in ("COMPLETE", "PRUNED"):
            continue
        rungs = (r.metrics.get("rungs") or {}).values()
        epochs = int(r.metrics.get("epochs", len(r.curve))) + sum(
            float(rung.get("finetune_epochs", 0.0)) for rung in rungs
        )
        event: dict[str, Any] = {"epochs": epochs}
        if r.state == "COMPLETE" and r.feasible:
            event["epochs"] += recovery_epochs(r.params)
            event["done"] = {m: float(r.values[m]) for m in spec.objectives}
            event["test_accuracy"] = float(r.metrics["test_accuracy"])
            event["model"] = str(artifact_status(study, r.number).path or "")
        events.append(event)
    return events


def _optuna(kind: str) -> Callable[[Any, int, Path], list[dict[str, Any]]]:
    def run(spec: Any, seed: int, folder: Path) -> list[dict[str, Any]]:
        import optuna

        from tuner._space import suggest

        samplers = {
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
            "gp": lambda: optuna.samplers.GPSampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        }
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            directions=list(spec.objectives.values()), sampler=samplers[kind]()
        )

        def objective(trial: optuna.Trial) -> list[float]:
            got = run_trial(spec, suggest(trial, spec.params), seed=seed, folder=folder)
            assert got is not None
            return [float(got[m]) for m in spec.objectives]

        study.optimize(objective, n_trials=spec.budget.n_trials)
        return _events_from_log(folder)

    return run


def _space(spec: Any, lib: Any, *, int_upper: int = 0) -> dict[str, Any]:
    """The spec's search space in a peer's terms: ``lib`` has ``choice``, ``randint``,
    ``lograndint``, ``uniform`` and ``loguniform`` (Syne Tune's and Ray Tune's do);
    ``int_upper`` is added to integer ranges' upper ends (Ray's exclude theirs)."""
    space: dict[str, Any] = {}
    for name, p in spec.params.items():
        if p.type == "fixed":
            space[name] = p.value
        elif p.type == "categorical":
            space[name] = lib.choice(list(p.choices))
        elif p.type == "int":
            sample = lib.lograndint if p.log else lib.randint
            space[name] = sample(int(p.low), int(p.high) + int_upper)
        else:
            sample = lib.loguniform if p.log else lib.uniform
            space[name] = sample(float(p.low), float(p.high))
    return space


def _syne_trial(**config: Any) -> None:
    """The function Syne Tune's PythonBackend runs in a process per trial (it is shipped
    without its module, so it imports what it needs)."""
    import sys

    sys.path.insert(0, config.pop("bench_dir"))
    from peers import syne_trial_body

    syne_trial_body(config)


def syne_trial_body(config: dict[str, Any]) -> None:
    from syne_tune import Reporter

    folder = Path(config.pop("folder"))
    seed, trials, epochs = (int(config.pop(k)) for k in ("seed", "trials", "epochs"))
    spec = bench_spec(trials, epochs, folder)
    params = active_params(spec, config)
    reporter = Reporter()
    shipped: dict[str, float] = {}

    def on_epoch(epoch: int, metrics: dict[str, float], ctx: Any) -> bool:
        if epoch + 1 >= epochs:
            return False  # the last report goes with the final measurement
        if not shipped:
            shipped.update(quick_measure(spec, params, ctx))
        reporter(epoch=epoch + 1, error=1.0 - metrics["val_accuracy"], **shipped)
        return False  # MOASHA stops a trial by ending its process

    got = run_trial(spec, config, seed=seed, folder=folder, on_epoch=on_epoch)
    assert got is not None
    reporter(
        epoch=epochs,
        error=1.0 - float(got["accuracy"]),
        size_bytes=float(got["size_bytes"]),
        latency_ms=float(got["latency_ms"]),
    )


def _syne(spec: Any, seed: int, folder: Path) -> list[dict[str, Any]]:
    import logging

    import numpy as np

    os.environ["SYNETUNE_FOLDER"] = str(folder / "syne-tune")
    os.chdir(folder)  # its backend leaves a std.out in the working folder
    logging.getLogger("syne_tune").setLevel(logging.WARNING)
    import syne_tune.config_space
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import PythonBackend
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    np.random.seed(seed)  # MOASHA draws its configurations from numpy's global generator
    # The bench's own settings ride along as constants, which MOASHA passes on unchanged.
    space = _space(spec, syne_tune.config_space) | {
        "bench_dir": str(BENCH),
        "folder": str(folder),
        "seed": seed,
        "trials": spec.budget.n_trials,
        "epochs": spec.budget.max_epochs,
    }
    scheduler = MOASHA(
        config_space=space,
        metrics=["error", "size_bytes", "latency_ms"],
        do_minimize=True,
        time_attr="epoch",
        max_t=spec.budget.max_epochs,
        random_seed=seed,
    )
    Tuner(
        trial_backend=PythonBackend(tune_function=_syne_trial, config_space=space),
        scheduler=scheduler,
        # It stops once more than this many trials started, so this runs the budget exactly.
        stop_criterion=StoppingCriterion(max_num_trials_started=spec.budget.n_trials - 1),
        n_workers=1,
        sleep_time=0.1,
        wait_trial_completion_when_stopping=True,
        tuner_name=f"peers-moasha-s{seed}",
        print_update_interval=3600,
    ).run()
    return _events_from_log(folder)


def _ray_trial(config: dict[str, Any]) -> None:
    from ray import tune

    bench = config["bench"]
    folder, seed, epochs = Path(bench["folder"]), int(bench["seed"]), int(bench["epochs"])
    spec = bench_spec(int(bench["trials"]), epochs, folder)

    def on_epoch(epoch: int, metrics: dict[str, float], ctx: Any) -> bool:
        if epoch + 1 < epochs:  # the last report goes with the final measurement
            tune.report({"accuracy": metrics["val_accuracy"]})
        return False  # ASHA stops a trial by stopping its actor

    sampled = {k: v for k, v in config.items() if k != "bench"}
    got = run_trial(spec, sampled, seed=seed, folder=folder, on_epoch=on_epoch)
    assert got is not None
    tune.report({m: float(got[m]) for m in ("accuracy", "size_bytes", "latency_ms")})


def _ray(spec: Any, seed: int, folder: Path) -> list[dict[str, Any]]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import peers  # by its module name, so that Ray's workers can import the trainable

    path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        space = _space(spec, tune, int_upper=1)
        space["bench"] = {
            "folder": str(folder),
            "seed": seed,
            "trials": spec.budget.n_trials,
            "epochs": spec.budget.max_epochs,
        }
        tune.Tuner(
            tune.with_resources(peers._ray_trial, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="accuracy",
                mode="max",
                scheduler=ASHAScheduler(max_t=spec.budget.max_epochs),
                search_alg=BasicVariantGenerator(random_state=seed),
                num_samples=spec.budget.n_trials,
                max_concurrent_trials=1,
            ),
            run_config=tune.RunConfig(storage_path=str(folder / "ray"), verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    return _events_from_log(folder)


RUNNERS: dict[str, Callable[[Any, int, Path], list[dict[str, Any]]]] = {
    "tuner": _tuner,
    "optuna-tpe": _optuna("tpe"),
    "optuna-nsga2": _optuna("nsga2"),
    "optuna-gp": _optuna("gp"),
    "syne-moasha": _syne,
    "ray-asha": _ray,
    "random": _optuna("random"),
}


def _events_from_log(folder: Path) -> list[dict[str, Any]]:
    """The peers' trials, from the log each trial wrote: an event per epoch and per end."""
    events: list[dict[str, Any]] = []
    for line in sorted(read_log(folder), key=lambda e: e["t"]):
        if "epoch" in line:
            events.append({"epochs": 1})
        elif "done" in line:
            events.append(
                {
                    "epochs": line["recovery_epochs"],
                    "done": line["done"],
                    "test_accuracy": line["test_accuracy"],
                    "model": line["model"],
                }
            )
    return events


# -- one run -------------------------------------------------------------------------------


def _run_one(job: tuple[str, int, int, int, str]) -> dict[str, Any]:
    arm, seed, trials, epochs, scratch = job
    import torch

    torch.set_num_threads(1)
    folder = Path(scratch) / f"{arm}-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # what a run cut short left
    folder.mkdir(parents=True)
    spec = bench_spec(trials, epochs, folder)
    started = time.perf_counter()
    events = RUNNERS[arm](spec, seed, folder)
    row = _row(arm, seed, spec, events, time.perf_counter() - started)
    (folder / "row.json").write_text(json.dumps(row))
    return row


def _row(
    arm: str, seed: int, spec: Any, events: list[dict[str, Any]], wall: float
) -> dict[str, Any]:
    """One run's figures: the trials it completed, each with the epochs spent by then."""
    spent = 0.0
    done = []
    for event in events:
        spent += float(event["epochs"])
        if "done" in event:
            done.append({**event, "at": spent, "values": event["done"]})
    return {
        "arm": arm,
        "seed": seed,
        "epochs": spent,
        "wall_s": wall,
        "complete": len(done),
        "trials": done,
        "objectives": dict(spec.objectives),
    }


def _kept_row(job: tuple[str, int, int, int, str]) -> dict[str, Any] | None:
    """A run of an earlier ``--keep`` folder, read back (None if it is not there)."""
    arm, seed, trials, epochs, scratch = job
    folder = Path(scratch) / f"{arm}-s{seed}"
    if (folder / "row.json").exists():
        return dict(json.loads((folder / "row.json").read_text()))
    spec = bench_spec(trials, epochs, folder)
    if arm == "tuner":
        if not (folder / "study.db").exists():
            return None
        import optuna

        from tuner.storage import open_storage

        url = f"sqlite:///{folder / 'study.db'}"
        storage = open_storage(url, heartbeat=False)
        trials_ = optuna.load_study(study_name=f"tuner-s{seed}", storage=storage).trials
        if any(t.datetime_complete is None for t in trials_) or len(trials_) < trials:
            return None  # cut short
        first = min(t.datetime_start for t in trials_ if t.datetime_start)
        last = max(t.datetime_complete for t in trials_ if t.datetime_complete)
        return _row(arm, seed, spec, _tuner_events(spec, seed, folder), (last - first).seconds)
    log = read_log(folder)
    if sum("start" in e for e in log) < trials:
        return None  # cut short (a trial its scheduler killed leaves no last line)
    return _row(arm, seed, spec, _events_from_log(folder), log[-1]["t"] - log[0]["t"])


def _curve(row: dict[str, Any]) -> list[tuple[float, float]]:
    """(epochs spent, hypervolume of the trials complete by then), one point per trial."""
    points = [(0.0, 0.0)]
    for k, trial in enumerate(row["trials"]):
        points.append((trial["at"], _hypervolume(row["retimed"][: k + 1], row["objectives"])))
    return points


def _reach(curve: list[tuple[float, float]], target: float) -> float:
    """Epochs at which ``curve`` first holds ``target``; inf if it never does."""
    return next((at for at, hv in curve if hv >= target - 1e-12), math.inf)


def _mean_curve(curves: list[list[tuple[float, float]]], grid: list[float]) -> list[float]:
    """The mean over seeds of step curves, on ``grid``."""

    def at(curve: list[tuple[float, float]], x: float) -> float:
        return max((hv for e, hv in curve if e <= x), default=0.0)

    return [statistics.fmean(at(c, x) for c in curves) for x in grid]


def _plot(rows: list[dict[str, Any]], arms: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(r["epochs"] for r in rows)
    grid = [top * i / 400 for i in range(401)]
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        last = max(r["epochs"] for r in mine)
        xs = [x for x in grid if x <= last]
        ys = _mean_curve([r["curve"] for r in mine], xs)
        ax.plot(xs, ys, label=arm, linewidth=2.2 if arm == "tuner" else 1.3)
    ax.set_xlabel("epochs trained (all trials so far)")
    ax.set_ylabel("hypervolume (accuracy, size, latency; re-timed)")
    ax.set_title("mnist1d-cnn: the front found against compute, mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _versions() -> str:
    from importlib.metadata import version

    names = ("optuna", "syne-tune", "ray", "torch")
    return ", ".join(f"{n} {version(n)}" for n in names)


def _arm_setting(parser: argparse.ArgumentParser, args: argparse.Namespace, field: str) -> Any:
    """The tuner arm's spec ``field`` from its option (``--early-stopping`` for
    ``early_stopping``): a bare name or JSON, checked against the spec here, so a bad one
    ends the bench in one line before anything runs."""
    import tuner

    flag = "--" + field.replace("_", "-")
    text = getattr(args, field)
    try:
        value = json.loads(text)
    except ValueError:
        value = text  # a bare name: asha, gp, ...
    try:
        bench_spec(args.trials, args.epochs, ".").with_overrides(**{field: value})
    except (ValueError, tuner.TunerError) as exc:  # one line, not a traceback
        parser.error(f"{flag} {text}: {exc}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument(
        "--compressions",
        type=int,
        help="the tuner arm's budget.compressions_per_training (default: the shipped spec's)",
    )
    parser.add_argument(
        "--early-stopping",
        metavar="RULE",
        help="the tuner arm's early_stopping: a rule's name or JSON, e.g. "
        '\'{"name": "asha", "min_epochs": 2}\' (default: asha with its defaults)',
    )
    parser.add_argument(
        "--sampler",
        metavar="SAMPLER",
        help="the tuner arm's sampler: a name or JSON, e.g. gp or "
        '\'{"name": "tpe", "start": "sampled"}\' (default: the shipped spec\'s); its seed '
        "is the run's",
    )
    parser.add_argument("--plot", default="peers.png", help="where the plot goes (PNG)")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep every run (its trial log, models, tuner's study file) and rows.json in DIR; "
        "runs DIR already holds whole are read back, not run again",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: re-time and tabulate the runs a --keep DIR already holds",
    )
    args = parser.parse_args()
    if "tuner" not in args.arms:
        parser.error("--arms must include tuner: the table compares every arm with it")
    if args.report and not args.keep:
        parser.error("--report reads the runs of --keep DIR; give the folder")

    if args.early_stopping is not None:
        rule = _arm_setting(parser, args, "early_stopping")
        os.environ[_EARLY_STOPPING_VAR] = json.dumps(rule)
    if args.sampler is not None:
        sampler = _arm_setting(parser, args, "sampler")
        sampler = {"name": sampler} if isinstance(sampler, str) else sampler
        os.environ[_SAMPLER_VAR] = json.dumps(sampler)
    if args.compressions is not None:
        os.environ[_COMPRESSIONS_VAR] = str(args.compressions)  # the spawned runs read it
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuner-bench-peers-") as scratch:
        if args.keep:
            scratch = str(Path(args.keep).resolve())
            Path(scratch).mkdir(parents=True, exist_ok=True)
        jobs = [(a, s, args.trials, args.epochs, scratch) for s in args.seeds for a in args.arms]
        # With --keep, a run the folder already holds whole is read back, not run again.
        kept = {(j[0], j[1]): _kept_row(j) for j in jobs} if args.keep else {}
        if args.report:
            whole = [s for s in args.seeds if all(kept[a, s] for a in args.arms)]
            if not whole:
                parser.error(f"{args.keep} holds no seed with every arm's run complete")
            args.seeds = whole
            jobs = [j for j in jobs if j[1] in whole]
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)
        pinned = args.parallel <= len(os.sched_getaffinity(0))
        with (
            contextlib.nullcontext(None)
            if args.report
            else ctx.Pool(
                args.parallel,
                initializer=_pin_to_a_core if pinned else None,
                initargs=(counter,) if pinned else (),
                maxtasksperchild=1,
            )
        ) as pool:
            rows = []
            again = [j for j in jobs if kept.get((j[0], j[1])) is not None]
            todo = [j for j in jobs if j not in again]
            done = itertools.chain(
                (kept[j[0], j[1]] for j in again),
                () if pool is None else pool.imap_unordered(_run_one, todo, chunksize=1),
            )
            for row in done:
                rows.append(row)
                print(
                    f"[{len(rows)}/{len(jobs)}] {row['arm']} seed {row['seed']}: "
                    f"{row['epochs']:.0f} epochs, {row['complete']} complete "
                    f"({row['wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        _retime(rows)
    for row in rows:
        row["curve"] = _curve(row)
        best = max(row["trials"], key=lambda t: t["values"]["accuracy"], default=None)
        row["test_accuracy"] = best["test_accuracy"] if best else float("nan")
    total = time.perf_counter() - started
    if args.keep:
        (Path(args.keep) / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    _report(rows, args)
    _plot(rows, args.arms, Path(args.plot))
    print(f"\nplot: {args.plot}; total {total:.0f} s")


def _report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    arms, seeds = args.arms, args.seeds
    by = {(r["arm"], r["seed"]): r for r in rows}
    best = {s: max(by[a, s]["curve"][-1][1] for a in arms) for s in seeds}
    print(
        f"\nmnist1d-cnn, {args.trials} trials x {args.epochs} epochs per run, seeds {seeds}; "
        f"{_versions()}\nhypervolume with every kept model re-timed together at the end; "
        "'to 95%': epochs until the arm held 95% of the best final hypervolume any arm "
        "found on that seed\n"
    )
    header = (
        f"{'arm':<13} {'seed':>4} {'epochs':>7} {'complete':>8} {'HV':>7} {'to 95%':>7} "
        f"{'test acc':>8} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for a in arms:
        for s in seeds:
            r = by[a, s]
            reach = _reach(r["curve"], 0.95 * best[s])
            print(
                f"{a:<13} {s:>4} {r['epochs']:>7.0f} {r['complete']:>8} "
                f"{r['curve'][-1][1]:>7.4f} {reach:>7.0f} {r['test_accuracy']:>8.3f} "
                f"{r['wall_s']:>7.0f}"
            )
    tuner_curves = [by["tuner", s]["curve"] for s in seeds]
    grid = sorted({at for c in tuner_curves for at, _ in c})
    mean_tuner = list(zip(grid, _mean_curve(tuner_curves, grid)))
    tuner_epochs = statistics.fmean(by["tuner", s]["epochs"] for s in seeds)
    print(
        f"\n{'mean over seeds':<15} {'epochs':>7} {'HV':>7} {'HV at tuner epochs':>18} "
        f"{'test acc':>8} {'wall s':>7} {'tuner to this HV':>16} {'tuner/arm epochs':>16}"
    )
    for a in arms:
        mine = [by[a, s] for s in seeds]
        epochs = statistics.fmean(r["epochs"] for r in mine)
        hv = statistics.fmean(r["curve"][-1][1] for r in mine)
        # The front each arm held once it had spent what tuner spent in all.
        same = _mean_curve([r["curve"] for r in mine], [tuner_epochs])[0]
        # Where the mean tuner curve first holds this arm's mean final hypervolume.
        needed = _reach(mean_tuner, hv)
        ratio = needed / epochs if math.isfinite(needed) else math.inf
        print(
            f"{a:<15} {epochs:>7.0f} {hv:>7.4f} {same:>18.4f} "
            f"{statistics.fmean(r['test_accuracy'] for r in mine):>8.3f} "
            f"{statistics.fmean(r['wall_s'] for r in mine):>7.0f} "
            f"{needed:>16.0f} {ratio:>16.2f}"
        )
    print("\ntarget: tuner reaches each peer's final hypervolume with at most half its epochs")
    for a in arms:
        if a == "tuner":
            continue
        per_seed = []
        for s in seeds:
            need = _reach(by["tuner", s]["curve"], by[a, s]["curve"][-1][1])
            per_seed.append(need / by[a, s]["epochs"])
        hv = statistics.fmean(by[a, s]["curve"][-1][1] for s in seeds)
        ratio = _reach(mean_tuner, hv) / statistics.fmean(by[a, s]["epochs"] for s in seeds)
        verdict = "met" if ratio <= 0.5 else "missed"
        shown = ", ".join(f"{x:.2f}" if math.isfinite(x) else "never" for x in per_seed)
        print(f"  vs {a:<13}: {verdict} (mean {ratio:.2f} of its epochs; per seed {shown})")
        gaps = [by["tuner", s]["curve"][-1][1] - by[a, s]["curve"][-1][1] for s in seeds]
        print(f"  {'':<16} final hypervolume, tuner's minus {a}'s: {_interval(gaps)}")


def _interval(gaps: list[float]) -> str:
    """The mean of per-seed differences with a 90% Student's t interval: whether one arm is
    ahead of another by more than the seeds spread (each seed is a paired comparison)."""
    from scipy import stats

    mean = statistics.fmean(gaps)
    if len(gaps) < 2:
        return f"{mean:+.4f} (one seed: no interval)"
    half = stats.t.ppf(0.95, len(gaps) - 1) * statistics.stdev(gaps) / math.sqrt(len(gaps))
    return f"{mean:+.4f} (90% interval {mean - half:+.4f} to {mean + half:+.4f}, {len(gaps)} seeds)"


if __name__ == "__main__":
    main()

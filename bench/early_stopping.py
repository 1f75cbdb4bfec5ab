"""Early stopping on mnist1d-cnn: epochs spent against the front kept.

The same trial budget is run four ways, with several sampler seeds each:

* ``tpe``       TPE, every trial trained to ``max_epochs``
* ``tpe+asha``  TPE with multi-objective ASHA (``early_stopping: asha``)
* ``random``    random search, every trial trained to ``max_epochs``
* ``random+asha`` random search with ``asha``: a seeded random sampler draws the same
  trials whatever happens to them, so against ``random`` this isolates what stopping
  alone costs the front

For each run it records the training epochs spent, the hypervolume of the final front
(accuracy, size, latency) against a fixed reference point, and the test accuracy of the
front's most accurate trial (by validation accuracy, as a user would pick it). The
table prints means over seeds with ratios against ``tpe``.

Run from the repository root::

    .venv/bin/python bench/early_stopping.py     # the shipped spec's 40 trials x 30 epochs, 3 seeds
    .venv/bin/python bench/early_stopping.py --trials 16 --epochs 9   # quick look

Runs go two at a time in separate processes (``--parallel``), each with one torch thread,
its own SQLite file and, where the machine has enough cores, a core of its own. Latency
is one of the objectives, so the bench keeps the arms it compares under the same load:
runs that shared cores would time each other, and an arm run later than the other
on a machine that slowed down meanwhile would time all its trials slower (seen: the
same trials 19-24% slower, for several percent less hypervolume). Each seed's arms run
side by side.

Even so, a trial's latency depends on what the machine did while it ran. Every run keeps
its trials' models, and at the end all of them are timed again in one process on one
core, runs interleaved; the table gives the hypervolume with the latency measured in
the run and with the re-timed one, and judges the target on the re-timed one.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Fixed reference point: accuracy 0, the float model of the widest CNN in the search space
# (28,298 parameters, about 113 KB), and 1 ms at batch 1.
REFERENCE = {"accuracy": 0.0, "size_bytes": 120_000.0, "latency_ms": 1.0}
ARMS = {
    "tpe": {"sampler": "tpe", "early_stopping": "none"},
    "tpe+asha": {"sampler": "tpe", "early_stopping": "asha"},
    "random": {"sampler": "random", "early_stopping": "none"},
    "random+asha": {"sampler": "random", "early_stopping": "asha"},
}


def _pin_to_a_core(counter: Any) -> None:
    """Give this pool worker a core of its own, if the machine has one for each worker."""
    import os

    cores = sorted(os.sched_getaffinity(0))
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if index < len(cores):
        os.sched_setaffinity(0, {cores[-1 - index]})


def _run_one(job: tuple[str, int, int, int, int, int, int, str]) -> dict[str, Any]:
    arm, seed, trials, epochs, min_epochs, reduction_factor, min_trials, folder = job
    import optuna
    import torch

    import tuner
    from tuner._artifacts import artifact_status
    from tuner.storage import open_storage, pareto_front, read_records

    torch.set_num_threads(1)
    base = tuner.load_spec("mnist1d_cnn")
    es: Any = ARMS[arm]["early_stopping"]
    if es != "none":
        es = {
            "name": es,
            "min_epochs": min_epochs,
            "reduction_factor": reduction_factor,
            "min_trials": min_trials,
        }
    name = f"{arm.replace('+', '-')}-s{seed}"
    spec = _bench_spec(base, name, ARMS[arm]["sampler"], seed, es, trials, epochs, folder)
    url = f"sqlite:///{Path(folder) / (name + '.db')}"
    started = time.perf_counter()
    tuner.run(spec, storage=url)
    wall = time.perf_counter() - started
    records = read_records(open_storage(url), name)
    finished = [r for r in records if r.state in ("COMPLETE", "PRUNED")]
    objectives = dict(spec.objectives)
    front = pareto_front(records, objectives)
    most_accurate = max(front, key=lambda r: r.values["accuracy"]) if front else None
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    complete = []
    for r in _complete_trials(records, objectives):
        status = artifact_status(study, r.number)
        complete.append(
            {"number": r.number, "values": dict(r.values), "model": str(status.path or "")}
        )
    return {
        "arm": arm,
        "seed": seed,
        # Epochs trained, plus the fractions of an epoch that rungs fine-tuned copies for.
        "epochs": sum(
            int(r.metrics.get("epochs", len(r.curve)))
            + sum(
                float(rung.get("finetune_epochs", 0.0))
                for rung in (r.metrics.get("rungs") or {}).values()
            )
            for r in finished
        ),
        "complete": sum(r.state == "COMPLETE" for r in records),
        "stopped": sum(r.state == "PRUNED" for r in records),
        "failed": sum(r.state == "FAIL" for r in records),
        "hypervolume": _hypervolume([t["values"] for t in complete], objectives),
        "test_accuracy": most_accurate.metrics["test_accuracy"] if most_accurate else float("nan"),
        "front": len(front),
        "wall_s": wall,
        "trials": complete,
        "objectives": objectives,
    }


def _bench_spec(
    base: Any, name: str, sampler: str, seed: int, es: Any, trials: int, epochs: int, folder: str
) -> Any:
    """``base`` as the bench runs it: one core, no GPU, every trial's model kept."""
    return base.with_overrides(
        name=name,
        sampler={"name": sampler, "seed": seed},
        early_stopping=es,
        budget={"n_trials": trials, "max_epochs": epochs},
        resources={"cpus": 1, "gpus": 0},
        measure={"batch_size": 32, "warmup": 5, "repeats": 20, "threads": 1},
        artifacts={"keep": "all", "path": str(Path(folder) / "models")},
    )


def _complete_trials(records: list[Any], objectives: dict[str, str]) -> list[Any]:
    """Complete, feasible trials with every objective measured (what a front is drawn from)."""
    import math

    return [
        r
        for r in records
        if r.state == "COMPLETE"
        and r.feasible
        and all(m in r.values and math.isfinite(r.values[m]) for m in objectives)
    ]


def _hypervolume(values: list[dict[str, float]], objectives: dict[str, str]) -> float:
    """Hypervolume of the trials' values against REFERENCE, as a fraction of the box
    between the reference and the ideal point (100% accuracy, 0 bytes, 0 ms), so the
    number reads the same whatever the units."""
    import numpy as np

    from tuner.storage import hypervolume

    points = np.array([[v[m] for m in objectives] for v in values], dtype=float)
    reference = [REFERENCE[m] for m in objectives]
    box = float(np.prod([abs(REFERENCE[m] - (m == "accuracy")) for m in objectives]))
    return hypervolume(points, list(objectives.values()), reference) / box


def _retime(rows: list[dict[str, Any]], rounds: int = 3) -> None:
    """Time every complete trial's shipped model again, all in one process on one core,
    runs interleaved, and add ``hypervolume_retimed`` to each row.

    Latency measured while a run went on depends on what else the machine did then; here
    every model is timed under the same conditions, ``rounds`` times in rotated orders,
    keeping its fastest median.
    """
    import torch

    from tuner._artifacts import load_trial_model
    from tuner._measure import measure_latency

    torch.set_num_threads(1)
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    models = []
    for row in rows:
        for trial in row["trials"]:
            if trial["model"]:
                tm = load_trial_model(Path(trial["model"]))
                models.append((trial, tm.shipped_torch(), tm.example))
    best: dict[int, float] = {}
    for k in range(rounds):
        order = models[k::rounds] + [m for i, m in enumerate(models) if i % rounds != k]
        for trial, model, example in order:
            stats = measure_latency(model, example, batch_size=1, warmup=5, repeats=30)
            key = id(trial)
            best[key] = min(best.get(key, float("inf")), stats.p50_ms)
        print(f"re-timed {len(models)} models, round {k + 1}/{rounds}", file=sys.stderr, flush=True)
    for row in rows:
        values = []
        for trial in row["trials"]:
            v = dict(trial["values"])
            if id(trial) in best:
                v["latency_ms"] = best[id(trial)]
            values.append(v)
        row["hypervolume_retimed"] = _hypervolume(values, row["objectives"])
        row["retimed"] = values


def _same_trials_loss(rows: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """Per seed, what ``random+asha``'s stopping cost the front, free of timing noise.

    A seeded random sampler draws the same trials in both arms, trained alike, so the
    trials ``random+asha`` completed are a subset of ``random``'s: their front, valued with
    ``random``'s own (re-timed) measurements, against ``random``'s whole front.
    """
    out = []
    for asha in (r for r in rows if r["arm"] == "random+asha"):
        plain = next((r for r in rows if r["arm"] == "random" and r["seed"] == asha["seed"]), None)
        if plain is None:
            continue
        completed = {t["number"] for t in asha["trials"]}
        subset = [v for t, v in zip(plain["trials"], plain["retimed"]) if t["number"] in completed]
        whole = _hypervolume(plain["retimed"], plain["objectives"])
        out.append((asha["seed"], 1 - _hypervolume(subset, plain["objectives"]) / whole))
    return out


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(float(r[key]) for r in rows)


def main() -> None:
    from tuner._spec import EarlyStoppingSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # The spec's defaults, as a user who writes ``early_stopping: asha`` gets them.
    parser.add_argument("--min-epochs", type=int, default=EarlyStoppingSpec.min_epochs)
    parser.add_argument("--reduction-factor", type=int, default=EarlyStoppingSpec.reduction_factor)
    parser.add_argument("--min-trials", type=int, default=EarlyStoppingSpec.min_trials)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep each run's study file (NAME.db) in DIR, to open in the dashboard",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuner-bench-es-") as scratch:
        folder = scratch
        if args.keep:
            folder = str(Path(args.keep).resolve())
            Path(folder).mkdir(parents=True, exist_ok=True)
        jobs = [
            (
                arm,
                seed,
                args.trials,
                args.epochs,
                args.min_epochs,
                args.reduction_factor,
                args.min_trials,
                folder,
            )
            for seed in args.seeds
            for arm in args.arms
        ]
        # A plain arm and its asha arm of one seed run side by side: latency is an
        # objective, and a machine that slows down over the run must slow both alike.
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)
        pinned = args.parallel <= len(os.sched_getaffinity(0))
        with ctx.Pool(
            args.parallel,
            initializer=_pin_to_a_core if pinned else None,
            initargs=(counter,) if pinned else (),
        ) as pool:
            rows = []
            for row in pool.imap_unordered(_run_one, jobs, chunksize=1):
                rows.append(row)
                print(
                    f"[{len(rows)}/{len(jobs)}] {row['arm']} seed {row['seed']}: "
                    f"{row['epochs']:.0f} epochs, hypervolume {row['hypervolume']:.4f} "
                    f"({row['wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        _retime(rows)
    total = time.perf_counter() - started

    print(
        f"\nmnist1d-cnn: {args.trials} trials x {args.epochs} epochs per run, seeds {args.seeds}; "
        f"asha min_epochs {args.min_epochs}, reduction_factor {args.reduction_factor}, "
        f"min_trials {args.min_trials}; "
        f"reference point {REFERENCE}\n"
        "hypervolume: with the latency each trial measured as it ran (in run), and with every "
        "model timed again at the end, together on one core (re-timed)\n"
    )
    header = (
        f"{'run':<12} {'seed':>4} {'epochs':>7} {'complete':>8} {'stopped':>7} {'failed':>6} "
        f"{'front':>5} {'HV in run':>9} {'HV re-timed':>11} {'test acc':>8} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: (list(ARMS).index(r["arm"]), r["seed"])):
        print(
            f"{r['arm']:<12} {r['seed']:>4} {r['epochs']:>7.0f} {r['complete']:>8} "
            f"{r['stopped']:>7} {r['failed']:>6} {r['front']:>5} {r['hypervolume']:>9.4f} "
            f"{r['hypervolume_retimed']:>11.4f} {r['test_accuracy']:>8.3f} {r['wall_s']:>7.1f}"
        )
    base = [r for r in rows if r["arm"] == "tpe"]
    print(
        f"\n{'mean over seeds':<16} {'epochs':>7} {'fewer epochs':>12} {'HV in run':>9} "
        f"{'HV re-timed':>11} {'vs tpe':>6} {'test acc':>8} {'wall s':>7}"
    )
    for arm in args.arms:
        mine = [r for r in rows if r["arm"] == arm]
        epochs, hv = _mean(mine, "epochs"), _mean(mine, "hypervolume_retimed")
        fewer = f"{_mean(base, 'epochs') / epochs:.2f}x" if base else "-"
        versus = f"{hv / _mean(base, 'hypervolume_retimed'):.3f}" if base else "-"
        print(
            f"{arm:<16} {epochs:>7.1f} {fewer:>12} {_mean(mine, 'hypervolume'):>9.4f} "
            f"{hv:>11.4f} {versus:>6} {_mean(mine, 'test_accuracy'):>8.3f} "
            f"{_mean(mine, 'wall_s'):>7.1f}"
        )
    print("\ntarget: >= 2x fewer epochs for <= 2% less hypervolume (re-timed; in run)")
    for plain, stopped in (("tpe", "tpe+asha"), ("random", "random+asha")):
        full = [r for r in rows if r["arm"] == plain]
        asha = [r for r in rows if r["arm"] == stopped]
        if not full or not asha:
            continue
        fewer = _mean(full, "epochs") / _mean(asha, "epochs")
        kept = _mean(asha, "hypervolume_retimed") / _mean(full, "hypervolume_retimed")
        kept_in_run = _mean(asha, "hypervolume") / _mean(full, "hypervolume")
        verdict = "met" if fewer >= 2 and kept >= 0.98 else "missed"
        print(
            f"  {stopped:<11} vs {plain:<6}: {verdict} ({fewer:.2f}x fewer epochs, "
            f"{100 * (1 - kept):+.1f}% hypervolume lost; {100 * (1 - kept_in_run):+.1f}% in run)"
        )
    same = _same_trials_loss(rows)
    if same:
        per_seed = ", ".join(f"seed {seed} {100 * loss:+.1f}%" for seed, loss in same)
        mean = 100 * statistics.fmean(loss for _, loss in same)
        print(
            f"  random+asha on random's own measurements (the same trials; stopping alone): "
            f"{mean:+.1f}% hypervolume lost ({per_seed})"
        )
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()

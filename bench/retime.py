"""How far apart the latencies of one model land when each trial times itself as it ends,
and once the models are re-timed side by side (``tuner retime``).

A sweep of ``--trials`` digits MLPs that all ship the same architecture (256 hidden units,
float, no sparsity; only the learning rate is searched), so they all have one true
latency. The second half of the sweep runs while a neighbour process keeps the CPUs busy
(a second job on the machine, a noisy host under a VM). Every trial keeps its model. Then
every trial's model is timed again side by side, in rotated rounds, through the same code
as ``tuner retime`` (which re-times the front's models; here every trial's, to see the
spread): once with the machine quiet, once with the neighbour busy again.

On the 2-core VM this was written on, neither this neighbour nor a CPU hog on the timing
thread's own core moved these medians: a pass of a fraction of a millisecond, timed 30 times,
fits between the scheduler's switches, and a median rides out the passes that do not. What
moved stored latencies there was the machine's own speed over minutes, which no neighbour
reproduced; the table then shows how closely re-timing agrees with the trials' own figures.

Prints, over the same-architecture trials, the latency at batch 1 and at batch 32: the
fastest, the median, the slowest and the slowest over the fastest; and how many trials the
Pareto front (accuracy, size, latency) holds with each set of figures. Where the models are
the same, a front of more than one trial is made of latency noise.

    python bench/retime.py [--trials 8] [--rounds 3] [--neighbour-threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import tuner
from tuner._artifacts import artifact_status, load_trial_model
from tuner._retime import _candidate, _devices, _retimed_trial, _time_in_turns
from tuner.storage import (
    load_study_readonly,
    open_storage,
    pareto_mask,
    read_records,
    study_objectives,
)

NAME = "retime-bench"
NEIGHBOUR = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((700, 700))\n"
    "while True:\n"
    "    a = (a @ a) / 700.0\n"
)


def _spec(trials: int, folder: Path) -> dict[str, Any]:
    return {
        "name": NAME,
        "workload": "digits-mlp",
        "objectives": {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"},
        "search_space": {
            "optimizer": "adamw",
            "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            "batch_size": 64,
            "hidden_units": 256,
            "prune_threshold": 0.0,
            "quantize": "none",
        },
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": trials, "max_epochs": 3},
        "measure": {"batch_size": 32, "warmup": 10, "repeats": 30, "compile": "never"},
        "artifacts": {"keep": "all", "path": str(folder / "artifacts"), "tensorboard": False},
    }


def _neighbour(threads: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env)


def _say(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _retime_all(url: str, rounds: int) -> dict[int, dict[str, float]]:
    """Every complete trial's model timed again, side by side (the front's path, all trials)."""
    store = open_storage(url, heartbeat=False)
    study = load_study_readonly(store, NAME)
    pool = []
    for record in read_records(store, NAME):
        if record.state != "COMPLETE":
            continue
        path = artifact_status(study, record.number).path
        assert path is not None, f"trial {record.number} kept no model"
        pool.append(_candidate(load_trial_model(path), record))
    _time_in_turns(pool, _devices(pool), rounds, _say)
    store.engine.dispose()
    return {c.record.number: _retimed_trial(c).retimed for c in pool}


def _front_size(values: dict[int, dict[str, float]], objectives: dict[str, str]) -> int:
    names = list(objectives)
    points = np.array([[v[m] for m in names] for v in values.values()], dtype=float)
    return int(pareto_mask(points, [objectives[m] for m in names]).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--neighbour-threads", type=int, default=2)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="retime-bench-"))
    url = f"sqlite:///{folder / 'bench.db'}"
    spec = _spec(args.trials, folder)
    quiet = args.trials // 2
    print(f"{quiet} trials with the machine quiet ...", file=sys.stderr, flush=True)
    tuner.run(spec, storage=url, n_trials=quiet)
    print(f"{args.trials - quiet} trials beside a busy neighbour ...", file=sys.stderr, flush=True)
    neighbour = _neighbour(args.neighbour_threads)
    try:
        tuner.run(spec, storage=url)
    finally:
        neighbour.kill()
        neighbour.wait()

    store = open_storage(url, read_only=True, heartbeat=False)
    records = [r for r in read_records(store, NAME) if r.state == "COMPLETE"]
    objectives = study_objectives(load_study_readonly(store, NAME))
    store.engine.dispose()
    stored = {r.number: {**r.values, **r.metrics} for r in records}
    print("re-timing with the machine quiet ...", file=sys.stderr, flush=True)
    quiet_now = _retime_all(url, args.rounds)
    print("re-timing beside the busy neighbour ...", file=sys.stderr, flush=True)
    neighbour = _neighbour(args.neighbour_threads)
    try:
        busy_now = _retime_all(url, args.rounds)
    finally:
        neighbour.kill()
        neighbour.wait()

    sets = {
        "as each trial timed itself": stored,
        "re-timed side by side, quiet": quiet_now,
        "re-timed side by side, busy": busy_now,
    }
    print(
        f"\n{len(records)} trials of one architecture (digits MLP, 256 units, float), "
        f"{len(records) - quiet} of them run beside a busy neighbour "
        f"({args.neighbour_threads} threads); one thread, {args.rounds} rounds when re-timed\n"
    )
    header = f"{'latencies':<30} {'batch':>5} {'fastest':>8} {'median':>8} {'slowest':>8}"
    print(f"{header} {'spread':>7} {'front':>6}")
    for label, figures in sets.items():
        values = {
            n: {**{m: float(v) for m, v in stored[n].items() if m in objectives}, **figures[n]}
            for n in stored
        }
        front = _front_size(values, objectives)
        for metric, batch in (("latency_ms", 1), ("latency_ms_batch", 32)):
            times = sorted(float(figures[n][metric]) for n in stored)
            print(
                f"{label:<30} {batch:>5} {times[0]:>8.4f} {statistics.median(times):>8.4f} "
                f"{times[-1]:>8.4f} {times[-1] / times[0]:>6.2f}x {front:>6}"
            )
    print(
        "\nspread: slowest over fastest of the same model; front: trials on the Pareto front of "
        "accuracy, size and latency with those latencies (ms)"
    )


if __name__ == "__main__":
    main()

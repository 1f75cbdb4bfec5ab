"""Early-stopping rules replayed on trials trained to the end: epochs saved against front lost.

A real run of ``bench/early_stopping.py`` gives one draw per seed, and TPE's draws vary by
several percent. This bench separates the rule from that noise. It trains a pool of
mnist1d-cnn trials to ``max_epochs`` once, recording at every rung (1, 3, 9 epochs) what
``asha`` ranks by there: the accuracy of the copy as it would ship, its size and its
latency. Nothing is stopped. It then replays asynchronous successive halving, one worker
as in the real bench, with each rule: a trial is stopped where the rule says so, and the
front is drawn from the trials that would have completed. The table gives, per rule, the
epochs saved and the hypervolume lost against training every trial of the same order to
the end.

* ``--sampler random`` (the default): a pool of random trials, replayed in many random
  orders of ``--trials``.
* ``--sampler tpe``: one TPE run per pool seed, each replayed in its own order. TPE's
  trials depend on those before them, and a real run with stopping would have steered
  TPE elsewhere; the replay keeps the trials TPE drew when nothing was stopped.

Run from the repository root::

    .venv/bin/python bench/early_stopping_replay.py --pool /tmp/es-pool          # 4 x 45 trials
    .venv/bin/python bench/early_stopping_replay.py --pool /tmp/es-pool --orders 500  # replay again
    .venv/bin/python bench/early_stopping_replay.py --pool /tmp/es-pool --sampler tpe \
        --pool-seeds 10 11 12 13 14 15 --pool-trials 40                      # 6 TPE runs

The pool is kept in ``--pool`` (``pool-random.json`` or ``pool-tpe.json``, and the
models) and reused when it is there.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from early_stopping import _bench_spec, _complete_trials, _hypervolume, _retime

OBJECTIVES = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}
POOL_RUNGS = (1, 3, 9)  # min_epochs 1, reduction_factor 3, 30 epochs
Rule = Callable[[int, list[float], list[list[float]]], bool]


def _train(job: tuple[str, int, int, int, str]) -> list[dict[str, Any]]:
    sampler, seed, trials, epochs, folder = job
    import optuna
    import torch

    import tuner
    from tuner._artifacts import artifact_status
    from tuner.storage import open_storage, read_records

    torch.set_num_threads(1)
    name = f"pool-{sampler}-s{seed}"
    # Rungs are recorded but nothing is stopped: no rung ever has enough trials.
    es = {"name": "asha", "min_epochs": 1, "reduction_factor": 3, "min_trials": 10**6}
    base = tuner.load_spec("mnist1d_cnn")
    spec = _bench_spec(base, name, sampler, seed, es, trials, epochs, folder)
    url = f"sqlite:///{Path(folder) / (name + '.db')}"
    tuner.run(spec, storage=url)
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    out = []
    for r in _complete_trials(read_records(open_storage(url), name), OBJECTIVES):
        rungs = r.metrics.get("rungs") or {}
        if any(str(k) not in rungs for k in POOL_RUNGS):
            continue
        path = artifact_status(study, r.number).path
        out.append(
            {
                "seed": seed,
                "number": r.number,
                "values": {m: float(r.values[m]) for m in OBJECTIVES},
                "rungs": rungs,
                "model": str(path or ""),
            }
        )
    return out


def _pool(
    folder: Path, sampler: str, seeds: Sequence[int], trials: int, epochs: int
) -> list[dict[str, Any]]:
    saved = folder / f"pool-{sampler}.json"
    if saved.exists():
        return json.loads(saved.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(min(2, len(seeds))) as workers:
        jobs = [(sampler, s, trials, epochs, str(folder)) for s in seeds]
        pool = [t for part in workers.imap(_train, jobs) for t in part]
    # Time every model again together, as the real bench does, for the final latency.
    row = {"trials": [t for t in pool if t["model"]], "objectives": OBJECTIVES}
    _retime([row])
    for trial, values in zip(row["trials"], row["retimed"]):
        trial["values"]["latency_ms"] = values["latency_ms"]
    saved.write_text(json.dumps(pool))
    return pool


def _at_rung(trial: dict[str, Any], rung: int) -> list[float]:
    """What ``asha`` knew at the rung: shipped accuracy then, size and latency from the
    first rung (where the real rule measures them once)."""
    first = trial["rungs"][str(POOL_RUNGS[0])]
    return [trial["rungs"][str(rung)]["accuracy"], first["size_bytes"], first["latency_ms"]]


def _replay(
    order: Sequence[dict[str, Any]], rungs: Sequence[int], rule: Rule, epochs: int
) -> tuple[list[dict[str, float]], float]:
    recorded: dict[int, list[list[float]]] = {r: [] for r in rungs}
    complete, spent = [], 0.0
    for trial in order:
        for level, rung in enumerate(rungs):
            mine = _at_rung(trial, rung)
            goes_on = rule(level, mine, recorded[rung])
            recorded[rung].append(mine)
            spent += trial["rungs"][str(rung)].get("finetune_epochs", 0.0)
            if not goes_on:
                spent += rung
                break
        else:
            spent += epochs
            complete.append(trial["values"])
    return complete, spent


def _rules() -> dict[str, Rule]:
    from tuner._early_stopping import rank_at_rung, rung_tolerance

    directions = list(OBJECTIVES.values())
    ties = rung_tolerance(list(OBJECTIVES))

    def rule(
        min_trials: int,
        front_from: int | None,
        tolerance: list[float] | None,
        anchors: list[bool] | None = None,
    ) -> Rule:
        # The best 1/reduction_factor go on; from rung ``front_from`` (0 = the first) on,
        # so does a trial no other dominates; ``None`` keeps no front (MO-ASHA as published).
        def decide(level: int, mine: list[float], others: list[list[float]]) -> bool:
            keep_front = front_from is not None and level >= front_from
            return rank_at_rung(
                mine,
                others,
                directions,
                reduction_factor=3,
                min_trials=min_trials,
                keep_front=keep_front,
                tolerance=tolerance,
                anchors=anchors,
            ).promote

        return decide

    return {
        "MO-ASHA quota, min_trials 8": rule(8, None, None),
        "front kept at every rung": rule(3, 0, None),
        "front kept from rung 2": rule(3, 1, None),
        "...and latency ties": rule(3, 1, ties),
        "...and accuracy first (asha)": rule(3, 1, ties, [True, False, False]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, metavar="DIR", help="where the pool is kept")
    parser.add_argument(
        "--sampler",
        choices=("random", "tpe"),
        default="random",
        help="random: replay random orders of the pool; tpe: replay each seed's run as it went",
    )
    parser.add_argument("--pool-seeds", type=int, nargs="+", default=[100, 101, 102, 103])
    parser.add_argument("--pool-trials", type=int, default=45, help="trials per pool seed")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--trials", type=int, default=40, help="trials per replayed run")
    parser.add_argument("--orders", type=int, default=200, help="random orders replayed")
    args = parser.parse_args()
    if args.epochs < POOL_RUNGS[-1] * 3:
        sys.exit(f"--epochs: {args.epochs} has no rung at {POOL_RUNGS[-1]}; give at least 27")

    pool = _pool(Path(args.pool), args.sampler, args.pool_seeds, args.pool_trials, args.epochs)
    if args.sampler == "tpe":
        # TPE's trials depend on those before them: replay each seed's run in its order.
        runs: dict[int, list[dict[str, Any]]] = {}
        for trial in sorted(pool, key=lambda t: (t["seed"], t["number"])):
            runs.setdefault(trial["seed"], []).append(trial)
        orders = list(runs.values())
        print(
            f"\n{len(pool)} TPE mnist1d-cnn trials trained to {args.epochs} epochs; "
            f"{len(orders)} runs replayed in their own order, one worker, reduction_factor 3\n"
        )
    else:
        if len(pool) < args.trials:
            sys.exit(f"--trials: {args.trials} is more than the pool's {len(pool)} trials")
        rng = random.Random(0)
        orders = [rng.sample(pool, args.trials) for _ in range(args.orders)]
        print(
            f"\n{len(pool)} random mnist1d-cnn trials trained to {args.epochs} epochs; "
            f"{args.orders} random orders of {args.trials}, one worker, reduction_factor 3\n"
        )
    full = [_hypervolume([t["values"] for t in o], OBJECTIVES) for o in orders]
    header = (
        f"{'rule':<28} {'rungs':<10} {'fewer epochs':>12} {'HV lost':>8} {'sd':>6} {'p90 lost':>9}"
    )
    print(header)
    print("-" * len(header))
    for rungs in (POOL_RUNGS, POOL_RUNGS[1:]):
        for name, rule in _rules().items():
            lost, fewer = [], []
            for order, whole in zip(orders, full):
                complete, spent = _replay(order, rungs, rule, args.epochs)
                lost.append(1 - _hypervolume(complete, OBJECTIVES) / whole)
                fewer.append(len(order) * args.epochs / spent)
            print(
                f"{name:<28} {','.join(map(str, rungs)):<10} {statistics.fmean(fewer):>11.2f}x "
                f"{100 * statistics.fmean(lost):>7.2f}% {100 * statistics.stdev(lost):>5.2f}% "
                f"{100 * float(np.percentile(lost, 90)):>8.2f}%"
            )
    print(f"\nmin_epochs 1 gives rungs {POOL_RUNGS}; min_epochs 3 gives {POOL_RUNGS[1:]}")


if __name__ == "__main__":
    main()

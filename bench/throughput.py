"""Throughput and worker efficiency of the Ray backend with 1-second trials.

For 1, 2, 4 and 8 workers on PostgreSQL and on a SQLite file, runs ``--per-worker``
trials per worker whose workload sleeps one second, then reads the store:
trials/hour over the sweep (first trial start to last trial end) and worker efficiency =
sum of trial times / (sweep wall time x workers); "steady" is the same ratio from when
every worker has started its first trial to when the first worker runs out of trials. Ray is started once and kept warm;
each sweep starts its own actors. The trials sleep, so 8 workers fit on 2 cores.

Run: .venv/bin/python bench/throughput.py [--per-worker 4] [--workers 1 2 4 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))

import optuna  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tuner  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def sleep_1s(params: dict[str, Any], ctx: Any) -> tuner.TrainedModel:
    time.sleep(1.0)
    ctx.report(0, val_accuracy=0.5)
    model = nn.Sequential(nn.Linear(4, 2))
    x = torch.zeros(4, 4)
    y = torch.zeros(4, dtype=torch.long)
    return tuner.TrainedModel(model=model, val_data=(x, y), test_data=(x, y))


def sweep(url: str, workers: int, per_worker: int) -> tuple[float, float, int, float | None]:
    n = workers * per_worker
    spec = {
        "name": "throughput",
        "workload": "throughput:sleep_1s",
        "objectives": {"accuracy": "maximize"},
        "search_space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": n, "max_epochs": 1},
        "resources": {"cpus": 0.25},
        "measure": {"batch_size": 2, "warmup": 0, "repeats": 3, "threads": 1},
    }
    tuner.run(spec, storage=url, backend="ray", workers=workers)
    study = optuna.load_study(study_name="throughput", storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    wall = (last - first).total_seconds()
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    # Steady state: from when every worker has started a trial to when the first one
    # runs out of trials; leaves out actors starting up one after another and the tail.
    starts = sorted(t.datetime_start for t in done)
    ends = sorted(t.datetime_complete for t in done)
    lo, hi = starts[workers - 1], ends[len(ends) - workers]
    steady = None
    if hi > lo:
        inside = sum(
            max(0.0, (min(t.datetime_complete, hi) - max(t.datetime_start, lo)).total_seconds())
            for t in done
        )
        steady = inside / ((hi - lo).total_seconds() * workers)
    return len(done) / wall * 3600, busy / (wall * workers), len(done), steady


def pg_url() -> str:
    import sqlalchemy

    name = f"tuner_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-worker", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for store in ("postgresql", "sqlite"):
                for workers in args.workers:
                    url = f"sqlite:///{tmp}/w{workers}.db" if store == "sqlite" else pg_url()
                    try:
                        per_hour, efficiency, n, steady = sweep(url, workers, args.per_worker)
                    finally:
                        if store == "postgresql":
                            drop(url)
                    print(f"  {store} {workers} workers: {per_hour:.0f} trials/h, {efficiency:.1%}")
                    rows.append((store, workers, n, per_hour, efficiency, steady))
    finally:
        ray.shutdown()
    print(f"\nRay backend, 1-second trials, {args.per_worker} per worker, warm Ray")
    print(
        f"{'store':<11} {'workers':>7} {'trials':>6} {'trials/h':>9} {'vs 1 worker':>11} {'efficiency':>10}"
    )
    base = {r[0]: r[3] for r in rows if r[1] == min(args.workers)}
    for store, workers, n, per_hour, efficiency, steady in rows:
        print(
            f"{store:<11} {workers:>7} {n:>6} {per_hour:>9.0f} {per_hour / base[store]:>10.2f}x "
            f"{efficiency:>9.1%} " + (f"{steady:>7.1%}" if steady is not None else f"{'-':>7}")
        )
    print("target: efficiency >= 95% (Ray Tune's scalability page shows 87%)")


if __name__ == "__main__":
    main()

"""What writing TensorBoard event files costs a trial.

Runs the same study (same sampler seed, so the same parameters trial by trial) with
``artifacts.tensorboard`` on and off, the two arms interleaved round by round so load
drift hits both, and prints per arm the mean trial time, plus the time spent inside
tuner's TensorBoard writer (opening, per-epoch scalars, the final HParams session and
closing) as a share of the trial; importing the writer, once per worker process, is
timed apart. With ``--postgres URL`` a third arm keeps each run in a PostgreSQL study
store (as trials whose models are kept there do): its writer time includes packing the
run and writing it to the store. Run: .venv/bin/python bench/tensorboard_cost.py
[--spec mnist1d_cnn] [--trials 4] [--epochs 5] [--rounds 2] [--postgres URL]
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

import tuner
from tuner import _objective, _tensorboard
from tuner.storage import open_storage, read_records

_SPENT = [0.0]


def _timed(fn: Any) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SPENT[0] += time.perf_counter() - started

    return run


for _name in ("__init__", "epoch", "finish", "close"):
    setattr(_tensorboard.TrialLog, _name, _timed(getattr(_tensorboard.TrialLog, _name)))
_objective.keep_run = _timed(_tensorboard.keep_run)

ARMS = {"off": "tensorboard off", "on": "tensorboard on", "store": "runs in store"}


def _scratch_database(admin_url: str) -> str:
    import uuid

    import sqlalchemy

    name = f"tuner_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return sqlalchemy.engine.make_url(admin_url).set(database=name).render_as_string(False)


def _drop_database(admin_url: str, url: str) -> None:
    import sqlalchemy

    name = sqlalchemy.engine.make_url(url).database
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def _arm(
    spec: Any, arm: str, folder: Path, trials: int, epochs: int, admin: str | None
) -> dict[str, float]:
    url = _scratch_database(str(admin)) if arm == "store" else f"sqlite:///{folder / (arm + '.db')}"
    artifacts: dict[str, Any] = {"keep": "none", "tensorboard": arm != "off"}
    if arm == "store":
        artifacts["in_store"] = True
    else:
        artifacts["path"] = str(folder / "art")
    spec = spec.with_overrides(
        name=f"tb-{arm}",
        early_stopping={"name": "none"},
        budget={"n_trials": trials, "max_epochs": epochs},
        artifacts=artifacts,
    )
    _SPENT[0] = 0.0
    try:
        tuner.run(spec, storage=url)
        store = open_storage(url, heartbeat=False)
        records = read_records(store, spec.name)
        store.engine.dispose()
    finally:
        if arm == "store":
            _drop_database(str(admin), url)
    durations = [r.duration_s for r in records if r.duration_s is not None]
    return {"trial_s": statistics.mean(durations), "writer_s": _SPENT[0] / max(1, len(records))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="mnist1d_cnn")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="also keep runs in a scratch database of this server (default: the local one)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("torch").setLevel(logging.ERROR)
    base = tuner.load_spec(args.spec)
    # Once per worker process, whatever the number of trials: reported on its own line.
    started = time.perf_counter()
    import torch.utils.tensorboard  # noqa: F401

    import_s = time.perf_counter() - started
    arms = ["off", "on"] + (["store"] if args.postgres else [])
    rows: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for arm in arms if round_ % 2 == 0 else arms[::-1]:
                folder = Path(tmp) / f"r{round_}-{arm}"
                folder.mkdir()
                rows[arm].append(_arm(base, arm, folder, args.trials, args.epochs, args.postgres))
                print(
                    f"round {round_ + 1} {ARMS[arm]}: {rows[arm][-1]['trial_s']:.2f} s/trial",
                    flush=True,
                )
    off = statistics.mean(r["trial_s"] for r in rows["off"])
    print()
    print(f"{args.spec}, {args.trials} trials x {args.epochs} epochs, {args.rounds} rounds")
    print(f"{'arm':<16}{'s/trial':>10}{'writer s/trial':>16}{'writer share':>14}{'vs off':>8}")
    print(f"{ARMS['off']:<16}{off:>10.3f}{'-':>16}{'-':>14}{1.0:>8.3f}")
    for arm in arms[1:]:
        trial_s = statistics.mean(r["trial_s"] for r in rows[arm])
        writer = statistics.mean(r["writer_s"] for r in rows[arm])
        print(
            f"{ARMS[arm]:<16}{trial_s:>10.3f}{writer:>16.4f}"
            f"{100 * writer / trial_s:>13.2f}%{trial_s / off:>8.3f}"
        )
    print(f"once per worker process: importing the writer took {import_s:.3f} s")


if __name__ == "__main__":
    main()

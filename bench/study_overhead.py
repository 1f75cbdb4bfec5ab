"""Per-trial overhead of `tuner.run` against a bare Optuna loop on the same kind of store.

Both sides sample the same search space and write to a fresh store of the same kind;
tuner's side runs a workload that does nothing (bench/_noop_workload.py), so the
difference is tuner's own cost per trial: budget checks, compression, measuring, and
recording the metrics. The bare side uses Optuna's own RDBStorage (WAL and
synchronous=NORMAL on SQLite, the same heartbeats), not tuner's store, whose reads and
writes are its own. Run: .venv/bin/python bench/study_overhead.py [--trials 60] [--postgres]
[--mysql]: the server stores are the local ones, each side in a scratch database of its
own, dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))

import tuner  # noqa: E402
from tuner.storage._rdb import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "prune_threshold": {"type": "float", "low": 0.0, "high": 0.9},
    "quantize": {"type": "categorical", "choices": ["none"]},
}


def _plain_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's own RDBStorage, tuned the way a careful user would: WAL and
    synchronous=NORMAL on SQLite, and the same heartbeats tuner records."""
    import sqlalchemy

    if url.startswith("sqlite"):
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
        engine.dispose()
    storage = optuna.storages.RDBStorage(
        url,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=GRACE_PERIOD_S,
    )
    if url.startswith("sqlite"):

        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        storage.engine.dispose()
    return storage


def bare_optuna(url: str, n: int) -> float:
    storage = _plain_storage(url)
    study = optuna.create_study(
        study_name="bare",
        storage=storage,
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        trial.suggest_categorical("optimizer", ["sgd", "adamw"])
        trial.suggest_float("lr", 1e-4, 0.3, log=True)
        trial.suggest_categorical("batch_size", [32, 64, 128])
        trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        trial.suggest_float("prune_threshold", 0.0, 0.9)
        trial.suggest_categorical("quantize", ["none"])
        return 0.5, 1000.0, 0.1

    started = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - started) / n * 1000


def tuner_run(url: str, n: int, keep: str = "pareto") -> float:
    spec = {
        "name": "tuned",
        "workload": "_noop_workload:noop",
        "search_space": SPACE,
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": n, "max_epochs": 1},
        "measure": {"batch_size": 2, "warmup": 0, "repeats": 3},
        "artifacts": {"keep": keep},
    }
    tuner.run(spec, storage=url)  # warm-up: imports, first compression
    started = time.perf_counter()
    tuner.run(spec, storage=url, n_trials=2 * n)
    return (time.perf_counter() - started) / n * 1000


@contextlib.contextmanager
def _without_outage_riding() -> Iterator[None]:
    """tuner with its store calls made directly, without the outage retry around them."""
    from tuner.storage import _outage

    original = _outage.ride_url
    _outage.ride_url = lambda call, url, window=None: call()
    try:
        yield
    finally:
        _outage.ride_url = original


_ADMIN = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
_scratch: list[tuple[str, str]] = []


def _server_url(server: str) -> str:
    import sqlalchemy

    admin = _ADMIN[server]
    name = f"tuner_bench_{uuid.uuid4().hex[:8]}"
    quote = '"' if server == "postgresql" else "`"
    engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quote}{name}{quote}")
    engine.dispose()
    _scratch.append((server, name))
    return admin.rsplit("/", 1)[0] + f"/{name}"


def _drop_scratch() -> None:
    import sqlalchemy

    for server, name in _scratch:
        engine = sqlalchemy.create_engine(_ADMIN[server], isolation_level="AUTOCOMMIT")
        force = " WITH (FORCE)" if server == "postgresql" else ""
        quote = '"' if server == "postgresql" else "`"
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}")
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--mysql", action="store_true", help="also on MySQL/MariaDB")
    args = parser.parse_args()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("sqlite (WAL)", lambda tag: f"sqlite:///{tmp}/{tag}.db")]
        if args.postgres:
            stores.append(("postgresql", lambda tag: _server_url("postgresql")))
        if args.mysql:
            stores.append(("mysql", lambda tag: _server_url("mysql")))
        try:
            for label, make in stores:
                bare = bare_optuna(make("bare"), args.trials)
                ours = tuner_run(make("tuner"), args.trials)
                lean = tuner_run(make("lean"), args.trials, keep="none")
                with _without_outage_riding():
                    direct = tuner_run(make("direct"), args.trials, keep="none")
                rows.append((label, bare, ours, lean, direct))
        finally:
            _drop_scratch()
    print(f"\nper-trial cost, {args.trials} trials each, near-zero-cost workload")
    print("(tuner run keeps the models of front trials; 'no models' sets artifacts.keep: none)")
    print("('no retry' is 'no models' with store calls made directly, without outage riding;")
    print(" SQLite files never ride, so there the two differ only by noise)")
    print(
        f"{'store':<14} {'bare optuna ms':>15} {'tuner run ms':>13} {'ratio':>7} "
        f"{'no models ms':>13} {'ratio':>7} {'no retry ms':>12} {'retry cost':>11}  target"
    )
    for label, bare, ours, lean, direct in rows:
        print(
            f"{label:<14} {bare:>15.1f} {ours:>13.1f} {ours / bare:>6.2f}x "
            f"{lean:>13.1f} {lean / bare:>6.2f}x {direct:>12.1f} {lean / direct:>10.2f}x  <= 1.3x"
        )


if __name__ == "__main__":
    main()

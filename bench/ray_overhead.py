"""Per-trial overhead of dispatch: bare Optuna, tuner local, tuner Ray, Ray Tune + OptunaSearch.

Every side runs the same trial against its own fresh database on the same PostgreSQL
server, one trial at a time, so the differences are what each engine adds per trial.
``--trial direct`` (the default) is an objective that samples three parameters and
returns constants: tuner's workers still run their whole loop (budget counts, the
admission check, stale-trial handling, heartbeats), only the trial body is empty.
``--trial tuner`` runs tuner's real trial on a near-zero-cost workload
(bench/_noop_workload.py: a 1-layer model, compression, a 3-repeat latency measurement). Ms per trial is taken from the store's own
timestamps (first trial start to last trial end, divided by trials - 1): start-up
(processes, Ray, imports) is not counted, only steady state with warm workers.
Ray Tune runs at its best: ``reuse_actors=True`` and ``max_concurrent_trials`` set.

Run: .venv/bin/python bench/ray_overhead.py [--trials 40] [--sqlite]
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

import tuner  # noqa: E402
from tuner._builtin_workloads import resolve_workload  # noqa: E402
from tuner._objective import Objective, measure_trained  # noqa: E402
from tuner._spec import load_spec  # noqa: E402
from tuner._workloads import TrialContext  # noqa: E402
from tuner.storage import open_storage  # noqa: E402

DIRECT_VAR = "TUNER_BENCH_DIRECT_OBJECTIVE"
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "prune_threshold": {"type": "float", "low": 0.0, "high": 0.9},
}
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def direct_objective(trial: optuna.Trial) -> tuple[float, float, float]:
    for name, p in SPACE.items():
        trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
    return 0.5, 1000.0, 0.1


def _direct_build_objective(spec: Any, storage: Any, study_id: int) -> Any:
    # The budget is kept by the worker loop (a lock around count-and-ask), not the objective.
    return direct_objective


def use_direct_objective() -> None:
    """Swap the trial body of tuner's workers for the direct objective (in every worker)."""
    import tuner._dispatch

    tuner._dispatch.build_objective = _direct_build_objective  # type: ignore[assignment]


if os.environ.get(DIRECT_VAR) == "1":  # imported in local workers by the sitecustomize hook
    use_direct_objective()


def spec_dict(n: int) -> dict[str, Any]:
    return {
        "name": "overhead",
        "workload": "_noop_workload:noop",
        "search_space": SPACE,
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": n, "max_epochs": 1},
        "measure": {"batch_size": 2, "warmup": 0, "repeats": 3, "threads": 1},
    }


def steady_ms(url: str, study_name: str) -> float:
    study = optuna.load_study(study_name=study_name, storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    return (last - first).total_seconds() * 1000 / max(1, len(done) - 1)


def bare_optuna(url: str, n: int, direct: bool) -> float:
    spec = load_spec(spec_dict(n))
    study = optuna.create_study(
        study_name="overhead",
        storage=open_storage(url),
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    objective = direct_objective if direct else Objective(spec, resolve_workload(spec.workload))
    study.optimize(objective, n_trials=n)
    return steady_ms(url, "overhead")


def tuner_backend(url: str, n: int, backend: str) -> float:
    tuner.run(spec_dict(n), storage=url, backend=backend, workers=1)
    return steady_ms(url, "overhead")


def ray_tune(url: str, n: int, tmp: str, direct: bool) -> float:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    spec = load_spec(spec_dict(n))
    workload = resolve_workload(spec.workload)

    def trainable(config: dict[str, Any]) -> None:
        import torch

        if direct:
            tune.report({"accuracy": 0.5, "size_bytes": 1000.0, "latency_ms": 0.1})
            return

        ctx = TrialContext(device=torch.device("cpu"), max_epochs=1, seed=0, trial_number=0)
        trained = workload.fn(config, ctx)
        m = measure_trained(spec, config, trained, device=torch.device("cpu"), seed=0)
        tune.report(
            {
                "accuracy": m["accuracy"],
                "size_bytes": m["size_bytes"],
                "latency_ms": m["latency_ms"],
            }
        )

    space = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 0.3, log=True),
        "weight_decay": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
        "prune_threshold": optuna.distributions.FloatDistribution(0.0, 0.9),
    }
    search = OptunaSearch(
        space,
        metric=["accuracy", "size_bytes", "latency_ms"],
        mode=["max", "min", "min"],
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=open_storage(url, heartbeat=False),
        study_name="overhead",
    )
    tuner_ = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=search, num_samples=n, max_concurrent_trials=1, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=tmp, name="overhead", verbose=0),
    )
    tuner_.fit()
    return steady_ms(url, "overhead")


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

    name = url.rsplit("/", 1)[1]
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    parser.add_argument("--trial", choices=["direct", "tuner"], default="direct")
    args = parser.parse_args()
    direct = args.trial == "direct"
    runtime_env: dict[str, Any] = {}
    if direct:
        os.environ[DIRECT_VAR] = "1"
        use_direct_objective()
        # Local workers are fresh interpreters: a sitecustomize in a throwaway folder swaps
        # the trial body there too.
        hook_dir = tempfile.mkdtemp(prefix="tuner-bench-hook-")
        Path(hook_dir, "sitecustomize.py").write_text("import ray_overhead  # noqa: F401\n")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [hook_dir, str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        )
        runtime_env = {
            "env_vars": {"PYTHONPATH": str(Path(__file__).parent), DIRECT_VAR: "1"},
            "worker_process_setup_hook": "ray_overhead.use_direct_objective",
        }
    logging.getLogger("optuna").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env=runtime_env or None,
    )
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        made: list[str] = []

        def store(tag: str) -> str:
            url = f"sqlite:///{tmp}/{tag}.db" if args.sqlite else pg_url()
            made.append(url)
            return url

        try:
            sides = [
                ("bare Optuna loop", lambda: bare_optuna(store("bare"), args.trials, direct)),
                ("tuner local", lambda: tuner_backend(store("local"), args.trials, "local")),
                ("tuner ray (warm actor)", lambda: tuner_backend(store("ray"), args.trials, "ray")),
                (
                    "Ray Tune + OptunaSearch",
                    lambda: ray_tune(store("tune"), args.trials, tmp, direct),
                ),
            ]
            for label, side in sides:
                started = time.perf_counter()
                ms = side()
                print(f"  {label}: {ms:.1f} ms/trial ({time.perf_counter() - started:.0f} s)")
                rows.append((label, ms))
        finally:
            ray.shutdown()
            if not args.sqlite:
                for url in made:
                    drop(url)
    bare = rows[0][1]
    by = dict(rows)
    kind = "SQLite" if args.sqlite else "PostgreSQL"
    print(
        f"\nper-trial cost on {kind}, {args.trials} trials each, one at a time, warm workers, "
        f"{args.trial} trial"
    )
    print(f"{'engine':<26} {'ms/trial':>9} {'vs bare':>8}")
    for label, ms in rows:
        print(f"{label:<26} {ms:>9.1f} {ms / bare:>7.2f}x")
    ray_ms, tune_ms = by["tuner ray (warm actor)"], by["Ray Tune + OptunaSearch"]
    print(
        f"\ntuner ray vs bare Optuna: {ray_ms / bare:.2f}x (target <= 1.3x); "
        f"Ray Tune / tuner ray: {tune_ms / ray_ms:.2f}x (target >= 2x)"
    )


if __name__ == "__main__":
    main()

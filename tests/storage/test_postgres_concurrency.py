"""Many workers of separate drivers on one PostgreSQL study, and lost connections."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import yaml

from tuner.storage import count_states, open_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TUNER = [sys.executable, "-m", "tuner._cli"]


def _driver(spec: Path, url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TUNER_HEARTBEAT_INTERVAL_S": "1",
        "TUNER_GRACE_PERIOD_S": "3",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [*TUNER, "run", str(spec), "--storage", url, "--json", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _max_in_flight(study: optuna.Study) -> int:
    events = []
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            events += [(t.datetime_start, 1), (t.datetime_complete, -1)]
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def _assert_exact(
    url: str, name: str, budget: int, allowed: tuple[str, ...] = ("not run",)
) -> optuna.Study:
    counts = count_states(open_storage(url, heartbeat=False), name)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == budget, counts
    assert counts.get("RUNNING", 0) == 0 and counts.get("WAITING", 0) == 0, counts
    study = optuna.load_study(study_name=name, storage=url)
    for t in study.trials:
        if t.state == optuna.trial.TrialState.FAIL:
            # Trials started when others already filled the budget are failed on purpose.
            assert (t.user_attrs.get("error") or "").startswith(allowed), t.user_attrs
    return study


def test_eight_workers_of_two_drivers_finish_exactly_the_budget(
    postgres_url: str, tmp_path: Path, slow_spec: Any
) -> None:
    budget = 16
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(slow_spec(n_trials=budget, epochs=2, epoch_s=0.5)))
    drivers = [
        _driver(spec, postgres_url, "--workers", "4", "--backend", "local", cwd=tmp_path)
        for _ in range(2)
    ]
    try:
        outputs = [d.communicate(timeout=300)[0] for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    for d, out in zip(drivers, outputs):
        assert d.returncode == 0, out[-3000:]
    study = _assert_exact(postgres_url, "slow", budget)
    assert 1 <= _max_in_flight(study) <= 8


def _terminate_connections(url: str) -> int:
    database = sqlalchemy.engine.make_url(url).database
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return len(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )
    finally:
        engine.dispose()


def test_sweep_survives_lost_database_connections_or_resumes(
    postgres_url: str, tmp_path: Path, slow_spec: Any
) -> None:
    budget = 8
    spec_data = slow_spec(n_trials=budget, epochs=2, epoch_s=0.5)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_data))
    run_dir = Path(spec_data["search_space"]["run_dir"])
    driver = _driver(spec, postgres_url, "--workers", "2", "--backend", "local", cwd=tmp_path)
    try:
        deadline = time.time() + 180
        while len(list(run_dir.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        terminated = _terminate_connections(postgres_url)
        time.sleep(1.5)
        terminated += _terminate_connections(postgres_url)
        assert terminated > 0, "the workers held connections to the study's database"
        out = driver.communicate(timeout=240)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
    if driver.returncode != 0:
        # Stopped: one clear line, no traceback, and running it again resumes.
        assert "Traceback" not in out and "error:" in out, out[-3000:]
        again = _driver(spec, postgres_url, "--workers", "2", "--backend", "local", cwd=tmp_path)
        out = again.communicate(timeout=240)[0]
        assert again.returncode == 0, out[-3000:]
    # A trial whose connection was cut while it wrote its result failed; it was replaced.
    _assert_exact(postgres_url, "slow", budget, allowed=("not run", "StorageInternalError"))

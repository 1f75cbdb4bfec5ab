"""The budget lock: a worker that cannot get it says so in one line instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from tuner.storage import StoreError, open_storage
from tuner.storage._budget import _key, _lock_name, budget_lock


def _hold(conn: sqlalchemy.Connection, url: str, study_id: int) -> None:
    """Take the study's budget lock as another worker would, on ``conn``."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _key(study_id)})
    else:
        name = _lock_name(parsed.database, study_id)
        assert conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 0)"), {"k": name}).scalar() == 1
    conn.commit()


def _release(conn: sqlalchemy.Connection, url: str, study_id: int) -> None:
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _key(study_id)})
    else:
        conn.execute(
            sqlalchemy.text("SELECT RELEASE_LOCK(:k)"),
            {"k": _lock_name(parsed.database, study_id)},
        )
    conn.commit()


def test_a_lock_held_past_the_wait_is_one_clear_error_and_the_wait_does_not_linger(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(server_url, heartbeat=False)
    study_id = optuna.create_study(study_name="held", storage=storage)._study_id
    # Another worker holds the study's lock and does not let go.
    holder = sqlalchemy.create_engine(server_url)
    monkeypatch.setenv("TUNER_BUDGET_LOCK_S", "0.5")
    try:
        with holder.connect() as conn:
            _hold(conn, server_url, study_id)
            started = time.monotonic()
            with pytest.raises(StoreError) as caught, budget_lock(storage, study_id):
                pass
            assert time.monotonic() - started < 10
            message = str(caught.value)
            assert "\n" not in message
            assert f"study {study_id}" in message and "more than 0.5 s" in message
            assert "TUNER_BUDGET_LOCK_S" in message
            _release(conn, server_url, study_id)
        # Once it is free the lock is taken, and the short wait stayed with that one try.
        with budget_lock(storage, study_id) as locked:
            if storage.engine.dialect.name == "postgresql":
                assert locked.execute(sqlalchemy.text("SHOW lock_timeout")).scalar() == "0"
    finally:
        holder.dispose()


@pytest.mark.mysql
def test_mysql_locks_of_same_numbered_studies_in_two_databases_are_apart(
    mysql_url: str, mysql_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MySQL's named locks are server-wide: study 1 of one database must not wait for
    # study 1 of another.
    other = sqlalchemy.engine.make_url(mysql_url).database
    storage = open_storage(mysql_url, heartbeat=False)
    study_id = optuna.create_study(study_name="apart", storage=storage)._study_id
    holder = sqlalchemy.create_engine(mysql_server)
    monkeypatch.setenv("TUNER_BUDGET_LOCK_S", "0.5")
    try:
        with holder.connect() as conn:
            _hold(conn, mysql_server, study_id)  # the same study number, another database
            with budget_lock(storage, study_id):
                pass
            assert other != sqlalchemy.engine.make_url(mysql_server).database
    finally:
        holder.dispose()


@pytest.mark.postgres
def test_a_wait_that_is_not_seconds_is_named(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(postgres_url, heartbeat=False)
    study_id = optuna.create_study(study_name="bad-wait", storage=storage)._study_id
    monkeypatch.setenv("TUNER_BUDGET_LOCK_S", "soon")
    with (
        pytest.raises(StoreError, match="TUNER_BUDGET_LOCK_S: got 'soon'"),
        budget_lock(storage, study_id),
    ):
        pass


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["inline", "local"])
def test_a_run_that_cannot_get_the_lock_stops_with_one_line_and_starts_no_trial(
    backend: str, postgres_url: str, tmp_path: Path
) -> None:
    spec = {
        "name": "held-run",
        "workload": "digits-mlp",
        "objectives": {"accuracy": "maximize"},
        "search_space": {"lr": 0.01, "hidden_units": 16},
        "budget": {"n_trials": 2, "max_epochs": 1},
        "measure": {"batch_size": 8, "warmup": 1, "repeats": 3, "compile": "never"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = optuna.create_study(study_name="held-run", storage=postgres_url)
    holder = sqlalchemy.create_engine(postgres_url)
    try:
        with holder.connect() as conn:
            conn.execute(
                sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _key(study._study_id)}
            )
            conn.commit()
            workers = ["--workers", "2", "--backend", "local"] if backend == "local" else []
            done = subprocess.run(
                [sys.executable, "-m", "tuner._cli", "run", str(path), "--storage", postgres_url]
                + workers,
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "TUNER_BUDGET_LOCK_S": "1"},
            )
    finally:
        holder.dispose()
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Traceback" not in out
    assert "budget lock was held by another worker for more than 1 s" in out
    assert optuna.load_study(study_name="held-run", storage=postgres_url).trials == []

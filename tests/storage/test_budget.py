"""The budget lock: a worker that cannot get it says so in one line instead of hanging."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy

from tuner.storage import StoreError, open_storage
from tuner.storage._budget import _key, budget_lock

pytestmark = pytest.mark.postgres


def test_a_lock_held_past_the_wait_is_one_clear_error_and_the_wait_does_not_linger(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(postgres_url, heartbeat=False)
    study_id = optuna.create_study(study_name="held", storage=storage)._study_id
    # Another worker holds the study's lock and does not let go.
    holder = sqlalchemy.create_engine(postgres_url)
    monkeypatch.setenv("TUNER_BUDGET_LOCK_S", "0.5")
    try:
        with holder.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _key(study_id)})
            conn.commit()
            started = time.monotonic()
            with pytest.raises(StoreError) as caught, budget_lock(storage, study_id):
                pass
            assert time.monotonic() - started < 10
            message = str(caught.value)
            assert "\n" not in message
            assert f"study {study_id}" in message and "more than 0.5 s" in message
            assert "TUNER_BUDGET_LOCK_S" in message
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _key(study_id)})
            conn.commit()
        # Once it is free the lock is taken, and the short wait stayed with that one try.
        with budget_lock(storage, study_id) as locked:
            assert locked.execute(sqlalchemy.text("SHOW lock_timeout")).scalar() == "0"
    finally:
        holder.dispose()


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

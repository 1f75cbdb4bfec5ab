"""Opening the study store: what tuner adds on each database server."""

from __future__ import annotations

import importlib.util
import time

import optuna
import pytest
import sqlalchemy

from tuner.storage import StoreError, open_storage

_PRECISION = (
    "SELECT table_name, column_name, datetime_precision FROM information_schema.columns "
    "WHERE table_schema = DATABASE() AND data_type = 'datetime' "
    "AND table_name IN ('trials', 'trial_heartbeats')"
)
_OWN_PRECISION = _PRECISION.replace(
    "('trials', 'trial_heartbeats')", "('tuner_locks', 'tuner_artifacts')"
)


def _precisions(url: str, query: str = _PRECISION) -> dict[str, int]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(query).all()
    finally:
        engine.dispose()
    return {f"{table}.{column}": int(digits) for table, column, digits in rows}


@pytest.mark.mysql
def test_a_new_mysql_store_keeps_trial_times_to_the_microsecond(mysql_url: str) -> None:
    storage = open_storage(mysql_url, heartbeat=False)
    assert _precisions(mysql_url) == {
        "trials.datetime_start": 6,
        "trials.datetime_complete": 6,
        "trial_heartbeats.heartbeat": 6,
    }
    study = optuna.create_study(study_name="quick", storage=storage)
    for _ in range(3):
        trial = study.ask()
        time.sleep(0.01)
        study.tell(trial, 1.0)
    trials = optuna.load_study(study_name="quick", storage=mysql_url).trials
    # Trials of a few milliseconds have a duration and an order.
    assert all(0 < t.duration.total_seconds() < 1 for t in trials)  # type: ignore[union-attr]
    starts = [t.datetime_start for t in trials]
    assert starts == sorted(starts) and len(set(starts)) == 3
    # tuner's own tables too.
    from tuner.storage._blobs import StoreArtifacts
    from tuner.storage._locks import acquire_lock

    StoreArtifacts(storage, "quick").create_table()
    with acquire_lock(storage, "night"):
        pass
    assert _precisions(mysql_url, _OWN_PRECISION) == {
        "tuner_artifacts.created_at": 6,
        "tuner_locks.acquired_at": 6,
        "tuner_locks.heartbeat_at": 6,
    }
    storage.engine.dispose()


@pytest.mark.mysql
def test_a_mysql_store_optuna_made_is_widened_only_while_it_holds_no_trial(
    mysql_url: str, mysql_server: str
) -> None:
    # Made by Optuna itself, empty: widened when tuner first opens it.
    optuna.storages.RDBStorage(mysql_url).engine.dispose()
    assert set(_precisions(mysql_url).values()) == {0}
    open_storage(mysql_url, heartbeat=False).engine.dispose()
    assert set(_precisions(mysql_url).values()) == {6}

    # Made by Optuna and holding trials: left as it is, and used as it is.
    other = sqlalchemy.engine.make_url(mysql_url).database + "_o"
    admin = sqlalchemy.create_engine(mysql_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{other}`")
    url = sqlalchemy.engine.make_url(mysql_url).set(database=other)
    full = url.render_as_string(hide_password=False)
    try:
        optuna.create_study(study_name="old", storage=full).optimize(lambda t: 1.0, n_trials=1)
        storage = open_storage(full, heartbeat=False)
        assert set(_precisions(full).values()) == {0}
        study = optuna.load_study(study_name="old", storage=storage)
        study.optimize(lambda t: 2.0, n_trials=1)
        assert [t.value for t in study.trials] == [1.0, 2.0]
        storage.engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{other}`")
        admin.dispose()


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("mysql://root:pw@127.0.0.1/x", "install 'pymysql' and write the URL as 'mysql+pymysql"),
        ("mariadb://root:pw@127.0.0.1/x", "write the URL as 'mariadb+pymysql://"),
    ],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_a_url_whose_driver_is_missing_names_the_one_to_install(
    url: str, hint: str, read_only: bool
) -> None:
    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("mysqlclient is installed here, so the default driver is found")
    with pytest.raises(StoreError) as raised:
        open_storage(url, read_only=read_only, heartbeat=False)
    message = str(raised.value)
    assert "No module named 'MySQLdb'" in message and hint in message
    assert ":pw@" not in message and "\n" not in message


@pytest.mark.mysql
def test_a_user_who_may_not_alter_tables_opens_an_empty_optuna_store_as_it_is(
    mysql_url: str, mysql_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    import uuid

    optuna.storages.RDBStorage(mysql_url).engine.dispose()  # made by an administrator
    database = sqlalchemy.engine.make_url(mysql_url).database
    user = f"tuner_rw_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(mysql_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'pw'")
        conn.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO '{user}'@'%%'"
        )
    url = sqlalchemy.engine.make_url(mysql_url).set(username=user, password="pw")
    try:
        started = time.monotonic()
        storage = open_storage(url.render_as_string(hide_password=False), heartbeat=False)
        assert time.monotonic() - started < 10, "a refusal is not an outage to wait out"
        study = optuna.create_study(study_name="as-is", storage=storage)
        study.optimize(lambda t: 1.0, n_trials=1)
        assert [t.value for t in study.trials] == [1.0]
        assert set(_precisions(mysql_url).values()) == {0}
        said = [r.getMessage() for r in caplog.records if "to the second" in r.getMessage()]
        assert len(said) == 1 and "ALTER command denied" in said[0] and ":pw@" not in said[0]
        storage.engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()

"""The study store: Optuna's RDBStorage with the engine options tuner relies on."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event

from ._errors import StoreError
from ._url import check_url, mask_url

HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
MAX_RETRY = 3


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the dashboard, other workers) go on while one worker writes;
    # the busy timeout turns "database is locked" into a short wait.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 60000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _engine_kwargs(backend: str, read_only: bool) -> dict[str, Any]:
    if backend == "sqlite":
        return {"connect_args": {"timeout": 60}}
    # A bounded pool per worker, and connections checked before use, so a database
    # restart costs one reconnect instead of a failed trial.
    return {
        "pool_size": 2 if read_only else 3,
        "max_overflow": 2,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }


def open_storage(
    url: str,
    *,
    heartbeat: bool = True,
    read_only: bool = False,
    max_retry: int = MAX_RETRY,
) -> optuna.storages.RDBStorage:
    """Open the study store at ``url``.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///tuner.db`` or ``postgresql+psycopg://...``.
        heartbeat: record heartbeats, so a trial whose worker died is failed after the
            grace period and retried (at most ``max_retry`` times).
        read_only: never create tables or migrate (the dashboard's way).

    Raises:
        StoreError: one line with the masked URL when it is malformed or unreachable.
    """
    parsed = check_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db_path = Path(parsed.database)
        if read_only and not db_path.exists():
            raise StoreError(f"no study store at {mask_url(url)!r}: {db_path} does not exist")
        if not db_path.parent.exists():
            raise StoreError(
                f"cannot open study store {mask_url(url)!r}: folder {db_path.parent} does not exist"
            )
    kwargs: dict[str, Any] = {"engine_kwargs": _engine_kwargs(backend, read_only)}
    if read_only:
        kwargs.update(skip_table_creation=True, skip_compatibility_check=True)
    if heartbeat and not read_only:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        kwargs.update(
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=retry,
        )
    if backend == "sqlite":
        _enable_wal(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, **kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, RuntimeError) as exc:
        raise StoreError(_describe(url, exc)) from exc
    if backend == "sqlite":
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()
    return storage


def _enable_wal(url: str) -> None:
    # Switch the file to WAL before Optuna's own first connection writes to it.
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 60})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StoreError(_describe(url, exc)) from exc
    finally:
        engine.dispose()


def _describe(url: str, exc: BaseException) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = reason[0] if reason else type(exc).__name__
    if "No module named" in first:
        first += " (install the database driver, e.g. 'psycopg[binary]' for PostgreSQL)"
    password = sqlalchemy.engine.make_url(url).password
    if password:
        first = first.replace(str(password), "***")
    return f"cannot open study store {mask_url(url)!r}: {first}"

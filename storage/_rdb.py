"""The study store: Optuna's RDBStorage with the engine options tuner relies on."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event

from ._env import seconds_from_env
from ._errors import StoreError
from ._frozen import FastRDBStorage
from ._optuna import rdb_backend
from ._outage import StoreUnavailable, is_outage, reason_of, ride_url
from ._url import MYSQL, check_url, mask_url

_log = logging.getLogger("tuner.storage")

HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
MAX_RETRY = 3
# Shorter heartbeats for tests and impatient clusters; every worker of a study should
# see the same values (the Ray backend forwards them to its workers, with the store's
# retry window and budget-lock wait).
HEARTBEAT_INTERVAL_VAR = "TUNER_HEARTBEAT_INTERVAL_S"
GRACE_PERIOD_VAR = "TUNER_GRACE_PERIOD_S"


def _seconds_from_env(name: str, default: int) -> int:
    return int(seconds_from_env(name, default, minimum=1, whole=True))


def heartbeat_settings() -> tuple[int, int]:
    """Heartbeat interval and grace period in seconds (environment, else the defaults)."""
    interval = _seconds_from_env(HEARTBEAT_INTERVAL_VAR, HEARTBEAT_INTERVAL_S)
    grace = _seconds_from_env(GRACE_PERIOD_VAR, max(GRACE_PERIOD_S, 2 * interval))
    if grace <= interval:
        raise StoreError(
            f"{GRACE_PERIOD_VAR}: got {grace}; expected more than the heartbeat interval ({interval})"
        )
    return interval, grace


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
    # A bounded pool per worker. Connections that sat idle are checked before use
    # (see _ping_idle_connections), so a database restart costs one reconnect instead
    # of a failed trial, without a round trip before every statement of a busy worker.
    return {
        "pool_size": 2 if read_only else 3,
        "max_overflow": 2,
        "pool_recycle": 1800,
    }


# A connection used this recently is trusted unless its socket has news (the server
# ended the session); one idle for longer is pinged first.
PING_AFTER_IDLE_S = 2.0


def _has_unread_input(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read: a server that ends a
    session says so (or closes the socket) before the client's next query."""
    import select

    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:  # PyMySQL keeps its socket to itself
        fileno = getattr(getattr(dbapi_connection, "_sock", None), "fileno", None)
    if fileno is None:
        return False
    try:
        readable, _, _ = select.select([fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _ping_idle_connections(engine: sqlalchemy.engine.Engine) -> None:
    import time

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["tuner.last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("tuner.last_used")
        if last is None:
            return
        recent = time.monotonic() - last < PING_AFTER_IDLE_S
        if recent and not _has_unread_input(dbapi_connection):
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            # The ping began a transaction (drivers that do not autocommit do); the pool
            # hands out connections outside one, where a reader may still set its
            # isolation level.
            dbapi_connection.rollback()
        except Exception as exc:
            # The pool drops this connection and checks out a fresh one.
            raise sqlalchemy.exc.DisconnectionError(str(exc)) from exc


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
        interval, grace = heartbeat_settings()
        kwargs.update(
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=retry,
        )
    if read_only:
        _check_is_store(url)
    elif backend == "sqlite":
        _enable_wal(url)
    # A server (not a file) may be down for a moment: writers wait for it, readers say so.
    rides = backend != "sqlite"
    window = 0.0 if read_only else None
    try:
        if rides:
            storage = ride_url(lambda: _create_rdb_storage(url, kwargs), url, window)
        else:
            storage = _create_rdb_storage(url, kwargs)
    except StoreUnavailable:
        raise
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        ImportError,
        OSError,
        RuntimeError,
    ) as exc:
        raise StoreError(_describe(url, exc)) from exc
    storage.rides_outages = rides
    storage.outage_window_s = window
    if backend == "sqlite":
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()
    else:
        _ping_idle_connections(storage.engine)
    return storage


def _create_rdb_storage(url: str, kwargs: dict[str, Any]) -> FastRDBStorage:
    import time

    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = FastRDBStorage(url, **kwargs)
            if not kwargs.get("skip_table_creation"):
                _keep_microseconds(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Drivers started together on a new database race to create the tables;
            # the loser finds them created a moment later.
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


# Optuna's times are DateTime columns, which MySQL and MariaDB make DATETIME: whole
# seconds, so a trial of under a second would have no duration and quick trials no order.
# A new store's columns are widened to microseconds, as SQLite and PostgreSQL keep them.
_TIMES = {
    ("trials", "datetime_start"): "NULL",
    ("trials", "datetime_complete"): "NULL",
    ("trial_heartbeats", "heartbeat"): "NOT NULL",
}


_LOCK_WAIT_TIMEOUT = 1205  # MySQL: another session holds the table


def _keep_microseconds(engine: sqlalchemy.engine.Engine) -> None:
    """Widen a new MySQL store's trial times to microseconds. Best effort: a user who may
    not alter tables, or a table another session holds, leaves them as Optuna made them
    (with one line in the log)."""
    if engine.dialect.name not in MYSQL:
        return
    try:
        with engine.begin() as conn:
            whole = conn.execute(
                sqlalchemy.text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND data_type = 'datetime' "
                    "AND datetime_precision = 0 AND table_name IN ('trials', 'trial_heartbeats')"
                )
            ).all()
            if not whole:
                return
            # A store that already holds trials (one made by Optuna itself) is left as it
            # is: rebuilding a large table would hold up its workers.
            if conn.execute(sqlalchemy.text("SELECT 1 FROM trials LIMIT 1")).first() is not None:
                return
        with engine.connect() as conn:
            # An ALTER waits for every open transaction on the table; not for long here.
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = 5")
            for table, column in whole:
                null = _TIMES.get((str(table), str(column)))
                if null is not None:
                    conn.exec_driver_sql(f"ALTER TABLE {table} MODIFY {column} DATETIME(6) {null}")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        code = tuple(getattr(getattr(exc, "orig", None), "args", ()))[:1]
        if is_outage(exc) and code != (_LOCK_WAIT_TIMEOUT,):
            raise
        _log.warning(
            "study store %s keeps trial times to the second: %s",
            mask_url(engine.url.render_as_string(hide_password=False)),
            reason_of(exc, engine.url),
        )


def _check_is_store(url: str) -> None:
    try:
        engine = sqlalchemy.create_engine(url)
    except ImportError as exc:  # the URL's database driver is not installed
        raise StoreError(_describe(url, exc)) from exc
    try:
        has_tables = sqlalchemy.inspect(engine).has_table("studies")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        if engine.dialect.name != "sqlite" and is_outage(exc):
            reason = _describe(url, exc).split(": ", 1)[-1]
            raise StoreUnavailable(f"study store {mask_url(url)!r} unreachable: {reason}") from exc
        raise StoreError(_describe(url, exc)) from exc
    finally:
        engine.dispose()
    if not has_tables:
        raise StoreError(
            f"{mask_url(url)!r} holds no study store yet (no Optuna tables); "
            "create one with 'tuner run SPEC --storage URL'"
        )


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


_DRIVER_HINT = {
    "postgresql": "install 'psycopg[binary]' and write the URL as 'postgresql+psycopg://...'",
    "mysql": "install 'pymysql' and write the URL as 'mysql+pymysql://...'",
    "mariadb": "install 'pymysql' and write the URL as 'mariadb+pymysql://...'",
}


def _describe(url: str, exc: BaseException) -> str:
    first = reason_of(exc, url)
    if "No module named" in first:
        first += (
            f" ({_DRIVER_HINT.get(check_url(url).get_backend_name(), _DRIVER_HINT['postgresql'])})"
        )
    return f"cannot open study store {mask_url(url)!r}: {first}"


def set_trial_user_attrs(storage: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Write many user attributes of one trial in one statement.

    Optuna writes one transaction (two queries) per attribute; a trial records about
    twenty metrics, so batching them is most of tuner's per-trial cost on the store.
    Rows are the ones Optuna itself writes, so Optuna reads them back as usual. Other
    storages (and other databases) get one ``set_trial_user_attr`` per attribute.
    """
    backend = rdb_backend(storage)
    if isinstance(backend, FastRDBStorage) and backend._fast() and attrs:
        backend.set_trial_user_attrs(trial_id, attrs)
        return
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)

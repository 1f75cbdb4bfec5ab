"""Named locks in the study store, so one job at a time owns a piece of work.

A lock is a row of our own table ``tuner_locks`` in the same database as the
studies. Taking it is one atomic statement (an ``INSERT`` that fails when the row
exists, or an ``UPDATE`` conditioned on the old holder), so it works the same on
SQLite and PostgreSQL. The holder refreshes ``heartbeat_at`` from a background
thread; a lock whose heartbeat is older than ``stale_after_s``, or whose holder is a
process on this host that no longer runs, is taken over.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.dialects import mysql

from ._errors import StoreError
from ._url import MYSQL

# Times in tuner's own tables: MySQL's DATETIME keeps whole seconds unless told otherwise.
PRECISE_TIME = DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)

LOCK_HEARTBEAT_S = 10.0
LOCK_STALE_AFTER_S = 60.0

_metadata = MetaData()
_locks = Table(
    "tuner_locks",
    _metadata,
    Column("name", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("token", String(64), nullable=False),
    Column("acquired_at", PRECISE_TIME, nullable=False),
    Column("heartbeat_at", PRECISE_TIME, nullable=False),
)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, since when, and when it last said it is alive (UTC)."""

    name: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime

    def describe(self) -> str:
        since = self.acquired_at.replace(tzinfo=timezone.utc).astimezone()
        return f"pid {self.pid} on {self.host} since {since:%Y-%m-%d %H:%M:%S %Z}"


class LockHeld(StoreError):
    """The lock is held by a live holder."""

    def __init__(self, holder: LockHolder) -> None:
        super().__init__(f"{holder.name!r} is held by {holder.describe()}")
        self.holder = holder


def _now() -> datetime:
    # Naive UTC: DateTime columns store no zone on SQLite.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _engine(store: Any) -> sqlalchemy.Engine:
    engine = getattr(store, "engine", store)
    if not isinstance(engine, sqlalchemy.Engine):
        raise TypeError(
            f"expected an RDBStorage or a SQLAlchemy engine, got {type(store).__name__}"
        )
    return engine


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # A zombie has exited; only its parent has not collected it yet.
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _ensure_table(engine: sqlalchemy.Engine) -> None:
    try:
        _metadata.create_all(engine, checkfirst=True)
    except sqlalchemy.exc.SQLAlchemyError:
        # Another process may have created it between the check and the CREATE.
        if not sqlalchemy.inspect(engine).has_table("tuner_locks"):
            raise


def read_lock(store: Any, name: str) -> LockHolder | None:
    """The holder of lock ``name``, or None when nobody holds it."""
    engine = _engine(store)
    if not sqlalchemy.inspect(engine).has_table("tuner_locks"):
        return None
    with engine.connect() as conn:
        row = conn.execute(sqlalchemy.select(_locks).where(_locks.c.name == name)).first()
    if row is None:
        return None
    return LockHolder(
        name=row.name,
        host=row.host,
        pid=int(row.pid),
        acquired_at=row.acquired_at,
        heartbeat_at=row.heartbeat_at,
    )


class StoreLock:
    """A held lock; refreshes its heartbeat until :meth:`release`. Use as a context manager."""

    def __init__(
        self,
        engine: sqlalchemy.Engine,
        name: str,
        token: str,
        heartbeat_s: float,
        taken_over: LockHolder | None,
    ) -> None:
        self.name = name
        self.taken_over = taken_over
        self._engine = engine
        self._token = token
        self._heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lock-{name}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """True when another holder took the lock over (our heartbeat stalled too long)."""
        return self._lost.is_set()

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                with self._engine.begin() as conn:
                    updated = conn.execute(
                        _locks.update()
                        .where(_locks.c.name == self.name, _locks.c.token == self._token)
                        .values(heartbeat_at=_now())
                    ).rowcount
            except sqlalchemy.exc.SQLAlchemyError:
                continue  # the store may be back before the lock goes stale
            if updated == 0:
                self._lost.set()
                return

    def release(self) -> None:
        """Stop the heartbeat and delete the row (only if it is still ours)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    _locks.delete().where(_locks.c.name == self.name, _locks.c.token == self._token)
                )
        except sqlalchemy.exc.SQLAlchemyError:
            pass  # the row goes stale and the next holder takes it over

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lock(
    store: Any,
    name: str,
    *,
    heartbeat_s: float = LOCK_HEARTBEAT_S,
    stale_after_s: float = LOCK_STALE_AFTER_S,
) -> StoreLock:
    """Take lock ``name`` in the store, or raise :class:`LockHeld` at once.

    Args:
        store: an Optuna ``RDBStorage`` (its engine is used) or a SQLAlchemy engine.
        name: what the lock guards, e.g. ``nightly:digits-mlp-2025-01-31``.
        heartbeat_s: how often the holder refreshes its heartbeat.
        stale_after_s: a holder silent for longer is taken to be dead.

    Raises:
        LockHeld: a live holder has it; the message names its host, pid and since when.
        StoreError: the store cannot be reached.
    """
    engine = _engine(store)
    host, pid, token = socket.gethostname(), os.getpid(), uuid.uuid4().hex
    try:
        _ensure_table(engine)
        now = _now()
        try:
            with engine.begin() as conn:
                conn.execute(
                    _locks.insert().values(
                        name=name,
                        host=host,
                        pid=pid,
                        token=token,
                        acquired_at=now,
                        heartbeat_at=now,
                    )
                )
            return StoreLock(engine, name, token, heartbeat_s, None)
        except sqlalchemy.exc.IntegrityError:
            pass
        with engine.connect() as conn:
            row = conn.execute(sqlalchemy.select(_locks).where(_locks.c.name == name)).first()
        if row is None:  # released in between: try once more from the top
            return acquire_lock(store, name, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s)
        holder = LockHolder(row.name, row.host, int(row.pid), row.acquired_at, row.heartbeat_at)
        silent = now - holder.heartbeat_at > timedelta(seconds=stale_after_s)
        dead_here = holder.host == host and not _pid_alive(holder.pid)
        if not (silent or dead_here):
            raise LockHeld(holder)
        with engine.begin() as conn:
            now = _now()
            updated = conn.execute(
                _locks.update()
                .where(_locks.c.name == name, _locks.c.token == row.token)
                .values(host=host, pid=pid, token=token, acquired_at=now, heartbeat_at=now)
            ).rowcount
        if updated != 1:
            current = read_lock(engine, name)
            if current is None:
                return acquire_lock(
                    store, name, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s
                )
            raise LockHeld(current)
        return StoreLock(engine, name, token, heartbeat_s, holder)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"cannot take lock {name!r} in the study store: {reason[0] if reason else exc}"
        ) from exc

"""A short mutual exclusion around "count the trials, then start one".

Workers check the budget and create a trial under this lock, so any number of
workers and drivers on one study stop at exactly the budget and never start a
trial that would exceed it. SQLite stores are files on one machine: an advisory
file lock next to the database serializes local processes. PostgreSQL and MySQL
use the server's advisory locks, which the server drops if the holder dies.

A worker waits for the lock at most ``TUNER_BUDGET_LOCK_S`` seconds (60 by default):
a holder cut off from the server can keep its session, and so the lock, until the
server's TCP keepalives notice, which can take hours. A wait past it is one clear
:class:`StoreError`, not a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._env import seconds_from_env
from ._errors import StoreError
from ._url import MYSQL, mask_url

WAIT_VAR = "TUNER_BUDGET_LOCK_S"
WAIT_S = 60.0


def _key(study_id: int) -> int:
    digest = hashlib.blake2b(f"tuner-budget-{study_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_name(database: str | None, study_id: int) -> str:
    # MySQL's named locks are the server's, not a database's: the name says which
    # database's study it guards (hashed: names hold at most 64 characters).
    digest = hashlib.blake2b(f"{database}/{study_id}".encode(), digest_size=12).hexdigest()
    return f"tuner-budget-{digest}"


@contextlib.contextmanager
def budget_lock(storage: Any, study_id: int) -> Iterator[Any]:
    """Hold the study's budget lock for the duration of the block.

    Yields the database connection that holds the lock (or None), for queries that
    belong under it.
    """
    engine = getattr(storage, "engine", None)
    if engine is None:
        yield None
        return
    dialect = engine.dialect.name
    if dialect == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield None
            return
        import fcntl

        path = Path(database).with_name(Path(database).name + ".tuner-lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    import sqlalchemy

    key = _key(study_id)
    wait = seconds_from_env(WAIT_VAR, WAIT_S, minimum=0.001)
    with engine.connect() as conn:
        if dialect == "postgresql":
            # SET LOCAL ends with this transaction; the session's advisory lock does not.
            conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = {int(wait * 1000)}"))
            timed_out = False
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            except sqlalchemy.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                timed_out = True
            if timed_out:  # raised here, so no database error rides along as its context
                raise _held_too_long(engine, study_id, wait)
            unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
        elif dialect in MYSQL:
            name = _lock_name(engine.url.database, study_id)
            # MariaDB waits fractions of a second; MySQL rounds the wait to whole seconds.
            seconds = wait if engine.dialect.is_mariadb else max(1, math.ceil(wait))
            got = conn.execute(
                sqlalchemy.text("SELECT GET_LOCK(:k, :s)"), {"k": name, "s": seconds}
            ).scalar()
            if got != 1:
                raise _held_too_long(engine, study_id, wait)
            unlock = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
        else:
            unlock = None
        conn.commit()
        try:
            yield conn
        finally:
            if unlock is not None:
                conn.execute(unlock, {"k": key if dialect == "postgresql" else name})
                conn.commit()


def _held_too_long(engine: Any, study_id: int, wait: float) -> StoreError:
    url = mask_url(engine.url.render_as_string(hide_password=False))
    return StoreError(
        f"study {study_id} on {url}: its budget lock was held by another worker for more "
        f"than {wait:g} s ({WAIT_VAR}); that worker may be cut off from the database"
    )

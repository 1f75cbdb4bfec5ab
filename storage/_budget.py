"""A short mutual exclusion around "count the trials, then start one".

Workers check the budget and create a trial under this lock, so any number of
workers and drivers on one study stop at exactly the budget and never start a
trial that would exceed it. SQLite stores are files on one machine: an advisory
file lock next to the database serializes local processes. PostgreSQL and MySQL
use the server's advisory locks, which the server drops if the holder dies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _key(study_id: int) -> int:
    digest = hashlib.blake2b(f"tuner-budget-{study_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
        elif dialect in ("mysql", "mariadb"):
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 60)"), {"k": str(key)})
            unlock = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
        else:
            unlock = None
        conn.commit()
        try:
            yield conn
        finally:
            if unlock is not None:
                conn.execute(unlock, {"k": key if dialect == "postgresql" else str(key)})
                conn.commit()

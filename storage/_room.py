"""How many more connections a database server (PostgreSQL, MySQL) would take from this
user, before a run.

Every worker holds a pool and a heartbeat connection; a server whose ``max_connections``
(or the role's or database's ``CONNECTION LIMIT``) is nearly used up refuses the workers
that come last, and they wait out the retry window before giving up. The driver looks
first and says so in one line, while there is still time to run fewer workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy

from ._url import MYSQL

# Connections a worker holds while it trains (its pool and its heartbeats), as measured
# on PostgreSQL; a busy worker may hold up to five.
PER_WORKER = 2

# Another user's session shows a NULL backend_type to a role without pg_read_all_stats;
# its user and database still show, which background processes lack. The limits count
# client sessions, as the server does; a role's limit applies to the login role.
_CLIENT = (
    "(backend_type = 'client backend' "
    "OR (backend_type IS NULL AND usesysid IS NOT NULL AND datid IS NOT NULL))"
)
_QUERY = f"""
SELECT
    current_setting('max_connections')::int,
    current_setting('superuser_reserved_connections')::int
        + coalesce(current_setting('reserved_connections', true)::int, 0),
    (SELECT count(*) FROM pg_stat_activity WHERE {_CLIENT}),
    r.rolsuper,
    r.rolconnlimit,
    (SELECT count(*) FROM pg_stat_activity WHERE usename = session_user AND {_CLIENT}),
    d.datconnlimit,
    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {_CLIENT})
FROM pg_roles r, pg_database d
WHERE r.rolname = session_user AND d.datname = current_database()
"""


# MySQL and MariaDB: the server's limit and the connections open now; the session's
# max_user_connections is the account's own limit where it has one (else the server's,
# 0 for none), and the processlist shows at least this user's own connections.
_MYSQL_QUERY = """
SELECT
    @@GLOBAL.max_connections,
    @@max_user_connections,
    (SELECT count(*) FROM information_schema.processlist
     WHERE user = substring_index(current_user(), '@', 1))
"""


@dataclass(frozen=True)
class Room:
    """Connections the server would still take, and the limit that leaves the fewest."""

    free: int
    limit: str  # e.g. "max_connections 100"


def connection_room(storage: Any) -> Room | None:
    """The room left on the database server behind ``storage``; None for SQLite, or when
    the server does not say (the check is advice, never a failure).

    On PostgreSQL, a superuser is held only to ``max_connections`` (with the slots
    reserved for superusers); others also to their role's and the database's connection
    limits. On MySQL, every user is held to ``max_connections`` and to the account's
    ``max_user_connections``.
    """
    engine = getattr(storage, "engine", None)
    if engine is None:
        return None
    if engine.dialect.name in MYSQL:
        return _mysql_room(engine)
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(_QUERY).one_or_none()
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    if row is None:
        return None
    most, reserved, used, superuser, role_limit, role_used, db_limit, db_used = row
    usable = int(most) if superuser else int(most) - int(reserved)
    rooms = [Room(usable - int(used), f"max_connections {int(most)}")]
    if not superuser:
        if role_limit is not None and role_limit >= 0:
            rooms.append(Room(role_limit - int(role_used), f"the role's limit {role_limit}"))
        if db_limit is not None and db_limit >= 0:
            rooms.append(Room(db_limit - int(db_used), f"the database's limit {db_limit}"))
    return min(rooms, key=lambda room: room.free)


def _mysql_room(engine: sqlalchemy.engine.Engine) -> Room | None:
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(_MYSQL_QUERY).one_or_none()
            status = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Threads_connected'").first()
    except sqlalchemy.exc.SQLAlchemyError:
        return None
    if row is None or status is None:
        return None
    most, user_limit, user_used = (int(x) for x in row)
    rooms = [Room(most - int(status[1]), f"max_connections {most}")]
    if user_limit > 0:
        rooms.append(Room(user_limit - user_used, f"the user's limit {user_limit}"))
    return min(rooms, key=lambda room: room.free)


def room_warning(room: Room | None, workers: int) -> str | None:
    """One line when ``workers`` would need more connections than ``room`` has, else None."""
    if room is None:
        return None
    need = workers * PER_WORKER
    if need <= room.free:
        return None
    free = room.free
    takes = (
        "no more connections" if free <= 0 else f"{free} more connection{'s' if free != 1 else ''}"
    )
    return (
        f"the database server takes {takes} ({room.limit}) and {workers} "
        f"worker{'s' if workers != 1 else ''} need about {need}; workers it refuses wait, "
        "then stop: run fewer workers, or raise the limit"
    )

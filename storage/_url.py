"""Storage URLs: where they come from, how they are shown."""

from __future__ import annotations

import os
import re

import sqlalchemy.engine
import sqlalchemy.exc

from ._errors import StoreError

ENV_VAR = "TUNER_STORAGE"
DEFAULT_URL = "sqlite:///tuner.db"

# SQLAlchemy's dialect names for MySQL and MariaDB, which tuner treats alike.
MYSQL = ("mysql", "mariadb")
_SUPPORTED = ("sqlite", "postgresql", *MYSQL)
# Catches `scheme://user:secret@host` even where SQLAlchemy cannot parse the rest.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<tail>@)")


def resolve_url(explicit: str | None = None, spec_url: str | None = None) -> str:
    """Pick the storage URL: the command line, else the spec, else the environment, else a file."""
    for candidate in (explicit, spec_url, os.environ.get(ENV_VAR)):
        if candidate:
            return candidate
    return DEFAULT_URL


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (from this process's folder), so
    that workers started elsewhere (Ray actors, a Ray job) open the same file."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url  # check_url says what is wrong with it
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return url
    if database.startswith("file:") or os.path.isabs(database):
        return url
    return parsed.set(database=os.path.abspath(database)).render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``.

    Works on URLs SQLAlchemy cannot parse too, so a malformed URL can be shown safely.
    """
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _USERINFO.sub(lambda m: f"{m['head']}***{m['tail']}", url)


def check_url(url: str) -> sqlalchemy.engine.URL:
    """Parse ``url`` or raise one clear line naming it (masked) and what would be right."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise StoreError(
            f"storage URL {mask_url(url)!r} is malformed; expected e.g. "
            "'sqlite:///tuner.db' or 'postgresql+psycopg://user:password@host:5432/db'"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in _SUPPORTED:
        raise StoreError(
            f"storage URL {mask_url(url)!r} uses {backend!r}; "
            f"expected one of {', '.join(_SUPPORTED)}"
        )
    return parsed

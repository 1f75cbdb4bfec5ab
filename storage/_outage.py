"""Riding out a study store that went away for a while: a restart, a failover, a network cut.

A call that fails because the database cannot be reached is tried again, with backoff,
for a window (60 s by default, ``TUNER_STORE_RETRY_S``); past it, :class:`StoreUnavailable`.
Only the outermost call retries: a store method that calls others is retried as a whole,
and a block that must stay atomic (the budget check and the trial it creates) is wrapped
as one call, so nothing is half-done on a connection that was lost in between.

Outages are told to listeners once per store and process: one "unreachable" and one
"back" (:func:`add_listener`). With no listener they go to the ``tuner.storage`` logger at
INFO, which prints nothing unless asked, so workers stay quiet and the driver speaks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy.exc

from ._env import seconds_from_env
from ._errors import StoreError
from ._url import mask_url

WINDOW_VAR = "TUNER_STORE_RETRY_S"
WINDOW_S = 60.0
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0

_T = TypeVar("_T")
_log = logging.getLogger("tuner.storage")
_local = threading.local()
_lock = threading.Lock()
_down_since: dict[str, float] = {}
_listeners: list[Callable[[str], None]] = []

# SQLSTATE classes and MySQL codes that look like connection errors but are not outages:
# a wrong password, a database that does not exist or a command the user may not run
# stays wrong however long one waits.
_NOT_OUTAGE_SQLSTATE = ("28", "3D")
_NOT_OUTAGE_MYSQL = (1044, 1045, 1049, 1142, 1143, 1227)
# The same refusals at connect time, where drivers give only the server's message.
_NOT_OUTAGE_WORDS = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "access denied",
    "unknown database",
)


class StoreUnavailable(StoreError):
    """The study store could not be reached for the whole retry window."""


def retry_window_s() -> float:
    """The retry window in seconds (``$TUNER_STORE_RETRY_S``, else 60; 0 turns retries off)."""
    return seconds_from_env(WINDOW_VAR, WINDOW_S, minimum=0)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the database cannot be reached."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable | sqlalchemy.exc.DisconnectionError):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError):
            if current.connection_invalidated:
                return True
            if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
                return not _lasting(current.orig)
        current = current.__cause__ or current.__context__
    return False


def _lasting(orig: BaseException | None) -> bool:
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_NOT_OUTAGE_SQLSTATE):
        return True
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    if args and args[0] in _NOT_OUTAGE_MYSQL:
        return True
    text = str(orig).lower()
    return any(words in text for words in _NOT_OUTAGE_WORDS)


# A server that is up but has no connection left says so in these words (PostgreSQL's
# max_connections and per-role or per-database limits; MySQL's max_connections and
# max_user_connections). Waiting can help, as other clients leave, but the cure is
# usually the number of workers.
_FULL_WORDS = (
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
    "max_user_connections",
)
FULL_HINT = "the server takes no more connections: run fewer workers, or raise its connection limit"


def reason_of(exc: BaseException, url: Any = None) -> str:
    """The database's own words on why ``exc`` happened, in one line.

    The line that says FATAL or ERROR when the driver gives several; with what to do when
    the server is out of connections; with the password of ``url`` (a URL string or
    object), if any, masked.
    """
    current: BaseException | None = exc
    while current is not None:
        orig = getattr(current, "orig", None)
        if orig is not None:
            current = orig
            break
        if current.__cause__ is None:
            break
        current = current.__cause__
    text = str(current).strip() if current is not None else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = next((line for line in lines if "FATAL" in line or "ERROR" in line), None)
    reason = said or (lines[0] if lines else type(exc).__name__)
    if any(words in text.lower() for words in _FULL_WORDS):
        reason = f"{reason} ({FULL_HINT})"
    password = sqlalchemy.engine.make_url(url).password if url is not None else None
    if password:
        reason = reason.replace(str(password), "***")
    return reason


def add_listener(listener: Callable[[str], None]) -> Callable[[], None]:
    """Tell ``listener`` each outage message (one line); returns a function that removes it."""
    with _lock:
        _listeners.append(listener)

    def remove() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


def _tell(message: str) -> None:
    with _lock:
        listeners = list(_listeners)
    if not listeners:
        _log.info(message)
    for listener in listeners:
        listener(message)


def _went_away(url: str, exc: BaseException, window: float, reason: str) -> None:
    with _lock:
        if url in _down_since:
            return
        _down_since[url] = time.monotonic()
    _tell(f"study store {url!r} unreachable ({reason}); retrying for up to {window:g} s")


def _came_back(url: str) -> None:
    with _lock:
        since = _down_since.pop(url, None)
    if since is not None:
        _tell(f"study store {url!r} is back after {time.monotonic() - since:.1f} s")


@contextmanager
def _outermost() -> Iterator[bool]:
    outer = not getattr(_local, "riding", False)
    _local.riding = True
    try:
        yield outer
    finally:
        if outer:
            _local.riding = False


def ride_out(call: Callable[[], _T], storage: Any) -> _T:
    """``call()``, retried while ``storage`` (from ``open_storage``) is unreachable.

    Stores on a server ride out an outage for the retry window (readers: none, an
    outage is reported at once); SQLite files call straight through.

    Raises:
        StoreUnavailable: still unreachable when the window closed.
    """
    if not getattr(storage, "rides_outages", False):
        return call()
    return ride_url(call, storage.url, storage.outage_window_s)


def ride_url(call: Callable[[], _T], url: str, window: float | None = None) -> _T:
    """``call()``, retried while the store at ``url`` is unreachable, for ``window`` seconds
    (None: :func:`retry_window_s`; 0: no retry, an outage raises at once).

    Raises:
        StoreUnavailable: still unreachable when the window closed (the message names the
            masked URL, the window and the database's last word).
    """
    masked = mask_url(url)
    with _outermost() as outer:
        if not outer:
            return call()
        limit = retry_window_s() if window is None else window
        deadline: float | None = None
        delay = FIRST_DELAY_S
        while True:
            try:
                result = call()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if limit <= 0:
                    if isinstance(exc, StoreUnavailable):
                        raise
                    raise StoreUnavailable(
                        f"study store {masked!r} unreachable: {reason_of(exc, url)}"
                    ) from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + limit
                    _went_away(masked, exc, limit, reason_of(exc, url))
                if now >= deadline:
                    raise StoreUnavailable(
                        f"study store {masked!r} unreachable for {limit:g} s: {reason_of(exc, url)}"
                    ) from exc
                time.sleep(min(delay, deadline - now))
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            _came_back(masked)
            return result

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy

from tuner.storage._locks import LockHeld, acquire_lock, read_lock


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def store(request: pytest.FixtureRequest):
    url = (
        request.getfixturevalue("sqlite_url")
        if request.param == "sqlite"
        else request.getfixturevalue(f"{request.param}_url")
    )
    # The lock table needs no study tables: a bare engine on the same database will do.
    engine = sqlalchemy.create_engine(url)
    yield engine
    engine.dispose()


def _plant(store, name: str, host: str, pid: int, heartbeat_age_s: float) -> None:
    """A lock row as another holder would have left it."""
    from tuner.storage._locks import _ensure_table

    _ensure_table(store)
    stamp = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=heartbeat_age_s)
    with store.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO tuner_locks (name, host, pid, token, acquired_at, heartbeat_at) "
                "VALUES (:n, :h, :p, 'planted', :t, :t)"
            ),
            {"n": name, "h": host, "p": pid, "t": stamp},
        )


def test_second_holder_is_refused_with_who_holds_it(store) -> None:
    lock = acquire_lock(store, "nightly:a")
    with pytest.raises(LockHeld) as caught:
        acquire_lock(store, "nightly:a")
    message = str(caught.value)
    assert f"pid {os.getpid()}" in message and "since" in message
    assert "\n" not in message
    other = acquire_lock(store, "nightly:b")  # another name is independent
    other.release()
    lock.release()
    assert read_lock(store, "nightly:a") is None
    acquire_lock(store, "nightly:a").release()


def test_only_one_of_many_racing_takers_wins(store) -> None:
    winners: list[object] = []
    refused: list[str] = []
    start = threading.Barrier(6)

    def take() -> None:
        start.wait()
        try:
            winners.append(acquire_lock(store, "nightly:race"))
        except LockHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(refused) == 5
    winners[0].release()  # type: ignore[attr-defined]


def test_silent_holder_elsewhere_is_taken_over_live_one_is_not(store) -> None:
    _plant(store, "nightly:old", "build-box-7", 4242, heartbeat_age_s=600)
    lock = acquire_lock(store, "nightly:old", stale_after_s=60)
    assert lock.taken_over is not None and lock.taken_over.host == "build-box-7"
    holder = read_lock(store, "nightly:old")
    assert holder is not None and holder.pid == os.getpid()
    lock.release()

    _plant(store, "nightly:fresh", "build-box-7", 4242, heartbeat_age_s=1)
    with pytest.raises(LockHeld, match="pid 4242 on build-box-7"):
        acquire_lock(store, "nightly:fresh", stale_after_s=60)


def test_dead_process_on_this_host_is_taken_over_at_once(store) -> None:
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _plant(store, "nightly:crashed", socket.gethostname(), gone.pid, heartbeat_age_s=0)
    lock = acquire_lock(store, "nightly:crashed", stale_after_s=3600)
    assert lock.taken_over is not None and lock.taken_over.pid == gone.pid
    lock.release()


def test_heartbeat_moves_while_held_and_a_lost_lock_is_noticed(store) -> None:
    lock = acquire_lock(store, "nightly:beat", heartbeat_s=0.2)
    first = read_lock(store, "nightly:beat")
    assert first is not None
    deadline = time.time() + 20
    while time.time() < deadline:
        now = read_lock(store, "nightly:beat")
        if now is not None and now.heartbeat_at > first.heartbeat_at:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the heartbeat never moved")
    # Someone else takes the row over (as after a long stall): the holder notices.
    with store.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE tuner_locks SET token = 'thief' WHERE name = 'nightly:beat'")
        )
    while time.time() < deadline and not lock.lost:
        time.sleep(0.1)
    assert lock.lost
    lock.release()
    assert read_lock(store, "nightly:beat") is not None, (
        "release never deletes another holder's row"
    )

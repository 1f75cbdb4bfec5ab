"""A server's store (PostgreSQL, MySQL) that goes away for a while: writers wait, readers
say so at once.

The outage is real: a TCP proxy in front of the test server closes every connection and
refuses new ones (what a server restart looks like to its clients).
"""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
import sqlalchemy

from tuner.storage import StoreError, StoreUnavailable, open_storage, read_records
from tuner.storage._outage import add_listener


@pytest.fixture
def told() -> Any:
    messages: list[str] = []
    remove = add_listener(messages.append)
    yield messages
    remove()


def test_a_short_outage_is_ridden_out_and_told_once(server_proxy: Any, told: list[str]) -> None:
    url = server_proxy.secret_url
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="blip")
    trial = study.ask()
    server_proxy.outage(3.0)
    started = time.monotonic()
    # Writes wait for the store, then land.
    storage.set_trial_user_attr(trial._trial_id, "epoch", 1)
    study.tell(trial, 0.5)
    waited = time.monotonic() - started
    assert waited >= 2.5
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]
    assert study.trials[0].user_attrs == {"epoch": 1}
    assert len(told) == 2, told
    assert "unreachable" in told[0] and "retrying for up to 60 s" in told[0]
    assert "is back after" in told[1]
    assert not any("s3cret-pw" in m for m in told)
    storage.engine.dispose()


def test_an_outage_past_the_window_raises_store_unavailable(
    server_proxy: Any, told: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNER_STORE_RETRY_S", "2")
    storage = open_storage(server_proxy.secret_url)
    optuna.create_study(storage=storage, study_name="down")
    server_proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        storage.get_all_studies()
    assert 1.5 <= time.monotonic() - started < 15
    message = str(raised.value)
    assert "unreachable for 2 s" in message and "s3cret-pw" not in message
    assert "\n" not in message
    server_proxy.restore()
    assert [s.study_name for s in storage.get_all_studies()] == ["down"]
    storage.engine.dispose()


def test_readers_report_an_outage_at_once(server_proxy: Any) -> None:
    writer = open_storage(server_proxy.direct_url)
    optuna.create_study(storage=writer, study_name="seen")
    writer.engine.dispose()
    reader = open_storage(server_proxy.proxied_url, read_only=True, heartbeat=False)
    assert read_records(reader, "seen") == []
    server_proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        read_records(reader, "seen")
    assert time.monotonic() - started < 5
    server_proxy.restore()
    assert read_records(reader, "seen") == []
    reader.engine.dispose()


def test_a_server_that_is_down_when_a_writer_opens_is_waited_for(
    server_proxy: Any, told: list[str]
) -> None:
    server_proxy.outage(2.0)
    storage = open_storage(server_proxy.proxied_url)
    assert storage.get_all_studies() == []
    assert len(told) == 2 and "is back" in told[1]
    storage.engine.dispose()


def test_a_missing_database_is_not_waited_for(server_url: str) -> None:
    # A wrong database name stays wrong: one clear error now, not a minute of retries.
    missing = sqlalchemy.engine.make_url(server_url).set(database="no_such_db_here")
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        open_storage(missing.render_as_string(hide_password=False))
    assert not isinstance(raised.value, StoreUnavailable)
    assert "no_such_db_here" in str(raised.value)
    assert time.monotonic() - started < 10


@pytest.mark.mysql
def test_a_wrong_password_is_not_waited_for_and_never_shown(mysql_secret_url: str) -> None:
    wrong = sqlalchemy.engine.make_url(mysql_secret_url).set(password="not-the-pw")
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        open_storage(wrong.render_as_string(hide_password=False))
    assert not isinstance(raised.value, StoreUnavailable)
    message = str(raised.value)
    assert "Access denied" in message and "not-the-pw" not in message and "\n" not in message
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_a_reader_whose_connection_sat_idle_reads_again(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection idle for a while is pinged when it is checked out; the ping must not
    # leave it inside a transaction, where the dashboard's snapshot read cannot set its
    # isolation level (every page failed once its connection had sat idle 2 s).
    import tuner.storage._rdb as rdb
    from tuner.storage import read_studies

    url = request.getfixturevalue(f"{server}_url")
    writer = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="idle", storage=writer)
    study.add_trial(optuna.trial.create_trial(value=1.0))
    writer.engine.dispose()
    reader = open_storage(url, read_only=True, heartbeat=False)
    try:
        assert [s.name for s in read_studies(reader)] == ["idle"]
        monkeypatch.setattr(rdb, "PING_AFTER_IDLE_S", 0.0)  # every checkout pings
        for _ in range(3):
            assert [s.name for s in read_studies(reader)] == ["idle"]
            assert [r.state for r in read_records(reader, "idle")] == ["COMPLETE"]
    finally:
        reader.engine.dispose()


def test_a_model_kept_in_the_store_during_an_outage_waits_for_it(
    server_proxy: Any, told: list[str]
) -> None:
    import io

    from tuner.storage._blobs import StoreArtifacts
    from tuner.storage._outage import ride_out

    storage = open_storage(server_proxy.secret_url, heartbeat=False)
    blobs = StoreArtifacts(storage, "blip")
    blobs.create_table()
    model = b"\x00\x01" * 50_000
    server_proxy.outage(2.0)
    started = time.monotonic()
    # What a trial does with its model: the write waits for the store, then lands once.
    ride_out(
        lambda: blobs.write("0b7e0d1c-3c5e-4f59-a8b1-6a0f1f4f9c11", io.BytesIO(model)), storage
    )
    assert time.monotonic() - started >= 1.5
    assert blobs.read("0b7e0d1c-3c5e-4f59-a8b1-6a0f1f4f9c11") == model
    assert blobs.count_study("blip") == (1, len(model))
    assert len(told) == 2 and "is back after" in told[1], told
    storage.engine.dispose()

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.storage import open_storage
from tuner.storage._rdb import set_trial_user_attrs


def _fill(storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(
        study_name="frozen", storage=storage, directions=["maximize", "minimize"]
    )
    dists = {
        "lr": FloatDistribution(1e-4, 0.3, log=True),
        "batch_size": CategoricalDistribution([32, 64, None]),
        "layers": IntDistribution(1, 4),
    }
    study.add_trial(
        create_trial(
            values=[0.9, float("inf")],
            params={"lr": 0.01, "batch_size": None, "layers": 3},
            distributions=dists,
            user_attrs={"curve": [0.5, 0.8], "feasible": True},
            system_attrs={"constraints": [0.0]},
            intermediate_values={0: 0.5, 1: float("-inf"), 2: float("nan")},
        )
    )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"error": "boom"}))
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED, params={"layers": 1}, distributions={"layers": dists["layers"]}
        )
    )
    running = study.ask({"lr": dists["lr"]})
    running.set_user_attr("note", {"nested": [1, 2]})
    study.enqueue_trial({"layers": 2})
    return study


def _same(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> None:
    # FrozenTrial's == compares every field but treats NaN as unequal to itself.
    for field in ("number", "state", "values", "datetime_start", "datetime_complete"):
        assert getattr(a, field) == getattr(b, field), field
    for field in ("params", "distributions", "user_attrs", "system_attrs"):
        assert getattr(a, field) == getattr(b, field), field
    assert a._trial_id == b._trial_id
    assert repr(a.intermediate_values) == repr(b.intermediate_values)


@pytest.mark.parametrize("store", ["sqlite", "postgres", "mysql"])
def test_reads_match_optunas_own(
    store: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url if store == "sqlite" else request.getfixturevalue(f"{store}_url")
    fast = open_storage(url, heartbeat=False)
    study = _fill(fast)
    plain = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    sid = study._study_id

    ours = fast.get_all_trials(sid, deepcopy=False)
    theirs = plain.get_all_trials(sid, deepcopy=False)
    assert [t.state for t in ours] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.RUNNING,
        TrialState.WAITING,
    ]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        _same(a, b)
        _same(fast.get_trial(a._trial_id), b)

    waiting = fast.get_all_trials(sid, states=(TrialState.WAITING,))
    assert [t.number for t in waiting] == [4]
    newer = fast._get_trials(sid, None, {ours[0]._trial_id}, ours[2]._trial_id)
    assert [t.number for t in newer] == [0, 3, 4]

    with pytest.raises(KeyError):
        fast.get_trial(10_000)
    with pytest.raises(KeyError):
        fast.get_all_trials(10_000)


@pytest.mark.parametrize("store", ["sqlite", "postgres", "mysql"])
def test_param_writes_check_what_optuna_checks(
    store: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    if store != "sqlite":
        sqlite_url = request.getfixturevalue(f"{store}_url")
    storage = open_storage(sqlite_url, heartbeat=False)
    study = optuna.create_study(study_name="params", storage=storage)
    trial = study.ask()
    assert trial.suggest_float("x", 0.0, 1.0) == trial.params["x"]
    study.tell(trial, 1.0)

    # Another process (no cached distribution) suggests x over another kind of range.
    other = optuna.load_study(
        study_name="params", storage=open_storage(sqlite_url, heartbeat=False)
    )
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        other.ask().suggest_categorical("x", ["a", "b"])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_param(trial._trial_id, "y", 0.5, FloatDistribution(0.0, 1.0))
    # Through Optuna's cache, which knows x's distribution already (the one-statement path).
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study._storage.set_trial_param(trial._trial_id, "x", 0.5, FloatDistribution(0.0, 1.0))
    second = study.ask()
    assert second.suggest_float("x", 0.0, 1.0) == study.trials[2].params["x"]
    assert optuna.load_study(study_name="params", storage=sqlite_url).trials[0].params == {
        "x": trial.params["x"]
    }
    assert len(optuna.load_study(study_name="params", storage=sqlite_url).trials) == 3


@pytest.mark.parametrize("store", ["sqlite", "postgres", "mysql"])
def test_finishing_a_trial_reads_back_in_plain_optuna(
    store: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url if store == "sqlite" else request.getfixturevalue(f"{store}_url")
    with _time_zone("Asia/Kolkata"):  # away from UTC, so mixed-up zones would show
        _finish_and_read(url)


@contextlib.contextmanager
def _time_zone(name: str) -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def _finish_and_read(url: str) -> None:
    fast = open_storage(url, heartbeat=False)
    study = optuna.create_study(
        study_name="finish", storage=fast, directions=["maximize", "minimize"]
    )
    done = study.ask()
    done.suggest_float("x", 0.0, 1.0)
    study.tell(done, [0.5, float("inf")])
    stopped = study.ask()
    study.tell(stopped, state=TrialState.PRUNED)
    study.enqueue_trial({"x": 0.25})
    claimed = study.ask()
    assert claimed.suggest_float("x", 0.0, 1.0) == 0.25
    study.tell(claimed, [0.7, 3.0])

    plain = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    trials = plain.get_all_trials(study._study_id)
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    assert trials[0].values == [0.5, float("inf")]
    assert trials[1].values is None
    assert trials[2].values == [0.7, 3.0]
    for t in trials:
        assert t.datetime_start is not None and t.datetime_complete is not None
        assert 0 <= (t.datetime_complete - t.datetime_start).total_seconds() < 60

    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        fast.set_trial_state_values(done._trial_id, TrialState.FAIL)
    with pytest.raises(KeyError):
        fast.set_trial_state_values(10_000, TrialState.FAIL)
    assert plain.get_trial(done._trial_id).state == TrialState.COMPLETE


def test_connections_the_server_dropped_are_replaced_without_an_error(postgres_url: str) -> None:
    import sqlalchemy

    storage = open_storage(postgres_url, heartbeat=False)
    study = optuna.create_study(study_name="dropped", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    database = sqlalchemy.engine.make_url(postgres_url).database
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        pids = (
            conn.execute(
                sqlalchemy.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
            .scalars()
            .all()
        )
        assert pids, "the storage held a connection"
        for pid in pids:
            conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The server has ended those sessions once their processes are gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = conn.execute(
                sqlalchemy.text("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": pids},
            ).scalar()
            if not alive:
                break
            time.sleep(0.05)
    admin.dispose()
    # Right away, well inside the idle time after which connections are pinged; Optuna's
    # own writes first, then tuner's.
    trial.set_user_attr("note", "after the cut")
    study.tell(trial, 1.0)
    assert storage.get_trial(trial._trial_id).values == [1.0]
    assert storage.get_trial(trial._trial_id).user_attrs == {"note": "after the cut"}


@pytest.mark.parametrize("store", ["sqlite", "postgres", "mysql"])
def test_heartbeats_mark_a_silent_trial_stale(
    store: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url if store == "sqlite" else request.getfixturevalue(f"{store}_url")
    storage = open_storage(url)  # heartbeats on
    study = optuna.create_study(study_name="beats", storage=storage)
    beating, silent = study.ask(), study.ask()
    storage.record_heartbeat(beating._trial_id)
    storage.record_heartbeat(silent._trial_id)
    storage.record_heartbeat(beating._trial_id)  # a second beat updates the first
    sid = study._study_id
    assert storage._get_stale_trial_ids(sid) == []
    import sqlalchemy

    with storage.engine.begin() as conn:
        # The silent trial's last beat, as if it were an hour old.
        conn.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :then WHERE trial_id = :tid"),
            {"then": "2000-01-01 00:00:00", "tid": silent._trial_id},
        )
        rows = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats")).scalar()
    assert rows == 2
    assert storage._get_stale_trial_ids(sid) == [silent._trial_id]


@pytest.mark.parametrize("store", ["sqlite", "postgres", "mysql", "in-memory"])
def test_batched_user_attrs_read_back_in_plain_optuna(
    store: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    if store == "in-memory":
        storage: optuna.storages.BaseStorage = optuna.storages.InMemoryStorage()
    else:
        url = sqlite_url if store == "sqlite" else request.getfixturevalue(f"{store}_url")
        storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="attrs", storage=storage)
    trial = study.ask()
    trial.set_user_attr("accuracy", 0.1)
    # Through the cached wrapper a loaded study uses, as the objective writes them.
    set_trial_user_attrs(
        study._storage, trial._trial_id, {"accuracy": 0.9, "curve": [0.5, 0.9], "note": None}
    )
    study.tell(trial, 1.0)
    reader = storage
    if store != "in-memory":
        reader = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    assert reader.get_trial(trial._trial_id).user_attrs == {
        "accuracy": 0.9,
        "curve": [0.5, 0.9],
        "note": None,
    }

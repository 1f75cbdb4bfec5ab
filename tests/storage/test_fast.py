from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.storage import (
    StoreError,
    count_states,
    open_storage,
    read_best_values,
    read_records,
    read_studies,
)
from tuner.storage._readers import read_trial_attr

OBJECTIVES = ["accuracy", "size_bytes", "latency_ms"]


def _fill(url: str) -> None:
    """Two studies with every shape of trial the dashboard meets."""
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(
        study_name="mixed", storage=storage, directions=["maximize", "minimize", "minimize"]
    )
    study.set_metric_names(OBJECTIVES)
    study.set_user_attr("tuner.spec", {"constraints": {"accuracy": {"min": 0.5}}})
    dists = {
        "lr": FloatDistribution(1e-4, 0.3, log=True),
        "batch_size": CategoricalDistribution([32, 64, None]),
        "layers": IntDistribution(1, 4),
        "optimizer": CategoricalDistribution(["sgd", "adamw"]),
        "momentum": FloatDistribution(0.0, 0.99),
    }
    base = dict(lr=0.01, batch_size=64, layers=2, optimizer="sgd", momentum=0.9)
    study.add_trial(
        create_trial(
            values=[0.9, 4096.0, 0.12],
            params=base,
            distributions=dists,
            user_attrs={"curve": [0.5, 0.8, 0.9], "feasible": True, "int8_layers": ["0"]},
        )
    )
    study.add_trial(
        create_trial(
            values=[0.4, float("inf"), 0.05],
            params={"lr": 0.2, "batch_size": None, "layers": 1, "optimizer": "adamw"},
            distributions={k: v for k, v in dists.items() if k != "momentum"},
            user_attrs={"feasible": False, "constraint_violations": [0.1]},
        )
    )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"lr": 0.2, "layers": 1},
            distributions={"lr": dists["lr"], "layers": dists["layers"]},
            user_attrs={"curve": [0.1], "stopped_reason": "below the median"},
        )
    )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"lr": 0.3},
            distributions={"lr": dists["lr"]},
            user_attrs={"error": "RuntimeError: out of memory"},
        )
    )
    # What Optuna records when a worker's heartbeat stops.
    lost = study.ask()
    storage.set_trial_system_attr(lost._trial_id, "fail_reason", "worker lost its heartbeat")
    study.tell(lost, state=TrialState.FAIL)
    study.ask()  # a running trial
    study.add_trial(
        create_trial(
            values=[0.95, 8192.0, 0.2],
            params={**base, "layers": 4},
            distributions=dists,
            user_attrs={"curve": [0.7, 0.95], "feasible": True},
        )
    )
    other = optuna.create_study(study_name="single", storage=storage, direction="minimize")
    other.set_user_attr("tuner.spec_name", "nightly-spec")
    other.add_trial(create_trial(value=3.0, params={}, distributions={}))
    optuna.create_study(study_name="empty", storage=storage)
    storage.engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def filled_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    url = (
        sqlite_url if request.param == "sqlite" else request.getfixturevalue(f"{request.param}_url")
    )
    _fill(url)
    return url


def _plain(url: str) -> optuna.storages.RDBStorage:
    """Optuna's own RDBStorage: the readers take their fallback through Optuna's objects."""
    return optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)


def test_read_records_equals_optunas_objects(filled_url: str) -> None:
    storage = open_storage(filled_url, read_only=True, heartbeat=False)
    plain = _plain(filled_url)
    for name in ("mixed", "single", "empty"):
        fast = read_records(storage, name)
        assert fast == read_records(plain, name)
        assert fast == read_records(optuna.storages._CachedStorage(storage), name)
    records = read_records(storage, "mixed")
    assert [r.state for r in records] == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "FAIL",
        "FAIL",
        "RUNNING",
        "COMPLETE",
    ]
    assert records[1].values["size_bytes"] == math.inf
    assert records[1].params["batch_size"] is None and records[1].feasible is False
    assert records[0].curve == [0.5, 0.8, 0.9] and "curve" not in records[0].metrics
    assert records[3].error == "RuntimeError: out of memory"
    assert records[4].error == "worker lost its heartbeat"
    assert isinstance(records[0].params["layers"], int)
    assert isinstance(records[0].datetime_start, dt.datetime)
    storage.engine.dispose()


def test_read_studies_equals_optunas_objects(filled_url: str) -> None:
    storage = open_storage(filled_url, read_only=True, heartbeat=False)
    fast = {s.name: s for s in read_studies(storage)}
    slow = {s.name: s for s in read_studies(_plain(filled_url))}
    assert fast.keys() == slow.keys() == {"mixed", "single", "empty"}
    for name in fast:
        assert fast[name].objectives == slow[name].objectives
        assert fast[name].counts == slow[name].counts
        assert fast[name].user_attrs == slow[name].user_attrs
        assert fast[name].last_update == slow[name].last_update
    assert fast["mixed"].is_running
    storage.engine.dispose()


def test_best_values_skip_infeasible_and_unfinished(filled_url: str) -> None:
    storage = open_storage(filled_url, read_only=True, heartbeat=False)
    best = read_best_values(storage)
    # The infeasible trial has the lowest latency (0.05); it does not count.
    assert best["mixed"] == {"accuracy": 0.95, "size_bytes": 4096.0, "latency_ms": 0.12}
    assert best["single"] == {"objective_0": 3.0}
    assert best["empty"] == {}
    assert read_best_values(_plain(filled_url)) == best
    storage.engine.dispose()


def test_counts_and_attrs_equal_optunas_objects(filled_url: str) -> None:
    storage = open_storage(filled_url, read_only=True, heartbeat=False)
    plain = _plain(filled_url)
    sid = storage.get_study_id_from_name("mixed")
    counts = {"COMPLETE": 3, "PRUNED": 1, "FAIL": 2, "RUNNING": 1}
    assert count_states(storage, "mixed") == count_states(storage, sid) == counts
    assert count_states(plain, "mixed") == counts
    with storage.engine.connect() as conn:
        assert count_states(storage, sid, conn) == counts
    fast = read_trial_attr(storage, sid, "curve", exclude=0)
    assert sorted(fast) == [(2, [0.1]), (6, [0.7, 0.95])]
    assert sorted(read_trial_attr(plain, sid, "curve", exclude=0)) == sorted(fast)
    cached = optuna.storages._CachedStorage(storage)
    assert sorted(read_trial_attr(cached, sid, "curve", exclude=0)) == sorted(fast)
    storage.engine.dispose()


def test_unknown_study_names_the_known_ones(filled_url: str) -> None:
    storage = open_storage(filled_url, read_only=True, heartbeat=False)
    with pytest.raises(StoreError, match="no study named 'nope'.*empty, mixed, single"):
        read_records(storage, "nope")
    storage.engine.dispose()


def test_read_only_store_is_never_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="does not exist"):
        open_storage(f"sqlite:///{path}", read_only=True, heartbeat=False)
    assert not path.exists()

from __future__ import annotations

from typing import Any

import optuna
import pytest

from tuner.storage import TrialRecord, compare_fronts, compare_studies, open_storage

OBJ = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def _trial(number: int, acc: float, size: float, lat: float, **kw: Any) -> TrialRecord:
    return TrialRecord(
        number=number,
        state=kw.pop("state", "COMPLETE"),
        params={},
        values={"accuracy": acc, "size_bytes": size, "latency_ms": lat},
        metrics={},
        datetime_start=None,
        datetime_complete=None,
        **kw,
    )


def test_studies_compared_on_one_box_and_the_joint_front() -> None:
    # B is better everywhere but at the small end, where A's smallest model is alone.
    a = [_trial(0, 0.80, 10_000, 0.2), _trial(1, 0.90, 50_000, 0.5), _trial(2, 0.85, 60_000, 0.6)]
    b = [_trial(0, 0.85, 20_000, 0.2), _trial(1, 0.95, 50_000, 0.4)]
    b.append(_trial(2, 0.99, 1, 0.1, state="FAIL"))  # failed: not compared
    both = compare_fronts({"a": (OBJ, a), "b": (OBJ, b)})
    assert both.objectives == OBJ and both.left_out == []
    by = {s.name: s for s in both.studies}
    assert [r.number for r in by["a"].front] == [0, 1] and len(by["b"].trials) == 2
    assert by["a"].joint == [0] and sorted(by["b"].joint) == [0, 1]
    assert 0 < by["a"].hypervolume < by["b"].hypervolume < 1
    rows = {r["study"]: r for r in both.rows()}
    assert rows["b"]["on the joint front"] == "2 of 3" and rows["b"]["best accuracy"] == "95.0%"
    # A study set beside itself gets the same share of the box twice.
    same = compare_fronts({"a": (OBJ, a), "a2": (OBJ, a)})
    assert same.studies[0].hypervolume == pytest.approx(same.studies[1].hypervolume)

    # Objectives not shared, or turned the other way, are left out and named.
    other = {"accuracy": "maximize", "latency_ms": "maximize", "flops": "minimize"}
    narrowed = compare_fronts({"a": (OBJ, a), "c": (other, [])})
    assert narrowed.objectives == {"accuracy": "maximize"}
    assert narrowed.left_out == ["flops", "latency_ms", "size_bytes"]
    assert all(s.front == [] for s in narrowed.studies)


def test_studies_are_read_from_the_store_and_a_missing_one_is_named(tmp_path: Any) -> None:
    from tuner.storage import StoreError

    url = f"sqlite:///{tmp_path / 'two.db'}"
    for name, accuracy in (("cnn", 0.9), ("transformer", 0.95)):
        study = optuna.create_study(study_name=name, storage=url, directions=list(OBJ.values()))
        study.set_metric_names(list(OBJ))
        study.add_trial(optuna.trial.create_trial(values=[accuracy, 1000.0, 0.1]))
    store = open_storage(url, read_only=True, heartbeat=False)
    try:
        both = compare_studies(store, ["cnn", "transformer", "cnn"])
        assert [s.name for s in both.studies] == ["cnn", "transformer"]
        assert [s.joint for s in both.studies] == [[], [0]]
        with pytest.raises(StoreError, match=r"^no study named 'rnn'; studies in this store: "):
            compare_studies(store, ["cnn", "rnn"])
    finally:
        store.engine.dispose()

"""Cross-validated trial scores: folds, the score, and the model that ships."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tuner
from tuner._cv import REFIT, Folds, fold_indices
from tuner._datasets import digits
from tuner.storage import open_storage, read_records

ROWS_WORKLOAD = """
import json, os
from tuner import train_classifier
from tuner._datasets import digits
from torch import nn

metrics = ["train_rows"]

def counted(params, ctx):
    data = digits()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, data.n_classes))
    trained = train_classifier(model, params, ctx, train=data.train, val=data.val, test=data.test)
    with open(os.environ["ROWS_LOG"], "a") as log:
        log.write(json.dumps({"fold": None if ctx.folds is None else ctx.folds.index,
                              "train": len(trained.train_data[0]),
                              "val": len(trained.val_data[0])}) + "\\n")
    trained.metrics["train_rows"] = float(len(trained.train_data[0]))
    return trained

def own_split(params, ctx):
    from tuner import TrainedModel
    data = digits()
    model = nn.Sequential(nn.Linear(64, data.n_classes))
    for epoch in range(ctx.max_epochs):
        ctx.report(epoch, val_accuracy=0.5)
    return TrainedModel(model=model, val_data=data.val, test_data=data.test, train_data=data.train)
"""


def test_folds_are_disjoint_stratified_and_cover_the_data() -> None:
    labels = digits().train[1]
    folds = fold_indices(labels, 5, seed=3)
    rows = np.concatenate(folds)
    assert len(rows) == len(labels) and len(set(rows.tolist())) == len(labels)
    counts = np.bincount(labels.numpy())
    for held in folds:
        # Stratified: each class is spread evenly (within one row) over the folds.
        in_fold = np.bincount(labels.numpy()[held], minlength=len(counts))
        assert np.all(np.abs(in_fold - counts / 5) <= 1)
    # The same seed gives the same folds (every trial of a study sees the same ones).
    again = fold_indices(labels, 5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))


def test_a_fold_trains_on_the_rest_and_the_refit_on_everything() -> None:
    data = digits()
    pooled = len(data.train[1]) + len(data.val[1])
    seen: list[torch.Tensor] = []
    for i in range(4):
        (x_train, _), (x_val, _) = Folds(4, i, seed=0).split(data.train, data.val)
        assert len(x_train) + len(x_val) == pooled
        seen.append(x_val)
    assert sum(len(v) for v in seen) == pooled
    (x_all, y_all), _ = Folds(4, REFIT, seed=0).split(data.train, data.val)
    assert len(x_all) == pooled
    # The test split never goes in.
    test_rows = {tuple(r.tolist()) for r in data.test[0][:50]}
    assert not test_rows & {tuple(r.tolist()) for r in x_all[:: max(1, len(x_all) // 400)]}


def test_the_score_is_the_mean_of_the_folds_and_the_refit_ships(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cv_workloads.py").write_text(ROWS_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "rows.jsonl"
    monkeypatch.setenv("ROWS_LOG", str(log))
    spec = tiny_spec(
        workload="cv_workloads:counted",
        budget={"n_trials": 1, "max_epochs": 2},
        cv={"folds": 3},
        artifacts={"path": str(tmp_path / "art")},
    )
    tuner.run(spec, storage=sqlite_url)
    (record,) = read_records(open_storage(sqlite_url, heartbeat=False), "tiny")
    assert record.state == "COMPLETE"
    folds = record.metrics["cv_accuracy_folds"]
    assert len(folds) == 3 and record.metrics["cv_folds"] == 3
    assert record.values["accuracy"] == pytest.approx(statistics.mean(folds))
    assert record.metrics["cv_accuracy_std"] == pytest.approx(statistics.stdev(folds))

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    data = digits()
    pooled = len(data.train[1]) + len(data.val[1])
    assert [c["fold"] for c in calls] == [0, 1, 2, REFIT]
    for c in calls[:3]:
        assert c["train"] + c["val"] == pooled
    # The model that ships (and is measured) trained on all the pooled rows.
    assert calls[-1]["train"] == pooled
    assert record.metrics["train_rows"] == pooled
    # Its test accuracy is on the held-out test split.
    assert 0.0 < record.metrics["test_accuracy"] <= 1.0


def test_a_workload_that_ignores_its_fold_fails_with_one_line(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cv_workloads.py").write_text(ROWS_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tiny_spec(
        workload="cv_workloads:own_split", budget={"n_trials": 1, "max_epochs": 1}, cv={"folds": 2}
    )
    with pytest.raises(tuner.TrialsKeepFailing):
        tuner.run(spec, storage=sqlite_url, n_trials=1)
    records = read_records(open_storage(sqlite_url, heartbeat=False), "tiny")
    assert records and all(r.state == "FAIL" for r in records)
    assert "ctx.cv_split(train, val)" in (records[0].error or "")


def test_cv_with_early_stopping_is_refused_before_anything_is_written(tiny_spec: Any) -> None:
    with pytest.raises(tuner.SpecError, match="early_stopping: none"):
        tuner.load_spec(tiny_spec(cv={"folds": 3}, early_stopping={"name": "asha"}))
    with pytest.raises(tuner.SpecError, match="cv.folds"):
        tuner.load_spec(tiny_spec(cv={"folds": 1}))


def test_digits_reports_five_fold_accuracy(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(budget={"n_trials": 1, "max_epochs": 2}, cv={"folds": 5})
    tuner.run(spec, storage=sqlite_url)
    (record,) = read_records(open_storage(sqlite_url, heartbeat=False), "tiny")
    assert len(record.metrics["cv_accuracy_folds"]) == 5
    assert record.values["accuracy"] == pytest.approx(
        statistics.mean(record.metrics["cv_accuracy_folds"])
    )
    assert len(record.curve) == 2

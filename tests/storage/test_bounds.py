from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.storage import Bound, TrialRecord, best_within, metric_value, rank
from tuner.storage._bounds import default_target


def _trial(number: int, acc: float, size: float, lat: float, **kw: object) -> TrialRecord:
    return TrialRecord(
        number=number,
        state=str(kw.pop("state", "COMPLETE")),
        params={},
        values={"accuracy": acc, "size_bytes": size, "latency_ms": lat},
        metrics=dict(kw.pop("metrics", {})),  # type: ignore[call-overload]
        datetime_start=None,
        datetime_complete=None,
        feasible=bool(kw.pop("feasible", True)),
    )


def test_a_bound_holds_is_violated_and_reads_like_its_source() -> None:
    at_most = Bound("latency_ms", max=2.0)
    assert at_most.holds(2.0) and not at_most.holds(2.5)
    assert not at_most.holds(None) and not at_most.holds(math.nan) and not at_most.holds(-math.inf)
    assert at_most.violation(2.5) == pytest.approx(0.5) and at_most.violation(1.0) < 0
    assert at_most.shortfall(3.0) == pytest.approx(0.5) and at_most.shortfall(1.0) == 0.0
    strict = Bound("size_bytes", max=100.0, strict=True)
    assert not strict.holds(100.0) and strict.holds(99.0)
    assert list(strict.mask(np.array([99.0, 100.0, np.nan]))) == [True, False, False]
    both = Bound("sparsity", min=0.2, max=0.5)
    assert both.violation(0.1) == pytest.approx(0.1) and both.violation(0.7) == pytest.approx(0.2)
    assert (str(at_most), str(strict), str(Bound("accuracy", min=0.9))) == (
        "latency_ms<=2",
        "size_bytes<100",
        "accuracy>=0.9",
    )
    assert at_most.describe() == "latency_ms ≤ 2.000 ms"
    assert Bound("accuracy", min=0.9).describe() == "accuracy ≥ 90.0%"
    assert both.describe() == "20.0% ≤ sparsity ≤ 50.0%"


def test_metric_value_takes_finite_numbers_from_values_then_metrics() -> None:
    record = _trial(0, 0.9, 100.0, math.inf, metrics={"latency_ms_p90": 2.0, "device": "cpu"})
    assert metric_value(record, "accuracy") == 0.9
    assert metric_value(record, "latency_ms_p90") == 2.0
    assert metric_value(record, "latency_ms") is None  # not finite
    assert metric_value(record, "device") is None and metric_value(record, "nothing") is None


def test_best_within_ranks_by_the_first_maximized_objective_then_the_others_in_order() -> None:
    trials = [
        _trial(0, 0.95, 48_000, 1.9),
        _trial(1, 0.95, 40_000, 1.95),
        _trial(2, 0.95, 40_000, 1.5),  # ties 1 on accuracy and size, faster
        _trial(3, 0.99, 10_000, 0.5, feasible=False),
        _trial(4, 0.97, 90_000, 3.0),
        _trial(5, 0.99, 1_000, 0.1, state="PRUNED"),
    ]
    objectives = {"size_bytes": "minimize", "latency_ms": "minimize", "accuracy": "maximize"}
    assert default_target(objectives) == ("accuracy", "maximize")
    assert default_target({"size_bytes": "minimize"}) == ("size_bytes", "minimize")
    budget = [Bound("latency_ms", max=2.0), Bound("size_bytes", max=50_000)]
    best = best_within(trials, objectives, budget)
    assert best is not None and best.number == 2
    assert best_within(trials, objectives) is not None
    assert best_within(trials, objectives, [Bound("latency_ms", max=0.01)]) is None
    assert [r.number for r in rank(trials[:3], objectives)] == [2, 1, 0]
    smallest = rank(trials[:3], objectives, target="size_bytes", direction="minimize")
    assert [r.number for r in smallest] == [2, 1, 0]

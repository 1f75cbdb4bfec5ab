"""`tuner pick`, the dashboard and the nightly report name the same trial for one budget."""

from __future__ import annotations

import json
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution

import tuner
from tuner._cli import main
from tuner._report import compare_nights
from tuner.dashboard._views import front as fronts
from tuner.dashboard._views import page as pages
from tuner.storage import open_storage, read_records

# (accuracy, size_bytes, latency_ms, sparsity); the spec caps sparsity at 0.5.
TRIALS = [
    (0.97, 90_000.0, 3.0, 0.3),  # most accurate feasible trial, over the budget
    (0.95, 48_000.0, 1.9, 0.3),
    (0.95, 40_000.0, 1.95, 0.3),  # ties on accuracy, smaller
    (0.95, 40_000.0, 1.5, 0.3),  # ties on accuracy and size, faster: the one to ship
    (0.99, 10_000.0, 0.5, 0.8),  # better at everything, breaks the sparsity constraint
    (0.96, 30_000.0, 2.5, 0.3),  # just over the latency budget
    (0.93, 20_000.0, 1.0, 0.3),
]
BEST = 3
ORDERS = {
    "size-first": ["size_bytes", "latency_ms", "accuracy"],
    "accuracy-first": ["accuracy", "size_bytes", "latency_ms"],
}
DIRECTION = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store, the same trials in two studies whose objectives come in other orders."""
    url = f"sqlite:///{tmp_path_factory.mktemp('best') / 'study.db'}"
    storage = open_storage(url, heartbeat=False)
    for name, names in ORDERS.items():
        study = optuna.create_study(
            study_name=name, storage=storage, directions=[DIRECTION[n] for n in names]
        )
        study.set_metric_names(names)
        for i, (acc, size, lat, sparsity) in enumerate(TRIALS):
            metrics = {"accuracy": acc, "size_bytes": size, "latency_ms": lat}
            study.add_trial(
                optuna.trial.create_trial(
                    params={"lr": 0.01 * (i + 1)},
                    distributions={"lr": FloatDistribution(0.001, 1.0)},
                    values=[metrics[n] for n in names],
                    user_attrs={
                        **metrics,
                        "sparsity": sparsity,
                        "feasible": sparsity <= 0.5,
                        "constraint_violations": [sparsity - 0.5],
                    },
                )
            )
    storage.engine.dispose()
    return url


@pytest.mark.parametrize("order", list(ORDERS))
def test_pick_dashboard_and_report_take_the_same_trial(
    order: str, store: str, tiny_spec: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    objectives = {n: DIRECTION[n] for n in ORDERS[order]}
    where = "latency_ms<=2, size_bytes<=51200"
    assert main(["pick", order, "--where", where, "--json", "--storage", store]) == 0
    picked = json.loads(capsys.readouterr().out)["number"]

    storage = open_storage(store, read_only=True, heartbeat=False)
    records = read_records(storage, order)
    storage.engine.dispose()
    budget = fronts.budget_bounds(objectives, {"latency_ms": 2.0, "size_bytes": 51200.0})
    page = pages.study_page_data(order, records, objectives)
    shown = fronts.best_within_budget(fronts.restrict(page.info, budget)).best

    constraints: dict[str, Any] = {
        "latency_ms": {"max": 2.0},
        "size_bytes": {"max": 51200},
        "sparsity": {"max": 0.5},
    }
    spec = tuner.StudySpec(**tiny_spec(order, objectives=objectives, constraints=constraints))
    report = compare_nights(
        spec,
        date="2026-01-01",
        study_name=order,
        records=records,
        reference_point={"accuracy": 0.0, "size_bytes": 1e6, "latency_ms": 10.0},
    )
    together = report.constraints[-1]
    assert together.text == "all constraints together"

    assert shown is not None
    assert picked == shown.number == together.tonight_trial == BEST
    assert together.tonight_best == pytest.approx(TRIALS[BEST][0])


def test_the_objective_order_does_not_change_the_pick(store: str) -> None:
    storage = open_storage(store, read_only=True, heartbeat=False)
    try:
        picks = set()
        for order, names in ORDERS.items():
            objectives = {n: DIRECTION[n] for n in names}
            info = fronts.front_info(read_records(storage, order), objectives)
            best = fronts.best_within_budget(info).best
            assert best is not None
            picks.add(best.number)
    finally:
        storage.engine.dispose()
    assert picks == {0}  # no budget: the most accurate feasible trial

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from tuner.dashboard._views import front as fronts
from tuner.dashboard._views import history as histories
from tuner.dashboard._views import importance as importances
from tuner.dashboard._views import overview as overviews
from tuner.dashboard._views import trials as trial_views
from tuner.storage import (
    Bound,
    StudySummary,
    TrialRecord,
    hypervolume,
    open_storage,
    pareto_front,
    read_records,
    read_studies,
)

OBJ = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def _trial(number: int, acc: float, size: float, lat: float, **kw: Any) -> TrialRecord:
    return TrialRecord(
        number=number,
        state=kw.pop("state", "COMPLETE"),
        params=kw.pop("params", {"lr": 0.01 * (number + 1)}),
        values={"accuracy": acc, "size_bytes": size, "latency_ms": lat},
        metrics=kw.pop("metrics", {}),
        datetime_start=None,
        datetime_complete=None,
        **kw,
    )


# (number, accuracy, size_bytes, latency_ms)
TRIALS = [
    _trial(0, 0.97, 90_000, 3.0),  # most accurate, large and slow
    _trial(1, 0.95, 40_000, 1.5),  # fits "latency <= 2 ms, size <= 50 KB"
    _trial(2, 0.93, 30_000, 1.2),  # fits too, less accurate
    _trial(3, 0.92, 45_000, 1.9),  # dominated by trial 1
    _trial(4, 0.99, 10_000, 0.5, feasible=False),  # best at everything, breaks a constraint
    _trial(5, 0.80, 5_000, 0.3),
    TrialRecord(6, "PRUNED", {"lr": 0.5}, {}, {}, None, None, curve=[0.2]),
    TrialRecord(7, "FAIL", {"lr": 0.6}, {}, {}, None, None, error="RuntimeError: boom"),
]


def test_front_flags_dominated_and_constraint_breaking_trials() -> None:
    info = fronts.front_info(TRIALS, OBJ)
    assert list(info.numbers) == [0, 1, 2, 3, 4, 5]  # complete trials only
    assert sorted(info.front_numbers) == [0, 1, 2, 5]
    assert list(info.numbers[info.dominated]) == [3, 4]
    assert list(info.numbers[~info.feasible]) == [4]
    rows = np.arange(len(info))
    groups = fronts.point_groups(info, rows)
    assert list(info.numbers[groups["breaks constraints"]]) == [4]
    assert list(info.numbers[groups["dominated"]]) == [3]
    assert sorted(info.numbers[groups["Pareto front"]]) == [0, 1, 2, 5]


def test_budget_filter_picks_the_most_accurate_trial_within_it() -> None:
    bounds = fronts.budget_bounds(OBJ, {"latency_ms": 2.0, "size_bytes": 50 * 1024.0})
    result = fronts.best_within_budget(fronts.front_info(TRIALS, OBJ, bounds))
    assert result.best is not None and result.best.number == 1
    # Trial 4 is within the budget and better, but breaks a constraint.
    assert [r.number for r in result.front] == [1, 2, 5]
    assert result.n_within == 4  # 1, 2, 3, 5
    tight = fronts.budget_bounds(OBJ, {"accuracy": 0.94, "latency_ms": 1.0})
    assert fronts.best_within_budget(fronts.front_info(TRIALS, OBJ, tight)).best is None
    none = fronts.best_within_budget(fronts.front_info(TRIALS, OBJ))
    assert none.best is not None and none.best.number == 0


def test_the_dashboard_and_tuner_pick_take_the_same_trial_whatever_the_objective_order() -> None:
    from tuner._pick import parse_where, pick

    size_first = {"size_bytes": "minimize", "latency_ms": "minimize", "accuracy": "maximize"}
    bounds = fronts.budget_bounds(size_first, {"latency_ms": 2.0, "size_bytes": 50 * 1024.0})
    best = fronts.best_within_budget(fronts.front_info(TRIALS, size_first, bounds)).best
    # The most accurate trial within the budget, as tuner pick says, not the smallest one.
    clauses = parse_where("latency_ms<=2, size_bytes<=51200")
    picked = pick(TRIALS, size_first, clauses).trial
    assert best is not None and picked is not None and best.number == picked.number == 1


def test_budget_on_a_metric_that_is_not_an_objective() -> None:
    trials = [
        _trial(0, 0.9, 100, 1.0, metrics={"latency_ms_p90": 5.0}),
        _trial(1, 0.8, 100, 1.0, metrics={"latency_ms_p90": 1.5}),
    ]
    bounds = [Bound("latency_ms_p90", max=2.0)]
    result = fronts.best_within_budget(fronts.front_info(trials, OBJ, bounds))
    assert result.best is not None and result.best.number == 1


def test_front_matches_tuner_best_on_a_real_study(dashboard_store: str) -> None:
    storage = open_storage(dashboard_store, read_only=True, heartbeat=False)
    records = read_records(storage, "tiny")
    info = fronts.front_info(records, OBJ)
    assert sorted(info.front_numbers) == sorted(r.number for r in pareto_front(records, OBJ))
    assert not info.on_front[~info.feasible].any()
    budget = {"latency_ms": float(np.median(info.values[:, 2]))}
    result = fronts.best_within_budget(
        fronts.front_info(records, OBJ, fronts.budget_bounds(OBJ, budget))
    )
    fitting = [
        r
        for r in records
        if r.state == "COMPLETE" and r.feasible and r.values["latency_ms"] <= budget["latency_ms"]
    ]
    assert result.best is not None
    assert result.best.values["accuracy"] == max(r.values["accuracy"] for r in fitting)
    storage.engine.dispose()


def test_hypervolume_history_rises_and_ends_at_the_front_hypervolume() -> None:
    rng = np.random.default_rng(0)
    trials = [
        _trial(i, float(a), float(s), float(lt))
        for i, (a, s, lt) in enumerate(
            zip(rng.uniform(0.5, 1, 60), rng.uniform(1e3, 1e5, 60), rng.uniform(0.1, 3, 60))
        )
    ]
    ref = {"accuracy": 0.4, "size_bytes": 2e5, "latency_ms": 4.0}
    history = histories.hypervolume_history(trials, OBJ, reference=ref)
    assert history.numbers == list(range(60))
    assert all(b >= a for a, b in zip(history.hypervolume, history.hypervolume[1:]))
    # Scaled to the box between the ideal point and the reference, the last value is
    # the hypervolume of the whole front divided by the box's volume.
    points = np.array([[t.values[n] for n in OBJ] for t in trials])
    box = np.prod([abs(ref[n] - history.ideal[n]) for n in OBJ])
    expected = hypervolume(points, list(OBJ.values()), [ref[n] for n in OBJ]) / box
    assert history.hypervolume[-1] == pytest.approx(expected, rel=1e-9)
    assert history.reference == pytest.approx(ref)


def test_learning_curves_keep_stopped_trials() -> None:
    trials = [
        TrialRecord(i, "COMPLETE", {}, {}, {}, None, None, curve=[0.5, 0.6, 0.7]) for i in range(50)
    ] + [TrialRecord(50 + i, "PRUNED", {}, {}, {}, None, None, curve=[0.1]) for i in range(5)]
    curves = histories.learning_curves(trials, limit=10)
    assert curves.n_stopped == 5 and curves.n_with_curve == 55
    assert [s for s in curves.states].count("PRUNED") == 5
    assert len(curves.numbers) == 10


def test_table_rows_sortable_numbers_and_errors() -> None:
    rows = trial_views.table_rows(TRIALS, OBJ, front=[0, 1, 2, 5])
    by_number = {r["trial"]: r for r in rows}
    assert by_number[1]["size_bytes (KB)"] == pytest.approx(40_000 / 1024)
    assert by_number[1]["accuracy (%)"] == pytest.approx(95.0)
    assert by_number[1]["front"] is True and by_number[3]["front"] is False
    assert by_number[4]["meets constraints"] is False
    assert by_number[7]["error"] == "RuntimeError: boom"
    assert by_number[6]["accuracy (%)"] is None


def test_export_command_never_shows_a_password() -> None:
    url = "postgresql+psycopg://tuner:s3cret@db:5432/studies"
    command = trial_views.export_command("digits-mlp", 7, url)
    assert "s3cret" not in command
    assert command.startswith("tuner export digits-mlp --trial 7 --format onnx --out model.onnx")
    assert trial_views.export_command("x", 1, "sqlite:///tuner.db").endswith("model.onnx")


def test_nightly_studies_grouped_under_their_spec() -> None:
    def summary(name: str, day: int, **attrs: Any) -> StudySummary:
        return StudySummary(name, OBJ, {"COMPLETE": 1}, attrs, dt.datetime(2026, 1, day, 12))

    groups = overviews.group_studies(
        [
            summary("digits-2026-01-01", 1, **{"tuner.spec_name": "digits"}),
            summary("adhoc", 2),
            summary("digits-2026-01-03", 3, **{"tuner.spec_name": "digits"}),
        ]
    )
    assert [(g.name, g.nightly) for g in groups] == [("digits", True), ("adhoc", False)]
    assert [s.name for s in groups[0].studies] == ["digits-2026-01-03", "digits-2026-01-01"]


def test_importance_finds_the_parameter_that_drives_the_objective() -> None:
    rng = np.random.default_rng(1)
    trials = []
    for i in range(80):
        sparsity, lr = float(rng.uniform(0, 0.9)), float(rng.uniform(0.01, 0.1))
        trials.append(
            _trial(
                i,
                0.99 - 0.5 * sparsity**2 + float(rng.normal(0, 0.005)),
                1e5 * (1 - sparsity),
                1.0,
                params={"prune_threshold": sparsity, "lr": lr},
            )
        )
    scores = importances.param_importance(trials, OBJ)
    assert next(iter(scores["accuracy"])) == "prune_threshold"
    assert sum(scores["accuracy"].values()) == pytest.approx(1.0)
    assert "latency_ms" not in scores  # constant: nothing to explain


def test_overview_rows_from_the_store(dashboard_store: str) -> None:
    storage = open_storage(dashboard_store, read_only=True, heartbeat=False)
    rows = overviews.overview_rows(read_studies(storage), {})
    assert rows[0]["study"] == "tiny" and rows[0]["state"] == "finished"
    assert rows[0]["complete"] >= 1 and rows[0]["failed"] == 1
    storage.engine.dispose()


def test_budget_steps_follow_the_size_of_the_numbers() -> None:
    assert fronts.budget_step("latency_ms") == 0.01
    assert fronts.budget_step("latency_ms", 0.0045) == 0.0001
    assert fronts.budget_step("latency_ms", 0.25) == 0.01
    assert fronts.budget_step("latency_ms", 3.2) == 0.01  # never coarser than the default
    assert fronts.budget_step("size_bytes", 4.3) == 0.1  # KB
    assert fronts.budget_step("accuracy", 94.0) == 1.0
    assert fronts.budget_step("latency_ms", float("nan")) == 0.01


def test_the_staircase_of_two_objectives_is_in_order_of_x() -> None:
    a = [_trial(0, 0.80, 10_000, 0.2), _trial(1, 0.90, 50_000, 0.5), _trial(2, 0.85, 60_000, 0.6)]
    line = fronts.front_line(a, "size_bytes", "accuracy", OBJ)
    assert [r.number for r in line] == [0, 1]


def test_a_front_point_worst_on_one_objective_still_counts_in_the_hypervolume() -> None:
    # Each trial is the best on one objective and the worst on another: both are the front.
    trials = [_trial(0, 0.9, 20_000, 1.0), _trial(1, 0.8, 10_000, 1.0)]
    history = histories.hypervolume_history(trials, OBJ)
    assert 0 < history.hypervolume[0] < history.hypervolume[1] < 1
    # The reference sits a tenth of each range past the worst value.
    assert history.reference["size_bytes"] == pytest.approx(21_000)
    assert history.reference["accuracy"] == pytest.approx(0.79)


def test_timeline_counts_the_trials_in_flight_and_the_slots_they_filled() -> None:
    from tuner.dashboard._views.timeline import timeline

    t0 = dt.datetime(2026, 12, 1, 2, 0, 0)

    def at(s: float) -> dt.datetime:
        return t0 + dt.timedelta(seconds=s)

    def ran(
        number: int, state: str, start: float | None, end: float | None, worker: str = "a"
    ) -> TrialRecord:
        return TrialRecord(
            number,
            state,
            {},
            {},
            {"worker": f"host-{worker} (pid 1)"} if start is not None else {},
            None if start is None else at(start),
            None if end is None else at(end),
        )

    records = [
        ran(0, "COMPLETE", 0, 10, worker="b"),
        ran(1, "FAIL", 0, 4),  # failed; its worker starts trial 2 as it ends
        ran(2, "COMPLETE", 4, 10),
        ran(3, "PRUNED", 10, 12),
        ran(4, "RUNNING", 12, None),  # ends now
        ran(5, "WAITING", None, None),  # never started: no bar
    ]
    tl = timeline(records, now=at(20))
    assert [(b.number, b.state, b.seconds) for b in tl.bars] == [
        (0, "COMPLETE", 10.0),
        (1, "FAIL", 4.0),
        (2, "COMPLETE", 6.0),
        (3, "PRUNED", 2.0),
        (4, "RUNNING", 8.0),
    ]
    # Two workers while 0 and 1 (then 2) ran, one from 10 s on; trial 2 starting as trial
    # 1 ends is two in flight, not three.
    assert tl.peak == 2
    assert list(zip(tl.times, tl.in_flight)) == [
        (at(0), 2),
        (at(4), 2),
        (at(10), 1),
        (at(12), 1),
        (at(20), 0),
    ]
    assert tl.workers == ["host-b (pid 1)", "host-a (pid 1)"]
    assert tl.span_s == 20.0
    assert tl.busy == pytest.approx(30 / (2 * 20))
    assert timeline([ran(0, "WAITING", None, None)], now=at(1)).bars == []


def test_a_trial_page_says_where_its_model_is_kept_and_when_export_retrains() -> None:
    def done(number: int, **metrics: Any) -> TrialRecord:
        return _trial(number, 0.9, 1000.0, 0.1, metrics=metrics)

    kept_in_store = done(0, artifact_id="a", artifact_store="study store", artifact="kept")
    kept_in_folder = done(1, artifact_id="b", artifact_store="/srv/models/s", artifact="kept")
    dropped_later = done(2, artifact_id="c", artifact_store="study store", artifact="kept")
    never = done(3, artifact="dropped by keep: pareto (dominated when it finished)")
    study = {"tuner.artifact_dropped.2": "keep: pareto"}
    assert trial_views.kept_model(kept_in_store, study) == (
        "Its model is kept in the study store.",
        False,
    )
    assert trial_views.kept_model(kept_in_folder, study) == (
        "Its model is kept in /srv/models/s.",
        False,
    )
    assert trial_views.kept_model(dropped_later, study) == (
        "Its model was dropped by keep: pareto, once other trials dominated it.",
        True,
    )
    assert trial_views.kept_model(never, study)[1] is True
    assert trial_views.export_command("s", 3, "sqlite:///x.db", retrain=True).endswith(
        "--storage sqlite:///x.db --retrain"
    )


def test_a_trial_says_where_its_tensorboard_run_is_and_how_to_open_it() -> None:
    in_store = _trial(0, 0.9, 1000.0, 0.1, metrics={"tensorboard": "study store"})
    on_disk = _trial(1, 0.9, 1000.0, 0.1, metrics={"tensorboard": "/srv/runs/s/trial-00001"})
    none = _trial(2, 0.9, 1000.0, 0.1, metrics={})
    assert trial_views.tensorboard_run(in_store) == (
        "Its TensorBoard run (curves, final metrics, HParams) is kept in the study store."
    )
    assert "is in /srv/runs/s/trial-00001." in str(trial_views.tensorboard_run(on_disk))
    assert trial_views.tensorboard_run(none) is None
    command = trial_views.tensorboard_command("s", "mysql+pymysql://u:s3cret@db/t")
    assert command == "tuner tensorboard s --serve --storage 'mysql+pymysql://u:***@db/t'"
    assert trial_views.tensorboard_command("s", "sqlite:///tuner.db") == (
        "tuner tensorboard s --serve"
    )

"""The dashboard's figures, checked on the figure objects (no Streamlit)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tuner.dashboard import _figures
from tuner.dashboard._views import front as fronts
from tuner.dashboard._views import page as pages
from tuner.dashboard._views import trials as trial_views
from tuner.storage import Bound, TrialRecord, open_storage, read_records, show_metric

OBJ = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def _trial(number: int, acc: float, size: float, lat: float, **kw: Any) -> TrialRecord:
    return TrialRecord(
        number=number,
        state=kw.pop("state", "COMPLETE"),
        params={"lr": 0.01 * (number + 1)},
        values={"accuracy": acc, "size_bytes": size, "latency_ms": lat},
        metrics=kw.pop("metrics", {}),
        datetime_start=None,
        datetime_complete=None,
        curve=kw.pop("curve", [0.5, acc]),
        **kw,
    )


TRIALS = [
    _trial(0, 0.97, 90_000, 3.0),
    _trial(1, 0.95, 40_000, 1.5),
    _trial(2, 0.93, 30_000, 1.2),
    _trial(3, 0.92, 45_000, 1.9),
    _trial(4, 0.99, 10_000, 0.5, feasible=False),
    _trial(5, 0.80, 5_000, 0.3),
    TrialRecord(6, "PRUNED", {"lr": 0.5}, {}, {}, None, None, curve=[0.2]),
]


def _traces(fig: Any) -> dict[str, Any]:
    return {t.name.split(" (")[0]: t for t in fig.data}


def _page(records: list[TrialRecord] = TRIALS) -> pages.StudyPage:
    return pages.study_page_data("s", records, OBJ)


def test_the_front_figure_marks_exactly_the_front_trials_with_units_on_the_axes() -> None:
    page = _page()
    rows = fronts.plot_sample(page.info)
    fig = _figures.pareto_2d(page.info, page.hover, rows, "size_bytes", "accuracy")
    traces = _traces(fig)
    front = traces["Pareto front"]
    assert sorted(int(c[0]) for c in front.customdata) == [0, 1, 2, 5]
    assert [int(c[0]) for c in traces["breaks constraints"].customdata] == [4]
    assert [int(c[0]) for c in traces["dominated"].customdata] == [3]
    assert fig.layout.xaxis.title.text == "size_bytes (KB) ↓ better"
    assert fig.layout.yaxis.title.text == "accuracy (%) ↑ better"
    # Drawn in the unit of the axis, hover text as the CLI shows the value.
    first = next(r for r in TRIALS if r.number == int(front.customdata[0][0]))
    assert front.x[0] == pytest.approx(first.values["size_bytes"] / 1024)
    assert show_metric("accuracy", first.values["accuracy"]) in list(front.customdata[0])
    assert any(t.name == "best overall: trial 0" for t in fig.data)


def test_the_budget_restricts_the_points_and_moves_the_best_trial() -> None:
    page = _page()
    budget = [Bound("latency_ms", max=2.0), Bound("size_bytes", max=50 * 1024)]
    info = fronts.restrict(page.info, budget)
    fig = _figures.pareto_2d(info, page.hover, fronts.plot_sample(info), "latency_ms", "accuracy")
    traces = _traces(fig)
    assert sorted(int(c[0]) for c in traces["front within budget"].customdata) == [1, 2, 5]
    # Trial 0 is on the front but over the budget: drawn faded, apart from the budget's front.
    assert [int(c[0]) for c in traces["Pareto front"].customdata] == [0]
    assert "outside budget" not in traces  # the one dominated trial (3) fits the budget
    assert any(t.name == "best within budget: trial 1" for t in fig.data)


def test_3d_parallel_history_hypervolume_importance_and_curves_draw() -> None:
    page = _page()
    rows = fronts.plot_sample(page.info)
    scene = _figures.pareto_3d(page.info, page.hover, rows).layout.scene
    assert scene.zaxis.title.text == "latency_ms (ms)"
    parallel = _figures.parallel(page.info, rows)
    assert [d.label for d in parallel.data[0].dimensions][-3:] == [
        "accuracy (%)",
        "size_bytes (KB)",
        "latency_ms (ms)",
    ]
    history = _figures.histories(page.histories, OBJ, limit=100)
    assert {t.name for t in history.data} >= {"trial", "best so far", "breaks constraints"}
    hv = _figures.hypervolume(page.hypervolume)
    assert list(hv.data[0].y)[-1] == pytest.approx(page.hypervolume.hypervolume[-1])
    bars = _figures.importance({"accuracy": {"lr": 0.7, "batch_size": 0.3}})
    assert list(bars.data[0].y) == ["batch_size", "lr"]
    curves = _figures.learning_curves(page.curves, page.info.front_numbers)
    names = [t.name for t in curves.data]
    assert "stopped early" in names and "stopped here" in names and "Pareto front" in names
    assert list(_figures.trial_curve(TRIALS[1]).data[0].y) == [0.5, 0.95]


def test_the_trial_page_says_how_a_trial_recovered() -> None:
    params = {
        "prune_threshold": 0.4,
        "prune_structure": "structured",
        "finetune_epochs": 2,
        "distill": "kd",
        "distill_temperature": 1.0,
        "distill_alpha": 0.75,
        "quantize": "int8",
        "qat_epochs": 1,
    }
    metrics = {"finetune_time_s": 0.4, "float_layers": ["features.0", "head"]}
    shipped = replace(_trial(3, 0.9, 1.0, 1.0, metrics=metrics), params=params)
    assert trial_views.recovery_text(shipped) == (
        "Compressed: 40% structured sparsity, then 2 epochs of fine-tuning distilled from the "
        "trained model (temperature 1, teacher weight 0.75); int8 learned in 1 epoch of "
        "quantization-aware training; kept in float: features.0, head."
    )
    labels = {**params, "distill": "none", "qat_epochs": 0, "prune_steps": 3}
    plain = replace(shipped, params=labels, metrics={"finetune_time_s": 0.4})
    assert trial_views.recovery_text(plain) == (
        "Compressed: 40% structured sparsity in 3 steps, then 2 epochs of fine-tuning on the "
        "labels; int8 calibrated after training."
    )
    # A workload without training data: the fine-tune and QAT it sampled never ran.
    untuned = replace(shipped, metrics={})
    assert trial_views.recovery_text(untuned) == (
        "Compressed: 40% structured sparsity, not fine-tuned; int8 calibrated after training."
    )
    assert trial_views.recovery_text(TRIALS[0]) == "Shipped as trained: float, no sparsity."
    float8 = replace(TRIALS[0], params={"quantize": "float8"}, metrics={"float8_layers": ["fc"]})
    assert trial_views.recovery_text(float8) == (
        "Compressed: float8 on the GPU (weights and activations, one scale per tensor)."
    )
    narrow = replace(float8, metrics={"float8_layers": []})
    assert "no layer is in float8" in str(trial_views.recovery_text(narrow))
    # float8 fixed in the spec is no parameter: the trial's record says it.
    fixed = replace(TRIALS[0], metrics={"quantize": "float8", "float8_layers": ["fc"]})
    assert trial_views.recovery_text(fixed) == trial_views.recovery_text(float8)
    # Not exported (tuner exports on the CPU): the page says why instead of the command.
    assert "shipped float8" in str(trial_views.not_exported(fixed))
    assert trial_views.not_exported(TRIALS[0]) is None
    assert trial_views.recovery_text(TRIALS[6]) is None  # stopped early: nothing shipped


def test_trial_details_and_table_filter() -> None:
    broken = _trial(7, 0.9, 1.0, 1.0, feasible=False, metrics={"constraint_violations": [0.2]})
    constraints = [Bound("sparsity", max=0.5)]
    assert trial_views.broken_constraints(broken, constraints) == [
        "sparsity ≤ 50.0% (off by 20.0%)"
    ]
    assert trial_views.trial_tags(TRIALS[3], [0, 1]) == [
        "complete",
        "dominated",
        "meets the constraints",
    ]
    again = _trial(8, 0.9, 1.0, 1.0, metrics={"trained_by": 3, "epochs": 0})
    assert trial_views.trial_tags(again, [8])[-1] == "compressed anew from trial 3's trained model"
    why = "half the sparsity, as trial 5's compression cost 12.0 points"
    milder = _trial(9, 0.9, 1.0, 1.0, metrics={"trained_by": 3, "compression_choice": why})
    assert trial_views.trial_tags(milder, [8])[-1] == (
        f"compressed anew from trial 3's trained model ({why})"
    )
    assert ("trained_by", "model trained by trial", "3") in trial_views.trial_metrics(again)
    first = _trial(0, 0.9, 1.0, 1.0, metrics={"start": "center"})
    assert (
        trial_views.trial_tags(first, [0])[-1] == "the study's first trial: the middle of the space"
    )
    rows = trial_views.table_rows(TRIALS, OBJ, front=[0, 1, 2, 5])
    kept = trial_views.filter_rows(rows, states=["COMPLETE"], front_only=True, outside_budget=[0])
    assert [r["trial"] for r in kept] == [1, 2, 5]
    formats = trial_views.table_formats(TRIALS, OBJ)
    assert formats["accuracy (%)"] == "%.1f" and formats["latency_ms"] == "%.3f"


def test_figures_from_a_real_study(dashboard_store: str) -> None:
    storage = open_storage(dashboard_store, read_only=True, heartbeat=False)
    records = read_records(storage, "tiny")
    storage.engine.dispose()
    page = pages.study_page_data("tiny", records, OBJ)
    fig = _figures.pareto_2d(
        page.info, page.hover, np.arange(len(page.info)), "latency_ms", "accuracy"
    )
    front = _traces(fig)["Pareto front"]
    assert sorted(int(c[0]) for c in front.customdata) == sorted(page.info.front_numbers)
    assert "<i>lr</i>" in front.hovertemplate and "size_bytes" in front.hovertemplate


def test_the_front_shapes_say_how_each_trial_was_compressed() -> None:
    how = {
        0: ({"quantize": "none", "prune_threshold": 0.0}, []),
        1: ({"quantize": "int8", "prune_threshold": 0.0}, ["fc1"]),
        2: ({"quantize": "none", "prune_threshold": 0.5, "prune_structure": "structured"}, []),
        3: ({"quantize": "int8", "prune_threshold": 0.5, "prune_structure": "structured"}, ["fc1"]),
        # Unstructured sparsity zeroes weights of a float model: it reads as float.
        5: ({"quantize": "none", "prune_threshold": 0.5, "prune_structure": "unstructured"}, []),
    }
    records = [
        replace(
            r, params={**r.params, **how[r.number][0]}, metrics={"int8_layers": how[r.number][1]}
        )
        if r.number in how
        else r
        for r in TRIALS
    ]
    # GPU trials: float8.
    records += [
        _trial(7, 0.91, 20_000, 0.9, metrics={"float8_layers": ["fc1"]}),
        _trial(
            8,
            0.90,
            9_000,
            0.8,
            metrics={"float8_layers": ["fc1"], "prune_structure": "structured", "sparsity": 0.5},
        ),
    ]
    page = _page(records)
    fig = _figures.pareto_2d(
        page.info, page.hover, fronts.plot_sample(page.info), "size_bytes", "accuracy"
    )
    traces = _traces(fig)
    shape = {}
    for name in ("Pareto front", "dominated"):
        for cell, symbol in zip(traces[name].customdata, traces[name].marker.symbol):
            shape[int(cell[0])] = symbol
    assert shape == {
        0: "circle",
        1: "diamond",
        2: "square",
        3: "triangle-up",
        5: "circle",
        7: "star",
        8: "pentagon",
    }
    assert traces["breaks constraints"].marker.symbol == "x"
    legend = [t.name for t in fig.data if t.legendgroup == "compression"]
    assert legend == [
        "float",
        "int8",
        "float8",
        "structured",
        "structured + int8",
        "structured + float8",
    ]

    # Only a trial that breaks a constraint (drawn as a cross) differs: no shapes either.
    odd = [replace(r, metrics={"int8_layers": ["fc1"]}) if not r.feasible else r for r in TRIALS]
    page = _page(odd)
    fig = _figures.pareto_2d(
        page.info, page.hover, fronts.plot_sample(page.info), "size_bytes", "accuracy"
    )
    assert not [t for t in fig.data if t.legendgroup == "compression"]

    # One way of compressing: nothing to tell apart, so no shapes and no shape legend.
    plain = _page()
    fig = _figures.pareto_2d(
        plain.info, plain.hover, fronts.plot_sample(plain.info), "size_bytes", "accuracy"
    )
    assert _traces(fig)["Pareto front"].marker.symbol is None
    assert not [t for t in fig.data if t.legendgroup == "compression"]


def test_each_parameter_is_drawn_against_the_objective_on_its_own_axis(
    dashboard_store: str,
) -> None:
    from tuner.dashboard._views import params
    from tuner.storage import read_studies
    from tuner.storage.keys import SPEC_ATTR

    storage = open_storage(dashboard_store, read_only=True, heartbeat=False)
    records = read_records(storage, "tiny")
    (study,) = [s for s in read_studies(storage) if s.name == "tiny"]
    storage.engine.dispose()
    # The axes of the spec the study was run with, as the dashboard reads them.
    axes = params.param_axes(study.user_attrs[SPEC_ATTR])
    page = pages.study_page_data("tiny", records, OBJ, axes=axes)
    info = page.info
    rows = fronts.plot_sample(info)
    slices = {s.param: s for s in params.param_slices(info, rows, axes)}
    by_number = {r.number: r for r in info.records}
    varied = {
        p
        for p in {p for r in info.records for p in r.params}
        if len({str(r.params[p]) for r in info.records if p in r.params}) > 1
    }
    assert set(slices) == varied and {"lr", "quantize", "prune_threshold"} <= varied

    fig = _figures.param_slices(
        info, page.hover, list(slices.values()), "accuracy", "quantize", axes
    )
    panels = [a.text for a in fig.layout.annotations]
    order = sorted(slices)
    assert [p.split(" (")[0] for p in panels] == order
    axis = {p: fig.layout[f"xaxis{'' if k == 0 else k + 1}"] for k, p in enumerate(order)}
    assert axis["lr"].type == "log" and axis["prune_threshold"].type == "linear"
    assert list(axis["quantize"].ticktext) == ["none", "int8"]  # in the spec's order
    # Every point is its trial: its objective on y, its value on x (a category's slot,
    # spread by less than a quarter), and its colour group its quantize value.
    points = 0
    for trace in fig.data:
        param = order[int((trace.xaxis or "x")[1:] or 1) - 1]
        for x, y, tip in zip(trace.x, trace.y, trace.customdata):
            record = by_number[int(tip[0])]
            assert y == pytest.approx(record.values["accuracy"] * 100)
            assert record.params["quantize"] == trace.name
            value = record.params[param]
            if param in ("quantize", "optimizer", "batch_size", "hidden_units"):
                assert abs(x - list(axis[param].ticktext).index(str(value))) < 0.25
            else:
                assert x == pytest.approx(value)
            points += 1
    assert points == sum(len(s.rows) for s in slices.values())
    assert sorted(t.name for t in fig.data if t.showlegend) == sorted(
        {r.params["quantize"] for r in info.records}
    )

    by_trial = _figures.param_slices(
        info, page.hover, list(slices.values()), "latency_ms", "trial number"
    )
    assert fig.layout.coloraxis.colorscale is None and by_trial.layout.coloraxis.colorscale
    for trace in by_trial.data:
        assert list(trace.marker.color) == [int(tip[0]) for tip in trace.customdata]


def test_a_study_without_a_spec_gets_axes_from_its_values() -> None:
    from tuner.dashboard._views import params

    records = [
        replace(
            _trial(n, 0.9 - 0.01 * n, 1000.0 * (n + 1), 1.0),
            params={
                "lr": 10.0 ** -(n % 4 + 1),  # 1e-4 to 1e-1: a log axis
                "dropout": 0.1 * n,
                "act": "relu" if n % 2 else "gelu",
                "layers": 2,  # the same in every trial: no panel
                **({"momentum": 0.5 + 0.1 * n} if n % 2 else {}),  # sampled with relu only
            },
        )
        for n in range(6)
    ]
    info = fronts.front_info(records, OBJ)
    slices = {s.param: s for s in params.param_slices(info, np.arange(len(info)))}
    assert {p: s.scale for p, s in slices.items()} == {
        "act": params.CATEGORY,
        "dropout": params.LINEAR,
        "lr": params.LOG,
        "momentum": params.LINEAR,
    }
    assert slices["act"].labels == ["gelu", "relu"]
    page = pages.study_page_data("s", records, OBJ)
    fig = _figures.param_slices(info, page.hover, list(slices.values()), "accuracy", "act")
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["act", "dropout", "lr", "momentum (3 of 6)"]
    momentum = [t for t in fig.data if t.xaxis == "x4"]
    assert sorted(x for t in momentum for x in t.x) == pytest.approx([0.6, 0.8, 1.0])
    assert {t.name for t in momentum} == {"relu"}
    assert params.colourings(info, np.arange(len(info))) == [
        params.BY_FRONT,
        params.BY_NUMBER,
        "act",
    ]

"""What the dashboard shows, computed as plain records before anything is drawn.

Every function here takes trial records (``tuner.storage.TrialRecord``) and returns
numbers, arrays or records; ``app.py`` only renders them. Tests check these
functions directly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tuner.storage import (
    DEFAULT_URL,
    Bound,
    StudySummary,
    TrialRecord,
    bounds_from_spec,
    column_format,
    commands,
    hypervolume,
    metric_unit,
    metric_value,
    pareto_mask,
    rank,
    show_metric,
    show_param,
)
from tuner.storage.keys import SPEC_ATTR, SPEC_NAME_ATTR

# Metrics in the order a person reads a trial, with how to show them.
METRICS: dict[str, str] = {
    "accuracy": "validation accuracy",
    "test_accuracy": "test accuracy",
    "accuracy_float": "validation accuracy before compression",
    "size_bytes": "size",
    "latency_ms": "latency p50 (batch 1)",
    "latency_ms_p90": "latency p90 (batch 1)",
    "latency_ms_batch": "latency p50 (batch)",
    "latency_ms_batch_p90": "latency p90 (batch)",
    "latency_batch_size": "latency batch size",
    "sparsity": "sparsity",
    "param_count": "parameters",
    "int8_layers": "int8 layers",
    "prune_structure": "sparsity structure",
    "removed_units": "removed units",
    "train_time_s": "training time",
    "epochs": "epochs trained",
    "latency_device": "measured on",
    "latency_threads": "threads",
    "device": "trained on",
    "feasible": "meets constraints",
    "stopped_reason": "why it stopped early",
}


def axis_title(metric: str, direction: str | None = None) -> str:
    """Axis label with the unit drawn and which way is better."""
    unit = budget_unit(metric)[0]
    arrow = {"maximize": " ↑ better", "minimize": " ↓ better"}.get(direction or "", "")
    return f"{metric}{f' ({unit})' if unit else ''}{arrow}"


def display_scale(metric: str) -> float:
    """Factor from the stored to the drawn unit: bytes as KB, accuracies in %."""
    return budget_unit(metric)[1]


def budget_unit(metric: str) -> tuple[str, float]:
    """The unit a budget on ``metric`` is typed in, and the factor from the stored value."""
    return metric_unit(metric)


def budget_step(metric: str, typical: float | None = None) -> float:
    """The +/- step of a budget input, in the unit it is typed in.

    ``typical`` (in that unit, e.g. the study's median latency) makes the step a power
    of ten at most a tenth of it, so a 0.004 ms model gets 0.0001 ms steps, not 0.01.
    """
    step = {"KB": 10.0, "%": 1.0, "ms": 0.01}.get(budget_unit(metric)[0], 1.0)
    if typical is not None and math.isfinite(typical) and typical > 0:
        step = min(step, 10.0 ** math.floor(math.log10(typical) - 1))
    return step


# Budget inputs show as many digits as the number has (0.0045 stays 0.0045).
BUDGET_FORMAT = "%g"


@dataclass(frozen=True)
class Hover:
    """What a point says when hovered, as one template and a short row per trial.

    Plotly fills ``template`` from each point's ``customdata`` (``rows[i]``), so a
    figure carries a few short strings per point instead of a whole HTML text.
    ``rows[i][0]`` is the trial number, which a click on the point opens. ``rows`` is
    an object array: plotly takes slices of it without checking every cell.
    """

    template: str
    rows: np.ndarray


def hover(records: Sequence[TrialRecord], objectives: Mapping[str, str]) -> Hover:
    """Trial, objectives, key metrics and every parameter of each of ``records``."""
    metrics = [
        m
        for m in ("test_accuracy", "latency_ms_p90", "sparsity")
        if m not in objectives and any(m in r.metrics for r in records)
    ]
    params = sorted({p for r in records for p in r.params})
    lines = ["<b>trial %{customdata[0]}</b>%{customdata[1]}"]
    lines += [f"{m}: %{{customdata[{i}]}}" for i, m in enumerate([*objectives, *metrics], 2)]
    start = 2 + len(objectives) + len(metrics)
    lines += [f"<i>{p}</i> = %{{customdata[{i}]}}" for i, p in enumerate(params, start)]
    rows = []
    for r in records:
        row: list[Any] = [r.number, "" if r.feasible else " (breaks a constraint)"]
        row += [show_metric(m, r.values.get(m)) for m in objectives]
        row += [show_metric(m, r.metrics.get(m)) for m in metrics]
        for p in params:
            v = r.params.get(p)
            row.append(show_param(v))
        rows.append(row)
    table = np.empty((len(rows), start + len(params)), dtype=object)
    for i, row in enumerate(rows):
        table[i] = row
    return Hover("<br>".join(lines) + "<extra></extra>", table)


def even_sample(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items, evenly spread, first and last kept."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def step_points(xs: Sequence[int], ys: Sequence[float]) -> tuple[list[int], list[float]]:
    """A step line's corners only: the points where ``ys`` changes, and the last one."""
    out_x: list[int] = []
    out_y: list[float] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if not out_y or y != out_y[-1] or i == len(xs) - 1:
            out_x.append(x)
            out_y.append(y)
    return out_x, out_y


# --- constraints and budgets ------------------------------------------------------


def study_constraints(user_attrs: Mapping[str, Any]) -> list[Bound]:
    """The constraints of the spec the study was run with (none if it has no spec)."""
    return bounds_from_spec(user_attrs.get(SPEC_ATTR))


def budget_bounds(objectives: Mapping[str, str], limits: Mapping[str, float | None]) -> list[Bound]:
    """Bounds from a budget: a maximum for minimized objectives, a minimum for maximized."""
    out = []
    for metric, limit in limits.items():
        if limit is None:
            continue
        if objectives.get(metric) == "maximize":
            out.append(Bound(metric, min=float(limit)))
        else:
            out.append(Bound(metric, max=float(limit)))
    return out


# --- the Pareto front ------------------------------------------------------------


@dataclass(frozen=True)
class FrontInfo:
    """Complete trials with every objective, and where each stands.

    Row ``i`` of every array is ``records[i]`` (trial ``numbers[i]``); ``values`` is
    in the order of ``objectives``.
    """

    objectives: dict[str, str]
    records: list[TrialRecord]
    numbers: np.ndarray
    values: np.ndarray
    feasible: np.ndarray
    on_front: np.ndarray
    in_budget: np.ndarray
    on_budget_front: np.ndarray
    bounds: tuple[Bound, ...] = ()

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def front_numbers(self) -> list[int]:
        return [int(n) for n in self.numbers[self.on_front]]

    @property
    def dominated(self) -> np.ndarray:
        return ~self.on_front


def complete_records(
    records: Iterable[TrialRecord], objectives: Mapping[str, str]
) -> list[TrialRecord]:
    """COMPLETE trials that have a finite value for every objective."""
    names = list(objectives)
    return [
        r
        for r in records
        if r.state == "COMPLETE"
        and all(n in r.values and math.isfinite(r.values[n]) for n in names)
    ]


def front_info(
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    budget: Sequence[Bound] = (),
) -> FrontInfo:
    """Which complete trials are on the Pareto front, break constraints, fit the budget.

    A trial that breaks a constraint of the study is never on the front, as in
    ``tuner best``. ``on_budget_front`` is the front of the trials within ``budget``.
    """
    pool = complete_records(records, objectives)
    names = list(objectives)
    values = np.array([[r.values[n] for n in names] for r in pool], dtype=float).reshape(
        len(pool), len(names)
    )
    feasible = np.array([r.feasible for r in pool], dtype=bool)
    on_front = _front_of(values, [objectives[n] for n in names], feasible)
    info = FrontInfo(
        objectives=dict(objectives),
        records=pool,
        numbers=np.array([r.number for r in pool], dtype=int),
        values=values,
        feasible=feasible,
        on_front=on_front,
        in_budget=np.ones(len(pool), dtype=bool),
        on_budget_front=on_front,
    )
    return restrict(info, budget) if budget else info


def restrict(info: FrontInfo, budget: Sequence[Bound]) -> FrontInfo:
    """``info`` with ``in_budget`` and ``on_budget_front`` for ``budget``."""
    if not budget:
        return replace(
            info, in_budget=np.ones(len(info), dtype=bool), on_budget_front=info.on_front, bounds=()
        )
    in_budget = np.ones(len(info), dtype=bool)
    names = list(info.objectives)
    for bound in budget:
        if bound.metric in names:
            in_budget &= bound.mask(info.values[:, names.index(bound.metric)])
        else:
            in_budget &= np.array(
                [bound.holds(metric_value(r, bound.metric)) for r in info.records], dtype=bool
            ).reshape(len(info))
    directions = list(info.objectives.values())
    return replace(
        info,
        in_budget=in_budget,
        on_budget_front=_front_of(info.values, directions, info.feasible & in_budget),
        bounds=tuple(budget),
    )


def _front_of(values: np.ndarray, directions: Sequence[str], allowed: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(values), dtype=bool)
    if allowed.any():
        mask[np.flatnonzero(allowed)] = pareto_mask(values[allowed], directions)
    return mask


@dataclass(frozen=True)
class BudgetResult:
    """The trials that fit a deployment budget, and the one to ship."""

    bounds: list[Bound]
    best: TrialRecord | None
    front: list[TrialRecord]
    n_within: int
    n_complete: int


def best_within_budget(info: FrontInfo) -> BudgetResult:
    """The best feasible trial within ``info``'s budget, and the front restricted to it.

    Best means what ``tuner pick`` takes: the best value of the first maximized objective
    (e.g. the highest accuracy; the first objective when none is maximized); ties go to
    the better value of the other objectives in order (then the smaller, faster model).
    ``info`` comes from :func:`front_info` or :func:`restrict` with the budget.
    """
    ok = info.feasible & info.in_budget
    inside = rank([info.records[i] for i in np.flatnonzero(ok)], info.objectives)
    front = rank([info.records[i] for i in np.flatnonzero(info.on_budget_front)], info.objectives)
    return BudgetResult(
        bounds=list(info.bounds),
        best=inside[0] if inside else None,
        front=front,
        n_within=len(inside),
        n_complete=int(info.feasible.sum()),
    )


def plot_sample(info: FrontInfo, limit: int = 4000, seed: int = 0) -> np.ndarray:
    """Row indices to draw: every front point, then an even sample of the rest.

    Keeps figures small on large studies (a 10,000-point figure with hover text is
    several megabytes) while the front, the part people read, stays complete.
    """
    keep = info.on_front | info.on_budget_front
    must = np.flatnonzero(keep)
    rest = np.flatnonzero(~keep)
    room = max(0, limit - len(must))
    if len(rest) > room:
        rest = np.sort(np.random.default_rng(seed).choice(rest, size=room, replace=False))
    return np.sort(np.concatenate([must, rest]))


def point_groups(info: FrontInfo, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Split the drawn ``rows`` by what a point is, drawn in this order (front on top).

    Without a budget every trial is within it, and the front within the budget is
    the front.
    """
    budget = bool(info.bounds)
    inside = info.in_budget[rows]
    ok = info.feasible[rows]
    front = info.on_front[rows]
    budget_front = info.on_budget_front[rows]
    groups = {
        "outside budget": rows[~inside & ok & ~front] if budget else rows[:0],
        "dominated": rows[inside & ok & ~front & ~budget_front],
        "breaks constraints": rows[~ok],
        "Pareto front": rows[front & ~budget_front] if budget else rows[front],
        "front within budget": rows[budget_front] if budget else rows[:0],
    }
    return groups


def front_2d(info: FrontInfo, xi: int, yi: int) -> np.ndarray:
    """Rows of the front of objectives ``xi`` and ``yi`` alone (feasible, within budget),
    ordered from the best ``x`` on, to draw the trade-off between the two as a staircase.
    """
    allowed = info.feasible & info.in_budget
    if not allowed.any() or xi == yi:
        return np.zeros(0, dtype=int)
    names = list(info.objectives)
    dirs = [info.objectives[names[xi]], info.objectives[names[yi]]]
    idx = np.flatnonzero(allowed)
    pair = info.values[idx][:, [xi, yi]]
    rows = idx[pareto_mask(pair, dirs)]
    sign = -1.0 if dirs[0] == "maximize" else 1.0
    return rows[np.argsort(sign * info.values[rows, xi], kind="stable")]


@dataclass(frozen=True)
class Dimension:
    """One axis of the parallel-coordinates chart."""

    label: str
    values: list[float]
    tickvals: list[float] | None = None
    ticktext: list[str] | None = None


def parallel_dimensions(
    records: Sequence[TrialRecord], objectives: Mapping[str, str]
) -> list[Dimension]:
    """Axes for parallel coordinates: each parameter, then each objective.

    Categorical parameters become evenly spaced codes with their labels; a parameter
    a trial did not sample (a conditional one) is drawn below the axis as "not set".
    """
    dims = []
    names = sorted({p for r in records for p in r.params})
    for name in names:
        raw = [r.params.get(name) for r in records]
        present = [v for v in raw if v is not None]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
        missing = any(v is None for v in raw)
        if numeric and not missing:
            dims.append(Dimension(name, [float(v) for v in present]))
            continue
        labels = (
            sorted({v for v in present}, key=lambda v: (str(type(v)), v))
            if numeric
            else sorted({str(v) for v in present})
        )
        codes = {str(v): float(i) for i, v in enumerate(labels)}
        text = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in labels]
        if numeric and len(labels) > 12:
            low, high = float(min(present)), float(max(present))
            below = low - 0.1 * (high - low or 1.0)
            values = [below if v is None else float(v) for v in raw]
            dims.append(
                Dimension(
                    name, values, [below, low, high], ["not set", f"{low:.3g}", f"{high:.3g}"]
                )
            )
            continue
        values = [-1.0 if v is None else codes[str(v)] for v in raw]
        tickvals = list(codes.values())
        if missing:
            tickvals, text = [-1.0, *tickvals], ["not set", *text]
        dims.append(Dimension(name, values, tickvals, text))
    for objective in objectives:
        scale = display_scale(objective)
        dims.append(
            Dimension(
                axis_title(objective),
                [r.values[objective] * scale for r in records],
            )
        )
    return dims


# --- histories ---------------------------------------------------------------------


@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume of the feasible front after each complete trial.

    Objectives are scaled so that the ideal point (best value of each objective
    seen) is 0 and the reference point (worst value seen) is 1; the hypervolume is
    the share of that box the front dominates, between 0 and 1.
    """

    numbers: list[int]
    hypervolume: list[float]
    reference: dict[str, float]
    ideal: dict[str, float]


def hypervolume_history(
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    reference: Mapping[str, float] | None = None,
) -> HypervolumeHistory:
    """Hypervolume after each feasible complete trial, in trial order.

    The reference point is fixed for the whole history: ``reference`` if given,
    else the worst value of each objective over the study's feasible trials.
    Recomputed only when a trial changes the front, so 10,000 trials take well
    under a second.
    """
    names = list(objectives)
    pool = sorted(
        (r for r in complete_records(records, objectives) if r.feasible), key=lambda r: r.number
    )
    if not pool:
        return HypervolumeHistory([], [], {}, {})
    signs = np.array([-1.0 if objectives[n] == "maximize" else 1.0 for n in names])
    raw = np.array([[r.values[n] for n in names] for r in pool], dtype=float)
    v = raw * signs
    ideal = v.min(axis=0)
    if reference is None:
        ref = v.max(axis=0)
    else:
        ref = np.array([reference[n] for n in names], dtype=float) * signs
    span = np.where(ref - ideal > 0, ref - ideal, 1.0)
    scaled = (v - ideal) / span
    unit = np.ones(len(names))
    front = np.empty((0, len(names)))
    current = 0.0
    out = []
    for row in scaled:
        if not (front <= row).all(axis=1).any():
            keep = ~((row <= front).all(axis=1) & (row < front).any(axis=1))
            front = np.vstack([front[keep], row])
            inside = front[(front < unit).all(axis=1)]
            current = hypervolume(inside, ["minimize"] * len(names), [1.0] * len(names))
        out.append(current)
    return HypervolumeHistory(
        numbers=[r.number for r in pool],
        hypervolume=out,
        reference={n: float(x) for n, x in zip(names, ref * signs)},
        ideal={n: float(x) for n, x in zip(names, ideal * signs)},
    )


@dataclass(frozen=True)
class ObjectiveHistory:
    """One objective over trial numbers, with the best value so far."""

    objective: str
    numbers: list[int]
    values: list[float]
    feasible: list[bool]
    best_numbers: list[int]
    best_so_far: list[float]


def objective_history(
    records: Sequence[TrialRecord], objectives: Mapping[str, str], objective: str
) -> ObjectiveHistory:
    """Values of ``objective`` by trial number; the best line counts feasible trials only."""
    pool = sorted(complete_records(records, objectives), key=lambda r: r.number)
    maximize = objectives[objective] == "maximize"
    best: float | None = None
    best_numbers, best_values = [], []
    for r in pool:
        if not r.feasible:
            continue
        v = r.values[objective]
        if best is None or (v > best if maximize else v < best):
            best = v
        best_numbers.append(r.number)
        best_values.append(best)
    return ObjectiveHistory(
        objective=objective,
        numbers=[r.number for r in pool],
        values=[r.values[objective] for r in pool],
        feasible=[r.feasible for r in pool],
        best_numbers=best_numbers,
        best_so_far=best_values,
    )


@dataclass(frozen=True)
class Curves:
    """Learning curves to draw: per trial, validation accuracy by epoch."""

    numbers: list[int]
    states: list[str]
    curves: list[list[float]]
    n_with_curve: int
    n_stopped: int


def learning_curves(
    records: Sequence[TrialRecord],
    highlight: Iterable[int] = (),
    limit: int = 300,
    seed: int = 0,
) -> Curves:
    """Trials with a learning curve: every highlighted and stopped trial, then a sample.

    Stopped (PRUNED) trials always come in, so early stopping is visible.
    """
    with_curve = [r for r in records if r.curve]
    marked = set(highlight)
    first = [r for r in with_curve if r.number in marked or r.state in ("PRUNED", "RUNNING")]
    rest = [r for r in with_curve if not (r.number in marked or r.state in ("PRUNED", "RUNNING"))]
    if len(first) > limit:
        stopped = [r for r in first if r.state == "PRUNED"]
        other = [r for r in first if r.state != "PRUNED"]
        first = other + _sample(stopped, max(0, limit - len(other)), seed)
    rest = _sample(rest, max(0, limit - len(first)), seed)
    chosen = sorted(first + rest, key=lambda r: r.number)
    return Curves(
        numbers=[r.number for r in chosen],
        states=[r.state for r in chosen],
        curves=[list(r.curve) for r in chosen],
        n_with_curve=len(with_curve),
        n_stopped=sum(1 for r in with_curve if r.state == "PRUNED"),
    )


def _sample(items: list[TrialRecord], k: int, seed: int) -> list[TrialRecord]:
    if len(items) <= k:
        return items
    idx = np.random.default_rng(seed).choice(len(items), size=k, replace=False)
    return [items[i] for i in sorted(idx)]


# --- parameter importance ----------------------------------------------------------


def param_importance(
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    *,
    max_trials: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """How much each parameter explains each objective, summing to 1 per objective.

    A random forest per objective on the complete trials (at most ``max_trials``,
    an even sample beyond), importance by mean decrease in impurity: the method of
    Optuna's ``MeanDecreaseImpurityImportanceEvaluator``, computed on the records so
    it needs no ``FrozenTrial``. Parameters a trial did not sample (conditional
    ones) are encoded as missing. Empty when there are fewer than 4 trials or no
    parameter varies.
    """
    from sklearn.ensemble import RandomForestRegressor

    pool = complete_records(records, objectives)
    if len(pool) < 4:
        return {}
    pool = _sample(pool, max_trials, seed)
    names = sorted({p for r in pool for p in r.params})
    columns = []
    kept = []
    for name in names:
        raw = [r.params.get(name) for r in pool]
        col = _encode(raw)
        if np.nanmin(col) == np.nanmax(col):
            continue
        columns.append(col)
        kept.append(name)
    if not kept:
        return {}
    x = np.column_stack(columns)
    out: dict[str, dict[str, float]] = {}
    for objective in objectives:
        y = np.array([r.values[objective] for r in pool], dtype=float)
        if np.ptp(y) == 0:
            continue
        forest = RandomForestRegressor(
            n_estimators=48, max_depth=8, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
        forest.fit(x, y)
        total = float(forest.feature_importances_.sum()) or 1.0
        scores = {n: float(s) / total for n, s in zip(kept, forest.feature_importances_)}
        out[objective] = dict(sorted(scores.items(), key=lambda kv: -kv[1]))
    return out


def _encode(raw: list[Any]) -> np.ndarray:
    present = [v for v in raw if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        col = np.array([np.nan if v is None else float(v) for v in raw], dtype=float)
        spread = np.nanmax(col) - np.nanmin(col) if present else 0.0
        # Missing (not sampled) goes below the range so trees can split it off.
        return np.where(np.isnan(col), np.nanmin(col) - 1.0 - spread, col)
    codes = {v: i for i, v in enumerate(sorted({str(v) for v in present}))}
    return np.array([-1.0 if v is None else float(codes[str(v)]) for v in raw], dtype=float)


# --- tables ------------------------------------------------------------------------


def table_rows(
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    front: Iterable[int] = (),
) -> list[dict[str, Any]]:
    """One row per trial: number, state, front, constraints, objectives, metrics, params.

    Values stay numbers (sizes in KB, accuracies in %) so the table sorts them.
    """
    on_front = set(front)
    param_names = sorted({p for r in records for p in r.params})
    extra = [m for m in _table_metrics(objectives) if m not in objectives]
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "trial": r.number,
            "state": r.state,
            "front": r.number in on_front,
            "meets constraints": r.feasible if r.state == "COMPLETE" else None,
        }
        for name in objectives:
            v = r.values.get(name)
            row[_column(name)] = None if v is None else v * display_scale(name)
        for name in extra:
            v = metric_value(r, name)
            row[_column(name)] = None if v is None else v * display_scale(name)
        row["int8 layers"] = len(r.metrics.get("int8_layers") or [])
        row["epochs"] = len(r.curve) or r.metrics.get("epochs")
        for name in param_names:
            v = r.params.get(name)
            row[name] = v if isinstance(v, (int, float)) or v is None else str(v)
        row["duration (s)"] = r.duration_s
        row["error"] = (r.error or "").splitlines()[0] if r.error else None
        rows.append(row)
    return rows


def _table_metrics(objectives: Mapping[str, str]) -> list[str]:
    return [*objectives] + [
        m
        for m in ("test_accuracy", "latency_ms_p90", "sparsity", "param_count", "train_time_s")
        if m not in objectives
    ]


def table_formats(records: Sequence[TrialRecord], objectives: Mapping[str, str]) -> dict[str, str]:
    """A printf format per metric column of :func:`table_rows`, with the digits the text has."""
    out = {}
    for name in _table_metrics(objectives):
        scale = display_scale(name)
        values = [v * scale for r in records if (v := metric_value(r, name)) is not None]
        form = column_format(name, values)
        if form is not None:
            out[_column(name)] = form
    return out


def _column(metric: str) -> str:
    unit = budget_unit(metric)[0]
    return f"{metric} ({unit})" if unit in ("KB", "%") else metric


def trial_metrics(record: TrialRecord) -> list[tuple[str, str, str]]:
    """Every recorded metric of a trial as (metric, what it is, value), known ones first."""
    merged: dict[str, Any] = {**record.metrics, **record.values}
    merged.pop("constraint_violations", None)
    rows = [(m, label, show_metric(m, merged[m])) for m, label in METRICS.items() if m in merged]
    rows += [(m, m, show_metric(m, merged[m])) for m in sorted(merged) if m not in METRICS]
    return rows


def export_command(study: str, number: int, url: str) -> str:
    """The shell command that exports trial ``number`` of ``study`` to ONNX."""
    return commands.export_command(study, number, storage=None if url == DEFAULT_URL else url)


# --- the overview ------------------------------------------------------------------


@dataclass(frozen=True)
class StudyGroup:
    """Studies shown together: a nightly spec's studies, or one study on its own."""

    name: str
    nightly: bool
    studies: list[StudySummary] = field(default_factory=list)


def group_studies(summaries: Sequence[StudySummary]) -> list[StudyGroup]:
    """Nightly studies grouped under their spec (newest first), other studies alone.

    A study belongs to a group when it has the user attribute ``tuner.spec_name``.
    Groups come in order of their latest update, newest first.
    """
    groups: dict[str, StudyGroup] = {}
    for s in summaries:
        spec_name = s.user_attrs.get(SPEC_NAME_ATTR)
        if spec_name:
            key = f"spec:{spec_name}"
            if key not in groups:
                groups[key] = StudyGroup(name=str(spec_name), nightly=True)
        else:
            key = f"study:{s.name}"
            groups[key] = StudyGroup(name=s.name, nightly=False)
        groups[key].studies.append(s)
    for g in groups.values():
        g.studies.sort(key=_stamp, reverse=True)
    return sorted(groups.values(), key=lambda g: max(_stamp(s) for s in g.studies), reverse=True)


def _stamp(s: StudySummary) -> float:
    return s.last_update.timestamp() if s.last_update else 0.0


def overview_rows(
    summaries: Sequence[StudySummary], best: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """One row per study: state, trials by state, best values, last update."""
    rows = []
    for s in summaries:
        c = s.counts
        best_values = best.get(s.name, {})
        rows.append(
            {
                "study": s.name,
                "state": "running" if s.is_running else "finished",
                "complete": c.get("COMPLETE", 0),
                "stopped early": c.get("PRUNED", 0),
                "failed": c.get("FAIL", 0),
                "running": c.get("RUNNING", 0) + c.get("WAITING", 0),
                "best": ", ".join(
                    f"{name} {show_metric(name, best_values[name])}"
                    for name in s.objectives
                    if name in best_values
                )
                or "-",
                "objectives": ", ".join(
                    f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in s.objectives.items()
                ),
                "last update": s.last_update,
            }
        )
    return rows


# --- the study page ----------------------------------------------------------------


@dataclass(frozen=True)
class StudyPage:
    """Everything the study page draws that does not depend on the viewer's choices.

    The front and the hover texts are computed at once (the first view needs them);
    histories, curves and the table on first use, since each belongs to one tab.
    ``hover.rows[i]`` belongs to ``info.records[i]``.
    """

    name: str
    objectives: dict[str, str]
    constraints: list[Bound]
    records: list[TrialRecord]
    counts: dict[str, int]
    info: FrontInfo
    hover: Hover

    def record(self, number: int) -> TrialRecord | None:
        for r in self.records:
            if r.number == number:
                return r
        return None

    @functools.cached_property
    def hypervolume(self) -> HypervolumeHistory:
        return hypervolume_history(self.records, self.objectives)

    @functools.cached_property
    def histories(self) -> dict[str, ObjectiveHistory]:
        return {o: objective_history(self.records, self.objectives, o) for o in self.objectives}

    @functools.cached_property
    def curves(self) -> Curves:
        return learning_curves(self.records, highlight=self.info.front_numbers)

    @functools.cached_property
    def table(self) -> list[dict[str, Any]]:
        return table_rows(self.records, self.objectives, front=self.info.front_numbers)


def study_page_data(
    name: str,
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    constraints: Sequence[Bound] = (),
) -> StudyPage:
    """The study page's records: the front and hover texts now, the rest on first use."""
    info = front_info(records, objectives)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    return StudyPage(
        name=name,
        objectives=dict(objectives),
        constraints=list(constraints),
        records=list(records),
        counts=counts,
        info=info,
        hover=hover(info.records, objectives),
    )

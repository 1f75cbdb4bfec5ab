"""The Pareto front and the deployment budget: which trials are on the front, which fit.

Plain records and arrays; ``tuner.dashboard._figures`` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tuner.storage import (
    Bound,
    TrialRecord,
    bounds_from_spec,
    latency_p90,
    metric_unit,
    metric_value,
    pareto_mask,
    precision,
    rank,
    show_metric,
    show_param,
    sparsity_kind,
)
from tuner.storage.keys import SPEC_ATTR


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
        for m in ("test_accuracy", latency_p90(objectives), "sparsity")
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


# How a trial was compressed, as the front draws it: one marker shape each.
COMPRESSION_SHAPES: dict[str, str] = {
    "float": "circle",
    "int8": "diamond",
    "float8": "star",
    "structured": "square",
    "structured + int8": "triangle-up",
    "structured + float8": "pentagon",
}


def compression_kind(record: TrialRecord) -> str:
    """``float``, ``int8``, ``float8``, ``structured``, ``structured + int8`` or ``structured
    + float8``: what the shipped model is, read from what the trial recorded (a setting fixed
    in the spec is no parameter). Unstructured sparsity only zeroes weights, so it reads as
    the model it left.
    """
    kind = precision(record.metrics)
    if sparsity_kind(record.params, record.metrics)[0] == "structured":
        return "structured" if kind == "float" else f"structured + {kind}"
    return kind


def compression_kinds(info: FrontInfo) -> np.ndarray:
    """:func:`compression_kind` of every row of ``info``."""
    return np.array([compression_kind(r) for r in info.records], dtype=object)


def drawn_kinds(info: FrontInfo, rows: np.ndarray, kinds: np.ndarray | None = None) -> list[str]:
    """The compression kinds the drawn ``rows`` show by shape, in legend order: a trial
    that breaks a constraint is drawn as a cross whatever its kind."""
    kinds = compression_kinds(info) if kinds is None else kinds
    present = set(kinds[rows[info.feasible[rows]]])
    return [k for k in COMPRESSION_SHAPES if k in present]


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


@dataclass(frozen=True)
class BudgetField:
    """One input of the deployment budget: a maximum for a minimized objective, else a minimum.

    The viewer types the limit in ``unit``; ``scale`` turns a stored value into it.
    """

    metric: str
    side: str
    label: str
    scale: float
    step: float


def budget_fields(info: FrontInfo) -> list[BudgetField]:
    """The budget's inputs, one per objective, with steps at the scale of the study's values."""
    out = []
    for i, (metric, direction) in enumerate(info.objectives.items()):
        unit, scale = budget_unit(metric)
        shown = info.values[:, i] * scale if len(info) else np.empty(0)
        typical = float(np.median(shown)) if len(shown) else None
        side = "min" if direction == "maximize" else "max"
        label = f"{side} {metric} ({unit})" if unit else f"{side} {metric}"
        out.append(BudgetField(metric, side, label, scale, budget_step(metric, typical)))
    return out


def front_line(
    front: Sequence[TrialRecord], x: str, y: str, objectives: Mapping[str, str]
) -> list[TrialRecord]:
    """The trials of ``front`` that are on the front of ``x`` and ``y`` alone, in order of
    ``x``: the staircase drawn for the study."""
    if not front:
        return []
    values = np.array([[r.values[x], r.values[y]] for r in front], dtype=float)
    mask = pareto_mask(values, [objectives[x], objectives[y]])
    return sorted((r for r, keep in zip(front, mask) if keep), key=lambda r: r.values[x])

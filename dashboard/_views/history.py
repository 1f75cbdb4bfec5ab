"""How a study went: objectives and hypervolume by trial, learning curves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tuner.storage import TrialRecord, hypervolume, reference_past_worst

from .front import complete_records


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


@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume of the feasible front after each complete trial.

    Objectives are scaled so that the ideal point (best value of each objective
    seen) is 0 and the reference point (a tenth past the worst value seen, unless given)
    is 1; the hypervolume is the share of that box the front dominates, between 0 and 1.
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

    The reference point is fixed for the whole history: ``reference`` if given, else a
    tenth of each objective's range past its worst value over the study's feasible trials
    (at the worst value itself, a front point worst on one objective would add nothing).
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
        ref = reference_past_worst(ideal, v.max(axis=0))
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
        first = other + sample_records(stopped, max(0, limit - len(other)), seed)
    rest = sample_records(rest, max(0, limit - len(first)), seed)
    chosen = sorted(first + rest, key=lambda r: r.number)
    return Curves(
        numbers=[r.number for r in chosen],
        states=[r.state for r in chosen],
        curves=[list(r.curve) for r in chosen],
        n_with_curve=len(with_curve),
        n_stopped=sum(1 for r in with_curve if r.state == "PRUNED"),
    )


def sample_records(items: list[TrialRecord], k: int, seed: int) -> list[TrialRecord]:
    if len(items) <= k:
        return items
    idx = np.random.default_rng(seed).choice(len(items), size=k, replace=False)
    return [items[i] for i in sorted(idx)]

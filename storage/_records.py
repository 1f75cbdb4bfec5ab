"""Plain records of studies and trials, read from the store without changing it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import optuna

from ._errors import StoreError
from .keys import FINISHED


@dataclass(frozen=True)
class TrialRecord:
    """One trial as people read it: params, objective values and every metric."""

    number: int
    state: str
    params: dict[str, Any]
    values: dict[str, float]
    metrics: dict[str, Any]
    datetime_start: datetime | None
    datetime_complete: datetime | None
    feasible: bool = True
    error: str | None = None
    curve: list[float] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.datetime_start is None or self.datetime_complete is None:
            return None
        return (self.datetime_complete - self.datetime_start).total_seconds()


@dataclass(frozen=True)
class StudySummary:
    """One study: its objectives, how many trials in each state, and when it last moved."""

    name: str
    objectives: dict[str, str]
    counts: dict[str, int]
    user_attrs: dict[str, Any]
    last_update: datetime | None

    @property
    def n_finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED)

    @property
    def is_running(self) -> bool:
        return self.counts.get("RUNNING", 0) > 0 or self.counts.get("WAITING", 0) > 0


def study_objectives(study: optuna.Study) -> dict[str, str]:
    """Objective names (as set with ``set_metric_names``) mapped to their direction."""
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    return {
        name: "maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize"
        for name, d in zip(names, study.directions)
    }


def load_study_readonly(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError as exc:
        known = sorted(s.study_name for s in storage.get_all_studies())
        hint = (
            f"; studies in this store: {', '.join(known)}" if known else "; the store has no study"
        )
        raise StoreError(f"no study named {name!r}{hint}") from exc


def to_record(trial: optuna.trial.FrozenTrial, objective_names: Sequence[str]) -> TrialRecord:
    values: dict[str, float] = {}
    if trial.values is not None:
        values = {n: float(v) for n, v in zip(objective_names, trial.values)}
    attrs = dict(trial.user_attrs)
    curve = attrs.pop("curve", None) or []
    error = attrs.pop("error", None) or trial.system_attrs.get("fail_reason")
    feasible = bool(attrs.get("feasible", True))
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        values=values,
        metrics=attrs,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        feasible=feasible,
        error=error,
        curve=[float(x) for x in curve],
    )


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n trials x k objectives)."""
    n = values.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    v = values * signs  # everything minimized from here on
    order = np.lexsort(v.T[::-1])
    v_sorted = v[order]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        row = v_sorted[i]
        later = v_sorted[i + 1 :]
        dominated = np.all(row <= later, axis=1) & np.any(row < later, axis=1)
        keep[i + 1 :] &= ~dominated
    # Exact duplicates of a front point stay on the front.
    mask = np.zeros(n, dtype=bool)
    mask[order] = keep
    return mask


def pareto_front(
    records: Sequence[TrialRecord], objectives: Mapping[str, str]
) -> list[TrialRecord]:
    """Complete, feasible, non-dominated trials, best first by the first objective."""
    names = list(objectives)
    pool = [
        r
        for r in records
        if r.state == "COMPLETE"
        and r.feasible
        and all(n in r.values and math.isfinite(r.values[n]) for n in names)
    ]
    if not pool:
        return []
    values = np.array([[r.values[n] for n in names] for r in pool], dtype=float)
    mask = pareto_mask(values, [objectives[n] for n in names])
    front = [r for r, m in zip(pool, mask) if m]
    first = names[0]
    front.sort(key=lambda r: r.values[first], reverse=objectives[first] == "maximize")
    return front


# A reference point taken from the trials themselves sits this share of each objective's
# range past its worst value: at the worst value itself, a front point that is the worst on
# one objective would add nothing to the hypervolume.
REFERENCE_MARGIN = 0.1


def reference_past_worst(best: np.ndarray, worst: np.ndarray) -> np.ndarray:
    """The reference point a tenth of each objective's range past ``worst`` (both given
    minimized, one value per objective)."""
    return worst + REFERENCE_MARGIN * (worst - best)


def hypervolume(points: np.ndarray, directions: Sequence[str], reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` up to ``reference`` (Optuna's exact algorithm)."""
    from ._optuna import compute_hypervolume

    if len(points) == 0:
        return 0.0
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    v = np.asarray(points, dtype=float) * signs
    ref = np.asarray(reference, dtype=float) * signs
    inside = np.all(v < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(compute_hypervolume(v[inside], ref, assume_pareto=False))

"""Which parameters explain each objective."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuner.storage import TrialRecord

from .front import complete_records
from .history import sample_records


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
    pool = sample_records(pool, max_trials, seed)
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

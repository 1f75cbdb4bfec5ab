"""Bounds on metrics, and the best trial within them.

One :class:`Bound` serves a spec's constraints (``constraints: {latency_ms: {max: 2}}``),
``tuner pick --where "latency_ms<=2"``, the nightly report's checks and the
dashboard's deployment budget. :func:`best_within` is what "the trial to ship" means
everywhere: among complete trials that meet the study's constraints and every bound,
the best on the first maximized objective (e.g. the most accurate), ties going to the
better value of the other objectives in order, then to the lower trial number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._format import show_metric

if TYPE_CHECKING:
    from ._records import TrialRecord


@dataclass(frozen=True)
class Bound:
    """``min <= metric <= max``; either side may be open.

    ``strict`` makes both sides strict (``<``, ``>``), as ``--where "latency_ms<2"``
    asks. ``text`` is the bound as a person typed it, for messages about it.

    Example:
        >>> Bound("latency_ms", max=2.0).holds(1.5)
        True
    """

    metric: str
    min: float | None = None
    max: float | None = None
    strict: bool = False
    text: str = field(default="", compare=False)

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` is within the bound; no value, NaN or infinity never is."""
        if value is None or not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.strict else value < self.min):
            return False
        return not (
            self.max is not None and (value >= self.max if self.strict else value > self.max)
        )

    def mask(self, values: np.ndarray) -> np.ndarray:
        """:meth:`holds` for each of ``values`` at once."""
        values = np.asarray(values, dtype=float)
        ok = np.isfinite(values)
        if self.min is not None:
            ok &= values > self.min if self.strict else values >= self.min
        if self.max is not None:
            ok &= values < self.max if self.strict else values <= self.max
        return ok

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound, in the metric's unit; 0 or less inside.

        What Optuna's constraints take (a trial is feasible when every violation is
        ``<= 0``); a value on a strict bound has violation 0 but does not hold.
        """
        worst = -math.inf
        if self.max is not None:
            worst = max(worst, value - self.max)
        if self.min is not None:
            worst = max(worst, self.min - value)
        return worst

    def shortfall(self, value: float) -> float:
        """How far ``value`` is outside the bound, relative to it (0 when it holds)."""
        if self.holds(value):
            return 0.0
        edge = self.max if self.max is not None and value >= self.max else self.min
        if edge is None:
            edge = self.max if self.max is not None else 0.0
        return abs(value - edge) / max(abs(edge), 1e-12)

    @property
    def op(self) -> str:
        """The comparison of a one-sided bound: ``<=``, ``<``, ``>=`` or ``>``."""
        if self.max is not None:
            return "<" if self.strict else "<="
        return ">" if self.strict else ">="

    def __str__(self) -> str:
        """Compact, as ``--where`` takes it: ``latency_ms<=2``, ``0.5<=sparsity<=0.9``."""
        if self.min is not None and self.max is not None:
            op = "<" if self.strict else "<="
            return f"{self.min:g}{op}{self.metric}{op}{self.max:g}"
        bound = self.max if self.max is not None else self.min
        return f"{self.metric}{self.op}{bound:g}"

    def describe(self) -> str:
        """For people, in the metric's unit: ``latency_ms ≤ 2.000 ms``."""
        le = "<" if self.strict else "≤"
        ge = ">" if self.strict else "≥"
        if self.min is not None and self.max is not None:
            low, high = show_metric(self.metric, self.min), show_metric(self.metric, self.max)
            return f"{low} {le} {self.metric} {le} {high}"
        if self.min is not None:
            return f"{self.metric} {ge} {show_metric(self.metric, self.min)}"
        return f"{self.metric} {le} {show_metric(self.metric, self.max)}"


def metric_value(record: TrialRecord, metric: str) -> float | None:
    """A trial's finite number for ``metric``: an objective value, else a recorded metric."""
    value = record.values.get(metric, record.metrics.get(metric))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def within(record: TrialRecord, bounds: Iterable[Bound]) -> bool:
    """Whether ``record`` has a value within every one of ``bounds``."""
    return all(b.holds(metric_value(record, b.metric)) for b in bounds)


def default_target(objectives: Mapping[str, str]) -> tuple[str, str]:
    """What "best" ranks by: the first maximized objective, else the first objective."""
    for name, direction in objectives.items():
        if direction == "maximize":
            return name, direction
    name = next(iter(objectives))
    return name, objectives[name]


def rank(
    records: Iterable[TrialRecord],
    objectives: Mapping[str, str],
    *,
    target: str | None = None,
    direction: str | None = None,
) -> list[TrialRecord]:
    """``records`` that have a value for ``target``, best first.

    Best on ``target`` (by default :func:`default_target`), ties to the better value of
    each objective in order (a trial without one last), then to the lower trial number;
    so the first is on the Pareto front whenever the pool is cut by objectives alone.
    """
    if target is None:
        target, default = default_target(objectives)
        direction = direction or default
    sign = -1.0 if (direction or objectives.get(target, "maximize")) == "maximize" else 1.0
    signs = [(name, -1.0 if d == "maximize" else 1.0) for name, d in objectives.items()]

    def key(r: TrialRecord) -> tuple[float, ...]:
        out = [sign * (metric_value(r, target) or 0.0)]
        for name, s in signs:
            value = metric_value(r, name)
            out.append(math.inf if value is None else s * value)
        out.append(float(r.number))
        return tuple(out)

    return sorted((r for r in records if metric_value(r, target) is not None), key=key)


def feasible_complete(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Complete trials that meet the study's constraints: the pool every pick draws from."""
    return [r for r in records if r.state == "COMPLETE" and r.feasible]


def best_within(
    records: Iterable[TrialRecord],
    objectives: Mapping[str, str],
    bounds: Sequence[Bound] = (),
    *,
    target: str | None = None,
    direction: str | None = None,
) -> TrialRecord | None:
    """The trial to ship: the best complete feasible trial within every one of ``bounds``.

    Best as :func:`rank` orders; None when no trial fits.

    Example:
        >>> best = best_within(records, {"accuracy": "maximize", "size_bytes": "minimize"},
        ...                    [Bound("size_bytes", max=50_000)])
    """
    pool = [r for r in feasible_complete(records) if within(r, bounds)]
    ranked = rank(pool, objectives, target=target, direction=direction)
    return ranked[0] if ranked else None


def bounds_from_spec(spec: Mapping[str, Any] | None) -> list[Bound]:
    """The constraints of a spec as stored with its study (``{"constraints": {m: {max: x}}}``)."""
    if not isinstance(spec, Mapping):
        return []
    out = []
    for metric, rule in (spec.get("constraints") or {}).items():
        if isinstance(rule, Mapping):
            low, high = rule.get("min"), rule.get("max")
            out.append(
                Bound(
                    str(metric),
                    min=None if low is None else float(low),
                    max=None if high is None else float(high),
                )
            )
    return out

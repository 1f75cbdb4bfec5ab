"""Each parameter against one objective: where a parameter's good values lie.

The slice view of a study: one panel per parameter, one point per complete trial.
Plain records and arrays; ``tuner.dashboard._figures`` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.storage import show_param

from .front import FrontInfo

# How a parameter's axis is drawn.
LINEAR, LOG, CATEGORY = "linear", "log", "category"

# Colourings offered besides a categorical parameter's values.
BY_FRONT = "Pareto front"
BY_NUMBER = "trial number"

# A categorical parameter colours the points when it has at most this many values.
MAX_COLOURS = 8


@dataclass(frozen=True)
class ParamSlice:
    """One parameter's panel: the rows of a :class:`FrontInfo` that sampled it, and where
    each sits on the axis.

    ``x[i]`` belongs to ``rows[i]``: the value itself on a linear or log axis; on a
    category axis the position of its label in ``labels`` (0, 1, ...), spread by less
    than a quarter either way so that trials with one value do not hide each other.
    """

    param: str
    scale: str
    rows: np.ndarray
    x: np.ndarray
    labels: list[str]
    n_trials: int

    @property
    def conditional(self) -> bool:
        """Whether some trials did not sample the parameter (``when:`` in the spec)."""
        return len(self.rows) < self.n_trials


@dataclass(frozen=True)
class Axis:
    """How a parameter's axis is drawn, and a categorical's values in the spec's order."""

    scale: str
    choices: tuple[str, ...] = ()


def param_axes(spec: Mapping[str, Any] | None) -> dict[str, Axis]:
    """How each searched parameter of a stored spec is drawn: ``log`` for ``log: true``,
    ``category`` for a categorical (numbers among its choices included), else ``linear``."""
    space = spec.get("search_space") if isinstance(spec, Mapping) else None
    if not isinstance(space, Mapping):
        return {}
    out = {}
    for name, rule in space.items():
        if not isinstance(rule, Mapping):
            continue  # a fixed value, never sampled
        kind = rule.get("type")
        if kind == "categorical":
            choices = rule.get("choices")
            listed = choices if isinstance(choices, list) else []
            out[str(name)] = Axis(CATEGORY, tuple(show_param(c) for c in listed))
        elif kind in ("float", "int"):
            out[str(name)] = Axis(LOG if rule.get("log") else LINEAR)
    return out


def param_slices(
    info: FrontInfo, rows: np.ndarray, axes: Mapping[str, Axis] | None = None
) -> list[ParamSlice]:
    """A panel for each parameter that varies among the drawn ``rows``, by name.

    ``axes`` comes from :func:`param_axes`; a parameter it does not name (a study
    made without a spec) is a category when any value is not a number, and drawn on
    a log axis when its values are positive and span two orders of magnitude.
    """
    axes = axes or {}
    names = sorted({p for i in rows for p in info.records[i].params})
    out = []
    for name in names:
        mine = np.array([i for i in rows if name in info.records[i].params], dtype=int)
        values = [info.records[i].params[name] for i in mine]
        if len({show_param(v) for v in values}) < 2:
            continue  # the same everywhere: nothing to read
        axis = axes.get(name) or Axis(_guess_scale(values))
        if axis.scale != CATEGORY and _guess_scale(values) == CATEGORY:
            axis = Axis(CATEGORY)  # stored as text, whatever the spec said
        scale = axis.scale
        if scale == CATEGORY:
            labels = _labels(values, axis.choices)
            where = {label: k for k, label in enumerate(labels)}
            x = np.array([where[show_param(v)] for v in values], dtype=float)
            x += _spread([info.records[i].number for i in mine])
        else:
            labels = []
            x = np.array([float(v) for v in values], dtype=float)
            if scale == LOG and (x <= 0).any():
                scale = LINEAR
        out.append(ParamSlice(name, scale, mine, x, labels, len(rows)))
    return out


def colourings(
    info: FrontInfo, rows: np.ndarray, axes: Mapping[str, Axis] | None = None
) -> list[str]:
    """What the points can be coloured by: the front, the trial number, and each
    categorical parameter with 2 to ``MAX_COLOURS`` values among the drawn ``rows``
    (``quantize``, ``prune_structure``, ``optimizer``; a spec's categorical of numbers,
    or whole numbers taking a few values, too)."""
    out = [BY_FRONT, BY_NUMBER]
    names = sorted({p for i in rows for p in info.records[i].params})
    for name in names:
        values = [info.records[i].params[name] for i in rows if name in info.records[i].params]
        spec_says = (axes or {}).get(name)
        categorical = spec_says is not None and spec_says.scale == CATEGORY
        if not categorical and _guess_scale(values) != CATEGORY and not _few_numbers(values):
            continue
        if 2 <= len({show_param(v) for v in values}) <= MAX_COLOURS:
            out.append(name)
    return out


def colour_groups(
    info: FrontInfo, rows: np.ndarray, param: str, axes: Mapping[str, Axis] | None = None
) -> dict[str, np.ndarray]:
    """The drawn ``rows`` by their value of ``param`` (``not set`` where not sampled),
    in the order of :func:`param_slices`' labels."""
    values = [info.records[i].params.get(param) for i in rows]
    axis = (axes or {}).get(param)
    labels = _labels([v for v in values if v is not None], axis.choices if axis else ())
    if any(v is None for v in values):
        labels.append(show_param(None))
    shown = np.array([show_param(v) for v in values], dtype=object)
    return {label: rows[shown == label] for label in labels if (shown == label).any()}


def _guess_scale(values: Sequence[Any]) -> str:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return CATEGORY
    low, high = min(values), max(values)
    if low > 0 and high / low >= 100:
        return LOG
    return LINEAR


def _few_numbers(values: Sequence[Any]) -> bool:
    """Whole numbers taking a few values (a batch size from a list, say)."""
    return all(float(v).is_integer() for v in values) and len(set(values)) <= MAX_COLOURS


def _labels(values: Sequence[Any], choices: Sequence[str] = ()) -> list[str]:
    """Distinct values as shown: in the spec's order of ``choices``, then numbers in
    numeric order and others by name."""
    distinct = {show_param(v): v for v in values}
    if choices:
        listed = [c for c in choices if c in distinct]
        return listed + _labels([v for k, v in distinct.items() if k not in choices])
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return [label for label, _ in sorted(distinct.items(), key=lambda kv: float(kv[1]))]
    return sorted(distinct)


def _spread(numbers: Sequence[int]) -> np.ndarray:
    """A fixed offset per trial number within ±0.22: the same place on every redraw."""
    golden = (math.sqrt(5) - 1) / 2
    return np.array([((n * golden) % 1.0 - 0.5) * 0.44 for n in numbers], dtype=float)

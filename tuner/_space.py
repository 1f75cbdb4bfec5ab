"""The search space compiled to Optuna suggestions, conditions included."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from ._spec import ParamSpec


def suggestion_order(params: Mapping[str, ParamSpec]) -> list[str]:
    """Parameters ordered so that every ``when`` condition is decided before it is read."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for other in params[name].when:
            visit(other)
        order.append(name)

    for name in params:
        visit(name)
    return order


def _active(p: ParamSpec, chosen: Mapping[str, Any]) -> bool:
    return all(other in chosen and chosen[other] in values for other, values in p.when.items())


def suggest(trial: optuna.Trial, params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Sample every active parameter; fixed values are passed through without sampling."""
    chosen: dict[str, Any] = {}
    for name in suggestion_order(params):
        p = params[name]
        if not _active(p, chosen):
            continue
        if p.type == "fixed":
            chosen[name] = p.value
        elif p.type == "categorical":
            chosen[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.type == "int":
            chosen[name] = trial.suggest_int(
                name, int(p.low or 0), int(p.high or 0), step=int(p.step or 1), log=p.log
            )
        else:
            chosen[name] = trial.suggest_float(
                name, float(p.low or 0), float(p.high or 0), step=p.step, log=p.log
            )
    return chosen


def center(params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """The middle of the search space, for the first trial: each range at its midpoint
    (geometric on a log scale, on the step grid, halves rounded up), each categorical at
    its first choice. Parameters whose ``when`` condition the middle fails are left out;
    fixed ones too."""
    chosen: dict[str, Any] = {}
    for name in suggestion_order(params):
        p = params[name]
        if not _active(p, chosen):
            continue
        if p.type == "fixed":
            chosen[name] = p.value  # kept while walking: a condition may read it
        elif p.type == "categorical":
            chosen[name] = p.choices[0]
        else:
            low, high = float(p.low or 0), float(p.high or 0)
            middle = math.sqrt(low * high) if p.log else (low + high) / 2
            if p.step:
                middle = low + math.floor((middle - low) / p.step + 0.5) * p.step
            middle = min(max(middle, low), high)
            chosen[name] = math.floor(middle + 0.5) if p.type == "int" else middle
    return {n: v for n, v in chosen.items() if not params[n].is_fixed}


def fixed_params(params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    return {n: p.value for n, p in params.items() if p.type == "fixed" and not p.when}

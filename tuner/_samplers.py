"""Samplers by name.

Constraints reach the samplers that honour them (TPE, NSGA-II, GP) through
``trial.set_constraint``, which the objective calls once a trial is measured.
"""

from __future__ import annotations

import warnings

import optuna

from ._spec import StudySpec


def build_sampler(spec: StudySpec, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler the spec names; ``seed_offset`` keeps parallel workers from sampling alike."""
    seed = None if spec.sampler.seed is None else spec.sampler.seed + seed_offset
    name = spec.sampler.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True
            )
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            grid = {n: list(p.domain_values()) for n, p in spec.params.items() if p.type != "fixed"}
            return optuna.samplers.GridSampler(grid, seed=seed)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
    raise AssertionError(f"unvalidated sampler {name!r}")

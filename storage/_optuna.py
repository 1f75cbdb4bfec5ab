"""The parts of Optuna that are not its public API, and that tuner relies on.

Every other module reaches Optuna's internals through this one, so an Optuna upgrade
that moves one of them breaks here, by name (``tests/storage/test_optuna_internals.py``
checks each against the installed Optuna). Each has no public equivalent in the
version below; drop the accessor once Optuna offers one.

Checked against Optuna ``CHECKED_AGAINST``:

- ``Trial._trial_id`` / ``FrozenTrial._trial_id``: the storage's id of a trial, which
  every storage call takes (:func:`trial_id`).
- ``Study._storage``: the storage a study object writes to (:func:`study_storage`).
- ``_CachedStorage._backend``: the RDB storage under Optuna's caching wrapper, which
  ``optuna.load_study(storage=URL)`` puts around it (:func:`rdb_backend`).
- ``Study._thread_local.in_optimize_loop``: workers run ``study.optimize``'s loop split
  in two (trials are created under the budget lock); samplers that end a study call
  ``study.stop()``, which Optuna accepts only inside that loop (:func:`enter_optimize_loop`).
- ``Study._stop_flag``: whether ``study.stop()`` was called (:func:`stop_requested`).
- ``optuna._hypervolume.compute_hypervolume`` (:func:`compute_hypervolume`).
- ``optuna.storages._rdb.models``: the tables of Optuna's RDB schema, read in bulk by
  the store (:func:`rdb_models`).
- ``RDBStorage``'s private methods ``_get_trials``, ``_set_trial_param``,
  ``_create_new_trial``, ``_get_best_trial_id`` and ``_get_stale_trial_ids``, which
  :class:`~tuner.storage._frozen.FastRDBStorage` overrides or wraps.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import optuna

CHECKED_AGAINST = "5.0.0"

OVERRIDDEN_METHODS = (
    "_get_trials",
    "_set_trial_param",
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of ``trial`` (not its number within the study)."""
    return int(trial._trial_id)


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes."""
    return study._storage


def rdb_backend(storage: Any) -> Any:
    """``storage`` itself, or the storage under Optuna's caching wrapper."""
    return getattr(storage, "_backend", storage)


def enter_optimize_loop(study: optuna.Study) -> None:
    """Let ``study.stop()`` be called from this thread, as inside ``study.optimize``."""
    study._thread_local.in_optimize_loop = True


def stop_requested(study: optuna.Study) -> bool:
    """Whether something (e.g. a used-up grid sampler) called ``study.stop()``."""
    return bool(getattr(study, "_stop_flag", False))


def compute_hypervolume(
    points: np.ndarray, reference: Sequence[float] | np.ndarray, *, assume_pareto: bool = False
) -> float:
    """Hypervolume of ``points`` (all minimized) up to ``reference``."""
    from optuna._hypervolume import compute_hypervolume as compute

    return float(
        compute(
            np.asarray(points, dtype=float),
            np.asarray(reference, dtype=float),
            assume_pareto=assume_pareto,
        )
    )


def rdb_models() -> ModuleType:
    """Optuna's ORM models of the RDB schema (its tables: ``models.TrialModel.__table__``)."""
    from optuna.storages._rdb import models

    return models

"""The store's readers: studies, trials, counts and attributes as plain data.

On tuner's store each is one method of the store (bulk SQL on Optuna's tables, see
``_fast``), ridden through a short outage like every other store call. Any other Optuna
storage (in memory, journal, a plain ``RDBStorage``) is read through Optuna's own
objects, with the same results. Optuna's cached wrapper (the storage a loaded study
uses) is read through the store it wraps, which it writes through to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import optuna

from ._fast import BulkReads
from ._optuna import rdb_backend
from ._records import StudySummary, TrialRecord, load_study_readonly, study_objectives, to_record


def _store(storage: Any) -> BulkReads | None:
    backend = rdb_backend(storage)
    return backend if isinstance(backend, BulkReads) else None


def read_records(storage: optuna.storages.BaseStorage, name: str) -> list[TrialRecord]:
    """Every trial of study ``name`` as a plain record, in trial order.

    Args:
        storage: an opened store (``open_storage(url, read_only=True)``) or any Optuna
            storage.
        name: the study's name.

    Raises:
        StoreError: no study of that name, or the store cannot be read.
    """
    store = _store(storage)
    if store is not None:
        return store.read_records(name)
    study = load_study_readonly(storage, name)
    names = list(study_objectives(study))
    return [to_record(t, names) for t in study.get_trials(deepcopy=False)]


def read_studies(storage: optuna.storages.BaseStorage) -> list[StudySummary]:
    """Every study in the store with its objectives, counts by state and last update.

    Raises:
        StoreError: the store cannot be read.
    """
    store = _store(storage)
    if store is not None:
        return store.read_studies()
    out = []
    for s in storage.get_all_studies():
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = _by_state(trials)
        stamps = [t.datetime_complete or t.datetime_start for t in trials]
        last: datetime | None = max((x for x in stamps if x is not None), default=None)
        out.append(
            StudySummary(
                name=s.study_name,
                objectives=study_objectives(study),
                counts=counts,
                user_attrs=dict(s.user_attrs),
                last_update=last,
            )
        )
    return out


def read_best_values(storage: optuna.storages.BaseStorage) -> dict[str, dict[str, float]]:
    """The best value of each objective over the complete, feasible trials of each study.

    Returns ``{study name: {objective: best value}}``; a study without such a trial
    has an empty mapping.

    Raises:
        StoreError: the store cannot be read.
    """
    store = _store(storage)
    if store is not None:
        return store.read_best_values()
    return {
        s.name: _best_from_records(read_records(storage, s.name), s.objectives)
        for s in read_studies(storage)
    }


def _by_state(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    return dict(Counter(t.state.name for t in trials))


def _best_from_records(records: list[TrialRecord], objectives: dict[str, str]) -> dict[str, float]:
    best: dict[str, float] = {}
    for r in records:
        if r.state != "COMPLETE" or not r.feasible:
            continue
        for objective, direction in objectives.items():
            v = r.values.get(objective)
            if v is None:
                continue
            old = best.get(objective)
            if old is None or (v > old if direction == "maximize" else v < old):
                best[objective] = v
    return best


def count_states(
    storage: optuna.storages.BaseStorage, study: str | int, connection: Any = None
) -> dict[str, int]:
    """Trials of a study by state, counted in the database.

    Args:
        storage: an opened store or any Optuna storage.
        study: the study's name, or its id.
        connection: an open connection of the store to count on (one that holds the
            study's budget lock); the count then is not retried on its own.
    """
    study_id = storage.get_study_id_from_name(study) if isinstance(study, str) else study
    store = _store(storage)
    if store is None:
        return _by_state(storage.get_all_trials(study_id, deepcopy=False))
    if connection is not None:
        return store._count_states(study_id, connection)
    return store.count_states(study_id)


def read_trial_attr(
    storage: optuna.storages.BaseStorage, study_id: int, key: str, *, exclude: int
) -> list[tuple[int, Any]]:
    """``(trial number, value)`` of user attribute ``key`` for each trial of the study that
    has it, other than trial number ``exclude``."""
    store = _store(storage)
    if store is None:
        return [
            (t.number, t.user_attrs[key])
            for t in storage.get_all_trials(study_id, deepcopy=False)
            if key in t.user_attrs and t.number != exclude
        ]
    return store.read_trial_attr(study_id, key, exclude)


def beatless_running(
    storage: optuna.storages.BaseStorage, study_id: int, started_before: datetime
) -> list[int]:
    """Ids of the study's RUNNING trials that started before ``started_before`` and never
    recorded a heartbeat (empty for stores without heartbeats)."""
    store = _store(storage)
    return [] if store is None else store.beatless_running(study_id, started_before)

"""Nightly sweeps as the store records them: one study per night of a spec.

A night's study carries two user attributes: ``tuner.spec_name`` (the spec it
belongs to) and ``tuner.nightly`` (``date``, ``warm_started_from``, the
``reference_point`` its report used). These functions only read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import optuna

from ._readers import read_records
from ._records import TrialRecord, hypervolume, pareto_front, study_objectives
from .keys import NIGHTLY_ATTR, SPEC_NAME_ATTR


@dataclass(frozen=True)
class NightSummary:
    """One night of a spec: its study, how many trials finished, its front and hypervolume.

    ``hypervolume`` is None when no reference point is known (the night's report has
    not been written yet and none was given).
    """

    date: str
    study_name: str
    warm_started_from: str | None
    objectives: dict[str, str]
    n_finished: int
    hypervolume: float | None
    reference_point: dict[str, float] | None
    front: list[dict[str, float]] = field(default_factory=list)
    front_trials: list[TrialRecord] = field(default_factory=list)


def night_studies(storage: optuna.storages.BaseStorage, spec_name: str) -> list[tuple[str, str]]:
    """``(date, study_name)`` of every night of ``spec_name`` in the store, oldest first."""
    out = []
    for s in storage.get_all_studies():
        attrs = s.user_attrs
        night = attrs.get(NIGHTLY_ATTR)
        if attrs.get(SPEC_NAME_ATTR) == spec_name and isinstance(night, Mapping):
            date = night.get("date")
            if isinstance(date, str):
                out.append((date, s.study_name))
    return sorted(out)


def previous_night(storage: optuna.storages.BaseStorage, spec_name: str, date: str) -> str | None:
    """The study of the most recent night of ``spec_name`` before ``date``, if any."""
    earlier = [name for d, name in night_studies(storage, spec_name) if d < date]
    return earlier[-1] if earlier else None


def night_hypervolume(
    front: list[TrialRecord], objectives: Mapping[str, str], reference: Mapping[str, float]
) -> float:
    """Hypervolume of ``front`` up to ``reference`` (one value per objective)."""
    names = list(objectives)
    if not front:
        return 0.0
    points = np.array([[r.values[n] for n in names] for r in front], dtype=float)
    return hypervolume(points, [objectives[n] for n in names], [reference[n] for n in names])


def nights(
    storage: optuna.storages.BaseStorage,
    spec_name: str,
    *,
    reference_point: Mapping[str, float] | None = None,
    last: int | None = None,
) -> list[NightSummary]:
    """Every night of ``spec_name`` (the ``last`` ones only, where given), oldest first,
    each with its front and hypervolume.

    All nights are measured against one reference point, so their hypervolumes
    compare: ``reference_point`` if given, else the one the latest night's report used.

    Example::

        for night in nights(open_storage(url, read_only=True), "digits-mlp"):
            print(night.date, night.hypervolume, len(night.front))
    """
    found = night_studies(storage, spec_name)
    if last is not None:
        found = found[-last:] if last > 0 else []
    loaded = []
    for date, name in found:
        study = optuna.load_study(study_name=name, storage=storage)
        loaded.append((date, name, study.user_attrs.get(NIGHTLY_ATTR) or {}, study))
    reference = dict(reference_point) if reference_point else None
    if reference is None:
        for _, _, night, _ in reversed(loaded):
            if isinstance(night.get("reference_point"), Mapping):
                reference = {k: float(v) for k, v in night["reference_point"].items()}
                break
    out = []
    for date, name, night, study in loaded:
        objectives = study_objectives(study)
        records = read_records(storage, name)
        front = pareto_front(records, objectives)
        hv = None
        if reference is not None and set(objectives) <= set(reference):
            hv = night_hypervolume(front, objectives, reference)
        out.append(
            NightSummary(
                date=date,
                study_name=name,
                warm_started_from=night.get("warm_started_from"),
                objectives=objectives,
                n_finished=sum(r.state in ("COMPLETE", "PRUNED") for r in records),
                hypervolume=hv,
                reference_point=reference,
                front=[dict(r.values) for r in front],
                front_trials=front,
            )
        )
    return out

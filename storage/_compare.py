"""Studies side by side: their fronts in one box, and which study holds the joint front.

Two studies of the same task (a CNN and a Transformer, the torch runtime and ONNX
Runtime, last month's spec and this one's) answer "which trade-off is better" only on
common ground: the objectives both have, each the same way round, measured against one
box. Here the box spans, for each objective, from the best value over every study's
feasible trials to a tenth of that range past the worst (so that a front point that is the
worst on one objective still counts), each study's front gets its share of that box (its
hypervolume), and the joint front, the trials no trial of any study dominates, is counted
by study.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._format import show_metric
from ._readers import read_records
from ._records import (
    TrialRecord,
    hypervolume,
    load_study_readonly,
    pareto_mask,
    reference_past_worst,
    study_objectives,
)


@dataclass(frozen=True)
class StudyFront:
    """One study of a comparison: its feasible complete trials and its front on the common
    objectives, its share of the common box, and how many of its trials are on the joint
    front."""

    name: str
    trials: list[TrialRecord]
    front: list[TrialRecord]
    hypervolume: float
    joint: list[int]  # its trials on the joint front


@dataclass(frozen=True)
class Comparison:
    """Studies compared on the objectives they share (``objectives``, the first study's
    order); ``left_out`` names the objectives some studies lack or turn the other way."""

    objectives: dict[str, str]
    studies: list[StudyFront]
    left_out: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per study: its trials compared (complete, within the constraints, with a
        value for every shared objective), front, share of the joint front, hypervolume, and
        the best value of each objective on its front."""
        joint = sum(len(s.joint) for s in self.studies)
        rows = []
        for s in self.studies:
            row: dict[str, Any] = {
                "study": s.name,
                "trials compared": len(s.trials),
                "front": len(s.front),
                "on the joint front": f"{len(s.joint)} of {joint}" if joint else "-",
                "hypervolume": round(s.hypervolume, 4),
            }
            for name, direction in self.objectives.items():
                values = [r.values[name] for r in s.front]
                pick = max if direction == "maximize" else min
                row[f"best {name}"] = show_metric(name, pick(values)) if values else "-"
            rows.append(row)
        return rows


def _usable(record: TrialRecord, names: Sequence[str]) -> bool:
    return (
        record.state == "COMPLETE"
        and record.feasible
        and all(n in record.values and math.isfinite(record.values[n]) for n in names)
    )


def compare_fronts(
    studies: Mapping[str, tuple[Mapping[str, str], Sequence[TrialRecord]]],
) -> Comparison:
    """Compare ``studies`` (name -> (objectives, records)) on their common objectives."""
    directions = [dict(objectives) for objectives, _ in studies.values()]
    first = directions[0] if directions else {}
    common = {
        name: way for name, way in first.items() if all(d.get(name) == way for d in directions)
    }
    left_out = sorted({name for d in directions for name in d} - set(common))
    names = list(common)
    ways = [common[n] for n in names]
    pools = {
        study: [r for r in records if _usable(r, names)] for study, (_, records) in studies.items()
    }
    everything = [r for pool in pools.values() for r in pool]
    if len(names) < 2 or not everything:
        empty = [StudyFront(s, pools[s], [], 0.0, []) for s in studies]
        return Comparison(common, empty, left_out)
    # One box for all, each objective minimized and scaled to [0, 1] from its best value
    # over every study's trials to the reference a tenth past the worst; a study's
    # hypervolume is its share of the box.
    signs = np.array([-1.0 if w == "maximize" else 1.0 for w in ways])
    raw = np.array([[r.values[n] for n in names] for r in everything], dtype=float) * signs
    ideal = raw.min(axis=0)
    corner = reference_past_worst(ideal, raw.max(axis=0))
    span = np.where(corner > ideal, corner - ideal, 1.0)

    def scaled(pool: Sequence[TrialRecord]) -> np.ndarray:
        values = np.array([[r.values[n] for n in names] for r in pool], dtype=float)
        return (values.reshape(len(pool), len(names)) * signs - ideal) / span

    fronts = {}
    for study, pool in pools.items():
        mask = pareto_mask(np.array([[r.values[n] for n in names] for r in pool]), ways)
        fronts[study] = [r for r, keep in zip(pool, mask) if keep]
    # A trial off its own study's front is off the joint one: the fronts are enough.
    members = [(study, r) for study, front in fronts.items() for r in front]
    on_joint = pareto_mask(np.array([[r.values[n] for n in names] for _, r in members]), ways)
    out = []
    for study, front in fronts.items():
        share = hypervolume(scaled(front), ["minimize"] * len(names), [1.0] * len(names))
        joint = [r.number for (owner, r), keep in zip(members, on_joint) if keep and owner == study]
        out.append(StudyFront(study, pools[study], front, share, joint))
    return Comparison(common, out, left_out)


def compare_studies(storage: Any, names: Sequence[str]) -> Comparison:
    """Read ``names`` from ``storage`` and compare them (:func:`compare_fronts`).

    Raises:
        StoreError: a study is not in the store (the line lists those that are).
    """
    studies = {}
    for name in dict.fromkeys(names):
        study = load_study_readonly(storage, name)
        studies[name] = (study_objectives(study), read_records(storage, name))
    return compare_fronts(studies)

"""The overview: every study in the store, nightly ones grouped under their spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.storage import StudySummary, show_metric
from tuner.storage.keys import SPEC_NAME_ATTR


@dataclass(frozen=True)
class StudyGroup:
    """Studies shown together: a nightly spec's studies, or one study on its own."""

    name: str
    nightly: bool
    studies: list[StudySummary] = field(default_factory=list)


def group_studies(summaries: Sequence[StudySummary]) -> list[StudyGroup]:
    """Nightly studies grouped under their spec (newest first), other studies alone.

    A study belongs to a group when it has the user attribute ``tuner.spec_name``.
    Groups come in order of their latest update, newest first.
    """
    groups: dict[str, StudyGroup] = {}
    for s in summaries:
        spec_name = s.user_attrs.get(SPEC_NAME_ATTR)
        if spec_name:
            key = f"spec:{spec_name}"
            if key not in groups:
                groups[key] = StudyGroup(name=str(spec_name), nightly=True)
        else:
            key = f"study:{s.name}"
            groups[key] = StudyGroup(name=s.name, nightly=False)
        groups[key].studies.append(s)
    for g in groups.values():
        g.studies.sort(key=_stamp, reverse=True)
    return sorted(groups.values(), key=lambda g: max(_stamp(s) for s in g.studies), reverse=True)


def _stamp(s: StudySummary) -> float:
    return s.last_update.timestamp() if s.last_update else 0.0


def overview_rows(
    summaries: Sequence[StudySummary], best: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """One row per study: state, trials by state, best values, last update."""
    rows = []
    for s in summaries:
        c = s.counts
        best_values = best.get(s.name, {})
        rows.append(
            {
                "study": s.name,
                "state": "running" if s.is_running else "finished",
                "complete": c.get("COMPLETE", 0),
                "stopped early": c.get("PRUNED", 0),
                "failed": c.get("FAIL", 0),
                "running": c.get("RUNNING", 0) + c.get("WAITING", 0),
                "best": ", ".join(
                    f"{name} {show_metric(name, best_values[name])}"
                    for name in s.objectives
                    if name in best_values
                )
                or "-",
                "objectives": ", ".join(
                    f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in s.objectives.items()
                ),
                "last update": s.last_update,
            }
        )
    return rows

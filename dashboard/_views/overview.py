"""The overview: every study in the store, nightly ones grouped under their spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.storage import NightSummary, StudySummary, show_metric
from tuner.storage.keys import NIGHTLY_ATTR, SPEC_NAME_ATTR


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


@dataclass(frozen=True)
class NightTrend:
    """A nightly spec's nights, oldest first: each one's hypervolume against one reference
    point (so that they compare), the best value on its front of each maximized objective,
    and what its morning report judged."""

    spec_name: str
    dates: list[str]
    studies: list[str]
    finished: list[int]
    hypervolume: list[float | None]
    best: dict[str, list[float | None]]
    regressed: list[bool]
    retimed: list[bool]

    def change(self, index: int) -> float | None:
        """Night ``index``'s hypervolume over the night before's, less 1."""
        if index == 0:
            return None
        now, before = self.hypervolume[index], self.hypervolume[index - 1]
        if now is None or before is None or before <= 0:
            return None
        return now / before - 1.0


def night_trend(
    spec_name: str, nights: Sequence[NightSummary], summaries: Sequence[StudySummary]
) -> NightTrend:
    """The trend of ``nights`` (:func:`tuner.storage.nights`); ``summaries`` give each
    night's report (the ``tuner.nightly`` attribute: regressed, judged on re-timed fronts)."""
    reports = {s.name: s.user_attrs.get(NIGHTLY_ATTR) for s in summaries}
    objectives = nights[-1].objectives if nights else {}  # the spec as it is now
    maximized = [n for n, d in objectives.items() if d == "maximize"] or list(objectives)[:1]
    best: dict[str, list[float | None]] = {name: [] for name in maximized}
    for night in nights:
        for name in maximized:
            values = [v[name] for v in night.front if name in v]
            pick = max if objectives[name] == "maximize" else min
            best[name].append(pick(values) if values else None)

    def reported(night: NightSummary, key: str) -> bool:
        report = reports.get(night.study_name)
        return isinstance(report, Mapping) and bool(report.get(key))

    return NightTrend(
        spec_name=spec_name,
        dates=[n.date for n in nights],
        studies=[n.study_name for n in nights],
        finished=[n.n_finished for n in nights],
        hypervolume=[n.hypervolume for n in nights],
        best=best,
        regressed=[reported(n, "regressed") for n in nights],
        retimed=[reported(n, "retimed") for n in nights],
    )

"""A study page's records, computed once per read of the store and shared by its views."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tuner.storage import Bound, TrialRecord

from .front import FrontInfo, Hover, front_info, hover
from .history import (
    Curves,
    HypervolumeHistory,
    ObjectiveHistory,
    hypervolume_history,
    learning_curves,
    objective_history,
)
from .params import Axis
from .timeline import Timeline, timeline
from .trials import table_rows


@dataclass(frozen=True)
class StudyPage:
    """Everything the study page draws that does not depend on the viewer's choices.

    The front and the hover texts are computed at once (the first view needs them);
    histories, curves and the table on first use, since each belongs to one tab.
    ``hover.rows[i]`` belongs to ``info.records[i]``.
    """

    name: str
    objectives: dict[str, str]
    constraints: list[Bound]
    records: list[TrialRecord]
    counts: dict[str, int]
    info: FrontInfo
    hover: Hover
    axes: dict[str, Axis]

    def record(self, number: int) -> TrialRecord | None:
        for r in self.records:
            if r.number == number:
                return r
        return None

    @functools.cached_property
    def hypervolume(self) -> HypervolumeHistory:
        return hypervolume_history(self.records, self.objectives)

    @functools.cached_property
    def histories(self) -> dict[str, ObjectiveHistory]:
        return {o: objective_history(self.records, self.objectives, o) for o in self.objectives}

    @functools.cached_property
    def timeline(self) -> Timeline:
        return timeline(self.records, datetime.now())

    @functools.cached_property
    def curves(self) -> Curves:
        return learning_curves(self.records, highlight=self.info.front_numbers)

    @functools.cached_property
    def table(self) -> list[dict[str, Any]]:
        return table_rows(self.records, self.objectives, front=self.info.front_numbers)


def study_page_data(
    name: str,
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    constraints: Sequence[Bound] = (),
    *,
    axes: Mapping[str, Axis] | None = None,
) -> StudyPage:
    """The study page's records: the front and hover texts now, the rest on first use.

    ``axes`` says how each parameter's axis is drawn (``params.param_axes`` of the
    study's spec).
    """
    info = front_info(records, objectives)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    return StudyPage(
        name=name,
        objectives=dict(objectives),
        constraints=list(constraints),
        records=list(records),
        counts=counts,
        info=info,
        hover=hover(info.records, objectives),
        axes=dict(axes or {}),
    )

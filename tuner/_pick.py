"""Pick the trial to ship: the best one within a budget such as ``latency_ms<=2``."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._exceptions import SpecError
from .storage import Bound, TrialRecord, metric_value, rank, show_metric
from .storage._bounds import default_target, feasible_complete, within

_CLAUSE = re.compile(r"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|<|>)\s*(?P<bound>\S+)\s*$")
_EXAMPLE = 'e.g. --where "latency_ms<=2, size_bytes<=50000"'


def parse_where(text: str) -> list[Bound]:
    """Parse ``"latency_ms<=2, size_bytes<=50000"`` into bounds, one per clause.

    Raises:
        SpecError: one line naming the clause and what would be right.
    """
    clauses: list[Bound] = []
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise SpecError(f"where: empty; expected METRIC<=NUMBER clauses, {_EXAMPLE}")
    for part in parts:
        match = _CLAUSE.match(part)
        if match is None:
            raise SpecError(
                f"where clause {part.strip()!r}: expected METRIC<=NUMBER, METRIC>=NUMBER, "
                f"METRIC<NUMBER or METRIC>NUMBER, {_EXAMPLE}"
            )
        raw = match["bound"]
        try:
            bound = float(raw)
        except ValueError:
            bound = math.nan
        if not math.isfinite(bound):
            raise SpecError(
                f"where clause {part.strip()!r}: {raw!r} is not a number; expected e.g. "
                f"{match['metric']}{match['op']}2 (sizes in bytes, latency in ms, accuracy 0..1)"
            )
        op = match["op"]
        side = {"max": bound} if op.startswith("<") else {"min": bound}
        clauses.append(Bound(match["metric"], **side, strict=len(op) == 1, text=part.strip()))
    return clauses


def _check_metric(name: str, pool: Sequence[TrialRecord], where: str) -> None:
    known = sorted(
        {k for r in pool for k in (*r.values, *r.metrics) if metric_value(r, k) is not None}
    )
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"metrics: {', '.join(known)}"
    raise SpecError(f"{where}: unknown metric {name!r}; {hint}")


@dataclass(frozen=True)
class Binding:
    """The clause that rules out the most trials, and the trial closest to meeting it."""

    clause: Bound
    failing: int
    trials: int
    closest: int | None
    closest_value: float | None


@dataclass(frozen=True)
class Pick:
    """The best trial within the budget, or why there is none."""

    trial: TrialRecord | None
    clauses: list[Bound]
    target: str
    direction: str
    fits: int
    pool: int
    binding: Binding | None = None

    def message(self, study: str) -> str:
        """One line for a user: what was picked, or which constraint binds."""
        budget = ", ".join(map(str, self.clauses))
        if self.trial is not None:
            within = f" within {budget}" if budget else ""
            return (
                f"trial {self.trial.number} of {study}: best {self.target}{within} "
                f"({self.fits} of {self.pool} complete feasible trials fit)"
            )
        if self.pool == 0:
            return f"study {study!r} has no complete feasible trial yet"
        b = self.binding
        if b is None:
            return f"no trial of {study} fits {budget}"
        closest = ""
        if b.closest is not None and b.closest_value is not None:
            # As people read it, and as stored (the clause's own units; a near miss such
            # as 0.8996 for accuracy>=0.9 would read 90.0% alone).
            shown = show_metric(b.clause.metric, b.closest_value)
            closest = (
                f"; closest: trial {b.closest} with {b.clause.metric} {shown} "
                f"({b.closest_value:.6g})"
            )
        together = (
            " (each clause alone is met by some trial, but no trial meets all)"
            if b.failing < b.trials
            else ""
        )
        return (
            f"no trial of {study} fits {budget}: {b.clause} binds, {b.failing} of {b.trials} "
            f"complete feasible trials fail it{closest}{together}"
        )


def pick(
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    clauses: Sequence[Bound],
    *,
    target: str | None = None,
    direction: str = "maximize",
) -> Pick:
    """Best complete, feasible trial that meets every clause, by ``target``.

    Ties on ``target`` go to the trial better on the other objectives in order, so the pick
    is on the Pareto front whenever the budget only names objectives.

    Raises:
        SpecError: a clause or the target names a metric no trial recorded.
    """
    if target is None:
        target, direction = default_target(objectives)
    pool = feasible_complete(records)
    if pool:
        for c in clauses:
            _check_metric(c.metric, pool, f"where clause {c.text or str(c)!r}")
        _check_metric(target, pool, direction)
    fits = rank(
        (r for r in pool if within(r, clauses)),
        objectives,
        target=target,
        direction=direction,
    )
    if fits:
        return Pick(fits[0], list(clauses), target, direction, len(fits), len(pool))
    binding = None
    if pool and clauses:
        failing = []
        for c in clauses:
            values = [(r, metric_value(r, c.metric)) for r in pool]
            fail = [(r, v) for r, v in values if not c.holds(v)]
            failing.append((len(fail), c, fail))
        count, clause, fail = max(failing, key=lambda item: item[0])
        measured = [(r, v) for r, v in fail if v is not None]
        closest = min(measured, key=lambda rv: clause.shortfall(rv[1])) if measured else None
        binding = Binding(
            clause=clause,
            failing=count,
            trials=len(pool),
            closest=closest[0].number if closest else None,
            closest_value=closest[1] if closest else None,
        )
    return Pick(None, list(clauses), target, direction, 0, len(pool), binding)


def pick_as_dict(result: Pick, study: str) -> dict[str, Any]:
    """The pick as plain data (what ``tuner pick --json`` prints)."""
    out: dict[str, Any] = {
        "study": study,
        "where": [str(c) for c in result.clauses],
        "target": {"metric": result.target, "direction": result.direction},
        "fits": result.fits,
        "trials": result.pool,
    }
    if result.trial is None:
        b = result.binding
        out["number"] = None
        out["message"] = result.message(study)
        out["binding"] = (
            None
            if b is None
            else {
                "clause": str(b.clause),
                "metric": b.clause.metric,
                "failing": b.failing,
                "closest": None
                if b.closest is None
                else {"number": b.closest, "value": b.closest_value},
            }
        )
        return out
    t = result.trial
    out.update(number=t.number, params=t.params, values=t.values, metrics=t.metrics)
    return out

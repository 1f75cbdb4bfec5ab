"""The record of a study's front timed again side by side (``tuner retime``).

Kept on the study under :data:`~tuner.storage.keys.RETIMED_ATTR`: the CLI writes it, the
dashboard and scripts read it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._format import show_metric
from ._records import pareto_mask
from .keys import RETIMED_ATTR

# How many times a re-timing times each model, in rotated orders, unless told otherwise.
DEFAULT_ROUNDS = 3


@dataclass(frozen=True)
class RetimedTrial:
    """One front trial: its stored latencies and the ones timed now."""

    number: int
    runtime: str
    batch_size: int
    stored: dict[str, float]
    retimed: dict[str, float]
    stored_machine: str | None = None
    compiled: bool = False

    def change(self, metric: str) -> float | None:
        """The re-timed figure over the stored one, less 1 (``-0.25``: 25% faster now)."""
        before, after = self.stored.get(metric), self.retimed.get(metric)
        if not before or after is None:
            return None
        return after / before - 1.0


@dataclass(frozen=True)
class Retiming:
    """A study's front timed again, side by side.

    Attributes:
        study: the study.
        machine: what it was timed on (see :func:`tuner._measure.machine_name`).
        at: when, as an ISO 8601 time with its UTC offset.
        rounds: how many times each model was timed, in rotated orders (medians kept).
        reference_ms: the yardstick (see :func:`tuner._measure.reference_ms`), median over
            the rounds; the trials' own are in their ``latency_reference_ms``.
        reference_spread: the yardstick's slowest round over its fastest, less 1.
        trials: the re-timed trials, in the front's order.
        skipped: front trials not re-timed, and why.
        dominated: re-timed trials that another re-timed trial dominates once both are
            timed together, each with the first such trial.
        kept: whether it was kept on the study (not itself kept: a store that refused it
            holds none).
        target: the ``measure.target`` whose node timed it, where one did.
    """

    study: str
    machine: str
    at: str
    rounds: int
    reference_ms: float
    reference_spread: float
    trials: list[RetimedTrial]
    skipped: dict[int, str] = field(default_factory=dict)
    dominated: dict[int, int] = field(default_factory=dict)
    kept: bool = field(default=True, compare=False)
    target: str | None = None

    def joined(self, front: Iterable[int]) -> list[int]:
        """The trials of ``front`` (trial numbers) that joined the front since: this
        re-timing neither timed them nor said why not."""
        seen = {t.number for t in self.trials} | set(self.skipped)
        return sorted(set(front) - seen)

    @property
    def where(self) -> str:
        """What timed it, as people read it: the machine, and the target it was."""
        return self.machine + (f" (measure.target {self.target!r})" if self.target else "")

    @property
    def when(self) -> str:
        """:attr:`at` to the minute, as people read it: ``2026-12-07 11:26``."""
        return self.at[:16].replace("T", " ")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as kept on the study and printed by ``tuner retime --json``."""
        return {
            "study": self.study,
            "machine": self.machine,
            "at": self.at,
            "rounds": self.rounds,
            "reference_ms": self.reference_ms,
            "reference_spread": self.reference_spread,
            "trials": [
                {
                    "number": t.number,
                    "runtime": t.runtime,
                    "batch_size": t.batch_size,
                    "stored": t.stored,
                    "retimed": t.retimed,
                    "stored_machine": t.stored_machine,
                    "compiled": t.compiled,
                }
                for t in self.trials
            ],
            "skipped": {str(n): why for n, why in self.skipped.items()},
            "dominated": {str(n): by for n, by in self.dominated.items()},
            **({"target": self.target} if self.target else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Retiming:
        """Read back what :meth:`as_dict` wrote (``KeyError``/``TypeError`` if malformed)."""
        return cls(
            study=str(data["study"]),
            machine=str(data["machine"]),
            at=str(data["at"]),
            rounds=int(data["rounds"]),
            reference_ms=float(data["reference_ms"]),
            reference_spread=float(data["reference_spread"]),
            trials=[
                RetimedTrial(
                    number=int(t["number"]),
                    runtime=str(t["runtime"]),
                    batch_size=int(t["batch_size"]),
                    stored={str(k): float(v) for k, v in t["stored"].items()},
                    retimed={str(k): float(v) for k, v in t["retimed"].items()},
                    stored_machine=t.get("stored_machine"),
                    compiled=bool(t.get("compiled", False)),
                )
                for t in data["trials"]
            ],
            skipped={int(n): str(why) for n, why in data.get("skipped", {}).items()},
            dominated={int(n): int(by) for n, by in data.get("dominated", {}).items()},
            target=None if data.get("target") is None else str(data["target"]),
        )


def stored_retiming(user_attrs: Mapping[str, Any]) -> Retiming | None:
    """The study's last re-timing, from its user attributes (``None`` when there is none)."""
    data = user_attrs.get(RETIMED_ATTR)
    if not isinstance(data, Mapping):
        return None
    try:
        return Retiming.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def dominated_by(
    values: Mapping[int, Mapping[str, float]], objectives: Mapping[str, str]
) -> dict[int, int]:
    """The trials of ``values`` that another of them dominates, each with the first that does.

    A trial dominates another when it is at least as good on every objective and better on
    one (``objectives`` maps each to ``maximize`` or ``minimize``).
    """
    names = list(objectives)
    numbers = [n for n in values if all(m in values[n] for m in names)]
    if not numbers:
        return {}
    points = np.array([[values[n][m] for m in names] for n in numbers], dtype=float)
    mask = pareto_mask(points, [objectives[m] for m in names])
    signs = np.array([1.0 if objectives[m] == "maximize" else -1.0 for m in names])
    better = points * signs  # larger is better on every column
    out: dict[int, int] = {}
    for i, number in enumerate(numbers):
        if mask[i]:
            continue
        for j, other in enumerate(numbers):
            if j != i and np.all(better[j] >= better[i]) and np.any(better[j] > better[i]):
                out[number] = other
                break
    return out


def retiming_rows(result: Retiming) -> list[dict[str, str]]:
    """One row per re-timed trial, as people read it (``tuner retime`` and the dashboard):
    latency at batch 1 and at the batch size, stored and now, and the change. A column of
    where the stored figures were timed is added where any trial's differs from now."""
    sizes = sorted({t.batch_size for t in result.trials})
    batch = f"batch {sizes[0]}" if len(sizes) == 1 else "batch size"
    elsewhere = any(t.stored_machine not in (None, result.machine) for t in result.trials)
    rows = []
    for t in result.trials:
        row = {"trial": str(t.number), "runtime": t.runtime + (", compiled" if t.compiled else "")}
        for metric, label in (("latency_ms", "batch 1"), ("latency_ms_batch", batch)):
            change = t.change(metric)
            row[f"{label} ms stored"] = show_metric(metric, t.stored.get(metric), unit=False)
            row[f"{label} ms now"] = show_metric(metric, t.retimed.get(metric), unit=False)
            row[f"{label} change"] = _shown_change(change)
        if elsewhere:
            row["stored on"] = t.stored_machine or "-"
        rows.append(row)
    return rows


def _shown_change(change: float | None) -> str:
    """``-12%``, ``+4%``; from doubling on, how many times: ``2.5x``, ``3,976x``."""
    if change is None:
        return "-"
    if change < 1:
        return f"{100 * change:+.0f}%"
    return f"{change + 1:.1f}x" if change < 9 else f"{change + 1:,.0f}x"


def retiming_notes(result: Retiming) -> list[tuple[bool, str]]:
    """What the re-timing found, a sentence each, with whether it is a warning: the trials it
    takes off the front, the front trials it could not time, and the yardstick."""
    notes = [
        (
            True,
            f"trial {number} is off the front once timed together: trial {by} is as good on "
            "every objective and better on one",
        )
        for number, by in result.dominated.items()
    ]
    if not result.dominated:
        notes.append((False, "every re-timed trial stays on the front"))
    notes += [(True, f"trial {n} was not re-timed: {why}") for n, why in result.skipped.items()]
    # What the trials recorded, a range per kind of machine: a GPU's yardstick and a CPU's,
    # or two CPUs', are not one range. A trial that named no machine counts as this one, as
    # in the rows.
    recorded: dict[str, list[float]] = {}
    for t in result.trials:
        if "latency_reference_ms" in t.stored:
            machine = t.stored_machine or result.machine
            recorded.setdefault(machine, []).append(t.stored["latency_reference_ms"])
    ranges = {machine: _range(values) for machine, values in recorded.items()}
    if list(ranges) == [result.machine]:
        then = f"; the trials recorded {ranges[result.machine]} ms"
    elif ranges:
        then = "; the trials recorded " + ", ".join(
            f"{span} ms on {machine}" for machine, span in sorted(ranges.items())
        )
    else:
        then = ""
    spread = f"{100 * result.reference_spread:.0f}%"
    notes.append(
        (False, f"yardstick now {result.reference_ms:.3f} ms (its rounds within {spread}){then}")
    )
    return notes


def _range(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.3f}" if f"{low:.3f}" == f"{high:.3f}" else f"{low:.3f}-{high:.3f}"

"""When each trial ran: a bar per trial over wall-clock time, and how many ran at once.

It shows how a sweep used its workers: gaps where workers waited (a store outage, a
cluster short of CPUs, a slow driver), failures and the retries after them, trials
stopped early, and how long the stragglers at the end took. Rows are trials, or the
workers that ran them (each trial records its worker's machine and process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tuner.storage import TrialRecord
from tuner.storage.keys import WORKER_ATTR

# The states a bar can have, in the order the legend lists them, as people name them.
STATES = {"COMPLETE": "complete", "PRUNED": "stopped early", "FAIL": "failed", "RUNNING": "running"}


@dataclass(frozen=True)
class Bar:
    """One trial's time: from its start to its end (now, for a running trial)."""

    number: int
    state: str
    start: datetime
    end: datetime
    worker: str | None = None  # "host (pid N)", where the trial recorded it

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Timeline:
    """A study's trials over time.

    Attributes:
        bars: a bar per trial that started, in the order they started.
        times, in_flight: a step series, how many trials ran from each time on.
        peak: the most trials that ran at once.
        busy: the share of ``peak`` slots over the whole span that trials filled (1.0:
            as many trials ran as at the peak from the first start to the last end).
    """

    bars: list[Bar]
    times: list[datetime]
    in_flight: list[int]
    peak: int
    busy: float | None

    @property
    def workers(self) -> list[str]:
        """The workers that recorded themselves, in the order they first started a trial."""
        return list(dict.fromkeys(b.worker for b in self.bars if b.worker is not None))

    @property
    def span_s(self) -> float:
        if not self.bars:
            return 0.0
        return (max(b.end for b in self.bars) - self.bars[0].start).total_seconds()


def timeline(records: Sequence[TrialRecord], now: datetime) -> Timeline:
    """The bars and the in-flight series of ``records``, a running trial ending at ``now``
    (naive local time, as the store keeps trial times)."""
    bars = []
    # A running trial ends now, or at the latest time the store holds where the workers'
    # clock is ahead of this one (the store keeps their local time).
    latest = max(
        (t for r in records for t in (r.datetime_start, r.datetime_complete) if t is not None),
        default=now,
    )
    now = max(now, latest)
    for r in records:
        if r.datetime_start is None or r.state not in STATES:
            continue  # waiting, or never started
        end = r.datetime_complete or (now if r.state == "RUNNING" else r.datetime_start)
        worker = r.metrics.get(WORKER_ATTR)
        bars.append(
            Bar(
                r.number,
                r.state,
                r.datetime_start,
                max(end, r.datetime_start),
                None if worker is None else str(worker),
            )
        )
    bars.sort(key=lambda b: (b.start, b.number))
    # An end before a start at the same time: a worker that ends a trial and starts the
    # next is one trial in flight, not two.
    events = sorted([(b.start, 1) for b in bars] + [(b.end, -1) for b in bars])
    times: list[datetime] = []
    counts: list[int] = []
    running = 0
    for at, step in events:
        running += step
        if times and times[-1] == at:
            counts[-1] = running
        else:
            times.append(at)
            counts.append(running)
    peak = max(counts, default=0)
    span = (times[-1] - times[0]).total_seconds() if times else 0.0
    busy = sum(b.seconds for b in bars) / (peak * span) if peak and span > 0 else None
    return Timeline(bars, times, counts, peak, busy)

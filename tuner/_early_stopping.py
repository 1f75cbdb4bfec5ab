"""Early stopping: end trials that will not reach the front, after a few epochs.

Optuna's pruners judge one objective (``Trial.report`` raises in a multi-objective
study), so tuner has its own rules, and uses them for one objective and for many alike:

* ``asha``: asynchronous successive halving. Rungs sit at ``min_epochs *
  reduction_factor**k`` epochs while ``reduction_factor`` times the rung fits in
  ``budget.max_epochs``. A trial that reaches a rung is ranked against every trial
  recorded at that rung so far, by any worker, and goes on if it is among the best
  ``ceil(n / reduction_factor)`` of those ``n``, or, from the second rung on, if none of
  them dominates it; otherwise it is stopped. Nobody waits for a rung to fill. The
  ranking is by non-dominated sorting over what is known at the rung: validation
  accuracy so far, and the objectives that do not need training to finish (size and
  latency of the compressed model, measured once at the trial's first rung). The
  accuracy is that of the model as it would ship: a copy pruned and quantized as sampled
  (without the fine-tune that follows training), on the validation data the workload
  passed to ``ctx.watch``; heavy pruning can cost a model most of an accuracy that the
  float model's curve would never show. A copy that loses whole units (structured
  pruning) first gets an eighth of an epoch of the trial's own fine-tune, when the
  workload passed its training data. Within a front, the trial with the best accuracy
  ranks first, then a larger hypervolume contribution (each metric scaled to the front's
  range, the reference at 1.1 on each). The smallest or fastest trial is ranked by what
  it adds like the rest, which for the front's least accurate member is a thin slab.
  Ranking it first, as for accuracy, kept models at chance accuracy training to the end:
  where a search drives sizes down, nearly every new trial is the smallest yet. Now such
  a trial goes on at the first rung only by the quota, and past it by being on the
  front. On ``bench/peers.py`` (TPE, 30 trials x 15 epochs, seeds 0-5) the change raised
  the mean hypervolume from 0.840 to 0.854, for 297 epochs instead of 289, and was ahead
  on 5 seeds. This is MO-ASHA: R. Schmucker, M. Donini, M. B. Zafar, D. Salinas, C.
  Archambeau, "Multi-objective Asynchronous Successive Halving" (2021,
  arXiv:2106.12639), as in Syne Tune's ``MOASHA`` scheduler, with one more change: past
  the first rung, a trial on the rung's front goes on. Successive halving's quota comes
  from one metric, where the best ``1/reduction_factor`` hold all there is to keep; with
  several, each non-dominated trial holds a trade-off no other trial at the rung covers,
  and the final front is lost mostly where such trials are stopped. At the first rung
  (``min_epochs``) the front is not kept: replayed, carrying its members on cost far
  more epochs than it kept front (below). Latencies within 10% count as a tie in that
  test (each is one short timing), so a trial is not kept for being faster only by
  noise. Replayed on trials trained to the end (``bench/early_stopping_replay.py``, with
  every metric's best ranked first), the rule lost 0.9% of the hypervolume for 2.8x
  fewer epochs on 180 random mnist1d-cnn trials, where the quota alone lost 1.5% for
  2.65x, and 0.9% for 2.2x on six TPE runs, where the quota alone lost 1.7% for 2.25x;
  keeping the front at the first rung too lost 0.6% for 2.3x and 1.8x.
* ``hyperband``: several ``asha`` brackets; bracket ``s`` starts at the ``s``-th rung and
  the last bracket stops nothing. A trial's bracket is its number modulo the bracket
  count, and it is ranked only against trials of its bracket.
* ``median``: from ``min_epochs`` on, a trial whose best validation accuracy so far is
  below the median of other trials' accuracy at the same epoch is stopped.

Every record lives in the study store (user attributes ``rungs`` and ``curve`` of each
trial), so the rule works the same across threads, processes and Ray workers. The
decisions themselves are pure functions of those records (:func:`rank_at_rung`,
:func:`median_stops`), tested without training anything.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ._space import fixed_params
from ._spec import EarlyStoppingSpec, StudySpec
from ._workloads import TrialContext, TrialStopped
from .storage import show_epochs
from .storage._readers import read_trial_attr
from .storage.keys import CURVE_ATTR, RUNGS_ATTR

# Objectives that validation accuracy so far stands in for while a trial trains.
_ACCURACY_PROXIES = ("accuracy", "test_accuracy", "accuracy_float")
# Those of them measured on the shipped model, judged at a rung on a compressed copy.
_SHIPPED_ACCURACY = ("accuracy", "test_accuracy")
# Objectives known from the compressed model alone, before training ends.
_MODEL_METRICS = (
    "size_bytes",
    "param_count",
    "sparsity",
    "latency_ms",
    "latency_ms_p90",
    "latency_ms_batch",
    "latency_ms_batch_p90",
)
# Latencies within this fraction of each other count as a tie when deciding whether a
# trial is on a rung's front: each is timed once, with few repeats, under whatever else the
# machine runs, and a trial that is "faster" only by that noise holds no trade-off. In the
# replay bench, 5%, 10% and 20% decided nearly alike: within 0.05x fewer epochs and 0.03%
# of the hypervolume of each other, on random trials and on TPE runs.
_LATENCY_TIE = 0.10
_EARLY_WARMUP = 3
_EARLY_REPEATS = 10
# Fraction of an epoch of its own fine-tune that a structured-pruned copy gets before it is
# judged at a rung. Cutting whole units leaves a copy near chance that the fine-tune after
# training mostly recovers; on mnist1d-cnn (60 random trials), an eighth of an epoch raised
# the rank correlation of such trials' rung accuracy with their final accuracy from 0.76
# to 0.82 at 3 epochs and from 0.75 to 0.89 at 9. Copies pruned unstructured keep most of
# their accuracy uncut, and a fine-tune that short did not rank them better.
_RUNG_FINETUNE = 0.125
_RUNG_FINETUNE_TEXT = str(Fraction(_RUNG_FINETUNE))  # 1/8


# --- pure decisions ------------------------------------------------------------------


def rung_epochs(min_epochs: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """Epoch counts at which trials are judged: ``min_epochs * reduction_factor**k``, as
    long as the next level (``reduction_factor`` times the rung) still fits in
    ``max_epochs``, as in successive halving and Hyperband. A rung closer to the end
    would stop trials that are nearly done, saving little and risking the front."""
    rungs = []
    epoch = min_epochs
    while epoch * reduction_factor <= max_epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    return tuple(rungs)


def bracket_rungs(es: EarlyStoppingSpec, max_epochs: int, trial_number: int) -> tuple[int, ...]:
    """The rungs a trial is judged at (``hyperband`` gives trials later first rungs)."""
    rungs = rung_epochs(es.min_epochs, es.reduction_factor, max_epochs)
    if es.name != "hyperband":
        return rungs
    return rungs[trial_number % (len(rungs) + 1) :]


def _minimized(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(points, dtype=float).reshape(len(points), len(directions)) * signs


def non_dominated_ranks(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Front of each row of ``points`` (n x k): 0 for non-dominated rows, 1 for the next front...

    Args:
        points: one row per trial, one column per metric.
        directions: ``maximize`` or ``minimize`` per column.
    """
    v = _minimized(points, directions)
    n = len(v)
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    # dominates[i, j]: row i is no worse than row j everywhere and better somewhere.
    no_worse = np.all(v[:, None, :] <= v[None, :, :], axis=2)
    better = np.any(v[:, None, :] < v[None, :, :], axis=2)
    dominates = no_worse & better
    remaining = np.ones(n, dtype=bool)
    front = 0
    while remaining.any():
        idx = np.flatnonzero(remaining)
        dominated = dominates[np.ix_(idx, idx)].any(axis=0)
        ranks[idx[~dominated]] = front
        remaining[idx[~dominated]] = False
        front += 1
    return ranks


def front_priority(
    points: np.ndarray, directions: Sequence[str], anchors: Sequence[bool] | None = None
) -> np.ndarray:
    """How much each row of one front is worth keeping: larger is better.

    A row best on one of the ``anchors`` metrics (all of them when not given) gets
    infinity (those ends of the front are never dropped, as in NSGA-II's crowding
    distance); the others get the hypervolume only they add, with metrics scaled to [0, 1]
    over the rows so no metric outweighs another by its unit.
    """
    from .storage._optuna import compute_hypervolume

    v = _minimized(points, directions)
    n, k = v.shape
    if n == 0 or k == 1:
        # One metric: a front's rows are equal, none is worth more than another.
        return np.zeros(n)
    low, high = v.min(axis=0), v.max(axis=0)
    columns = np.ones(k, dtype=bool) if anchors is None else np.asarray(anchors, dtype=bool)
    ends = np.any((v == low)[:, columns], axis=1)
    z = (v - low) / np.where(high > low, high - low, 1.0)
    reference = np.full(k, 1.1)
    total = compute_hypervolume(z, reference, assume_pareto=False)
    out = np.empty(n)
    for i in range(n):
        rest = np.delete(z, i, axis=0)
        rest_volume = (
            compute_hypervolume(rest, reference, assume_pareto=False) if len(rest) else 0.0
        )
        out[i] = total - rest_volume
    out[ends] = np.inf
    return out


@dataclass(frozen=True)
class RungDecision:
    """Where a trial ranks among the trials recorded at a rung, and whether it goes on."""

    promote: bool
    position: int  # 1 = best; trials tied with it share its position
    recorded: int  # trials at the rung, this one included
    keep: int  # how many of them go on by rank
    on_front: bool = False  # no other trial at the rung dominates it

    def describe(self, rule: str, rung: int, known: str = "") -> str:
        """One line for people, e.g. ``asha rung at 3 epochs (accuracy 71.0%): ranked 5 of 9
        (best 3 go on); stopped``; ``known`` is what the trial was ranked by."""
        verdict = "goes on" if self.promote else "stopped"
        if self.promote and self.position > self.keep and self.on_front:
            verdict = "no trial at the rung dominates it, so it goes on"
        by = f" ({known})" if known else ""
        return (
            f"{rule} rung at {show_epochs(rung)}{by}: ranked {self.position} of {self.recorded} "
            f"(best {self.keep} go on); {verdict}"
        )


def rank_at_rung(
    mine: Sequence[float],
    others: Sequence[Sequence[float]],
    directions: Sequence[str],
    *,
    reduction_factor: int,
    min_trials: int = 0,
    keep_front: bool = True,
    tolerance: Sequence[float] | None = None,
    anchors: Sequence[bool] | None = None,
) -> RungDecision:
    """Decide whether a trial reaching a rung goes on (MO-ASHA's rule, asynchronous).

    The trial goes on if fewer than ``ceil(n / reduction_factor)`` of the ``n`` trials
    recorded at the rung (itself included) rank strictly ahead of it: by non-dominated
    front first, then by :func:`front_priority` within its front. With ``keep_front``, it
    also goes on if no trial at the rung dominates it (with one metric, only the best are
    never dominated). With fewer than ``min_trials`` other records it always goes on.

    Args:
        mine: the trial's metrics at the rung.
        others: other trials' metrics at the same rung, same order of metrics.
        directions: ``maximize`` or ``minimize`` per metric.
        reduction_factor: 1 in ``reduction_factor`` trials goes on.
        min_trials: other trials needed at the rung before anything is stopped there.
        keep_front: whether a trial no other dominates goes on beyond the quota.
        tolerance: per metric, a relative difference within which another trial counts
            as no worse when deciding whether it dominates this one (measurement noise);
            zero where not given.
        anchors: per metric, whether the trial best on it ranks first within its front
            whatever the hypervolume it adds; every metric where not given.
    """
    n = len(others) + 1
    keep = max(1, math.ceil(n / reduction_factor))
    if len(others) < min_trials:
        return RungDecision(promote=True, position=1, recorded=n, keep=n)
    k = len(mine)
    points = np.vstack(
        [
            np.asarray(mine, dtype=float).reshape(1, k),
            np.asarray(others, dtype=float).reshape(-1, k),
        ]
    )
    ranks = non_dominated_ranks(points, directions)
    ahead = int(np.sum(ranks[1:] < ranks[0]))
    same = np.flatnonzero(ranks == ranks[0])  # same[0] is this trial
    if ahead < keep < ahead + len(same):
        priority = front_priority(points[same], directions, anchors)
        if np.isfinite(priority[0]):
            ahead += int(np.sum(priority[1:] > priority[0] * (1 + 1e-9) + 1e-15))
    on_front = bool(ranks[0] == 0) and not _covered(points[0], points[1:], directions, tolerance)
    return RungDecision(
        promote=ahead < keep or (keep_front and on_front),
        position=ahead + 1,
        recorded=n,
        keep=keep,
        on_front=on_front,
    )


def _covered(
    mine: np.ndarray,
    others: np.ndarray,
    directions: Sequence[str],
    tolerance: Sequence[float] | None,
) -> bool:
    """Whether another row is better somewhere and, within ``tolerance``, no worse anywhere."""
    if tolerance is None or not any(tolerance) or len(others) == 0:
        return False
    a = _minimized(mine.reshape(1, -1), directions)[0]
    b = _minimized(others, directions)
    slack = np.abs(a) * np.asarray(tolerance, dtype=float)
    return bool(np.any(np.all(b <= a + slack, axis=1) & np.any(b < a, axis=1)))


def rung_tolerance(names: Sequence[str]) -> list[float]:
    """Per metric, the relative difference that counts as a tie at a rung: ``_LATENCY_TIE``
    for latencies (each one short timing, under whatever else the machine runs), none for
    the rest."""
    return [_LATENCY_TIE if name.startswith("latency_ms") else 0.0 for name in names]


def median_stops(best_so_far: float, others: Sequence[float], *, min_trials: int = 0) -> bool:
    """``median`` rule: stop if the trial's best accuracy is below the others' median.

    Args:
        best_so_far: the trial's best validation accuracy up to this epoch.
        others: other trials' validation accuracy at the same epoch.
        min_trials: other trials needed at the epoch before anything is stopped.
    """
    if not others or len(others) < min_trials:
        return False
    return best_so_far < float(np.median(np.asarray(others, dtype=float)))


def rung_metrics(objectives: Mapping[str, str]) -> dict[str, str]:
    """What a rung ranks by: the objectives known before training ends, with directions.

    Accuracy objectives are judged by validation accuracy so far; size and latency by the
    compressed model. Objectives known only at the end (training time, a workload's own
    metrics) are left out; if none is known early, validation accuracy alone ranks.
    """
    known = {
        name: direction
        for name, direction in objectives.items()
        if name in _ACCURACY_PROXIES or name in _MODEL_METRICS
    }
    return known or {"accuracy": "maximize"}


# --- the rule, bound to a study store --------------------------------------------------


class EarlyStopping:
    """The spec's early-stopping rule for one worker; state is read from the study store.

    Called by the objective after each reported epoch; returns False to go on and
    raises :class:`TrialStopped` (with the reason) to stop the trial.
    """

    def __init__(self, spec: StudySpec, storage: Any, study_id: int) -> None:
        self._spec = spec
        self._es: EarlyStoppingSpec = spec.early_stopping
        self._storage = storage
        self._study_id = study_id
        self._metrics = rung_metrics(spec.objectives)
        self._trial = -1
        self._rungs: dict[str, dict[str, float]] = {}
        self._model_metrics: dict[str, float] | None = None
        self._shipped = False
        self._finetuned = 0.0

    def __call__(self, trial: Any, epoch: int, ctx: TrialContext) -> bool:
        if trial.number != self._trial:
            self._trial, self._rungs, self._model_metrics = trial.number, {}, None
        epochs = epoch + 1
        if self._es.name == "median":
            self._median(trial, epochs, ctx)
            return False
        rungs = bracket_rungs(self._es, self._spec.budget.max_epochs, trial.number)
        for rung in rungs:
            if rung > epochs or str(rung) in self._rungs:
                continue
            mine = self._known_at_rung(trial, ctx)
            record = dict(mine)
            if self._finetuned:
                record["finetune_epochs"] = self._finetuned
            self._rungs[str(rung)] = record
            trial.set_user_attr(RUNGS_ATTR, self._rungs)
            names = list(mine)
            others = [
                [record[str(rung)][m] for m in names]
                for number, record in self._read(RUNGS_ATTR, trial.number)
                if _same_bracket(self._es, self._spec.budget.max_epochs, number, trial.number)
                and all(m in record.get(str(rung), {}) for m in names)
            ]
            decision = rank_at_rung(
                [mine[m] for m in names],
                others,
                [self._metrics.get(m, "maximize") for m in names],
                reduction_factor=self._es.reduction_factor,
                min_trials=self._es.min_trials,
                keep_front=rung > self._es.min_epochs,
                tolerance=rung_tolerance(names),
                anchors=[m in _ACCURACY_PROXIES for m in names],
            )
            if not decision.promote:
                raise TrialStopped(
                    decision.describe(self._es.name, rung, self._known_text(mine, ctx))
                )
        return False

    def _median(self, trial: Any, epochs: int, ctx: TrialContext) -> None:
        if epochs < self._es.min_epochs or not ctx.curve:
            return
        others = [
            float(curve[epochs - 1])
            for _, curve in self._read(CURVE_ATTR, trial.number)
            if isinstance(curve, list) and len(curve) >= epochs
        ]
        best = max(ctx.curve)
        if median_stops(best, others, min_trials=self._es.min_trials):
            median = float(np.median(others))
            raise TrialStopped(
                f"median rule at epoch {epochs}: best accuracy {best:.4f} is below the "
                f"median {median:.4f} of {len(others)} other trials; stopped"
            )

    def _known_at_rung(self, trial: Any, ctx: TrialContext) -> dict[str, float]:
        params = {**fixed_params(self._spec.params), **trial.params}
        watched = ctx.watched_model is not None and ctx.watched_inputs is not None
        compressed = float(params.get("prune_threshold", 0.0)) > 0 or (
            str(params.get("quantize", "none")) != "none"
        )
        # Accuracy of the model as it would ship ranks far closer to the final accuracy
        # than the float model's: heavy (structured) pruning can cost most of it.
        shipped_accuracy = (
            watched
            and compressed
            and ctx.watched_val is not None
            and any(m in _SHIPPED_ACCURACY for m in self._metrics)
        )
        needs_model = (
            any(m in _MODEL_METRICS for m in self._metrics) and self._model_metrics is None
        )
        shipped: Any = None
        self._finetuned = 0.0
        if watched and (needs_model or shipped_accuracy):
            finetune = self._rung_finetune(params, ctx) if shipped_accuracy else None
            shipped = self._compress(params, ctx, finetune)
            self._finetuned = _RUNG_FINETUNE if finetune is not None else 0.0
            if needs_model:
                self._model_metrics = self._measure(shipped, ctx)
        self._shipped = bool(shipped_accuracy)
        known: dict[str, float] = {}
        for name in self._metrics:
            if name in _SHIPPED_ACCURACY and shipped_accuracy:
                known[name] = self._shipped_accuracy(shipped, ctx)
            elif name in _ACCURACY_PROXIES:
                known[name] = float(ctx.curve[-1])
            elif self._model_metrics is not None:
                known[name] = float(self._model_metrics[name])
        return known

    def _known_text(self, known: Mapping[str, float], ctx: TrialContext) -> str:
        from .storage import show_metric

        parts = []
        for name, value in known.items():
            text = f"{name} {show_metric(name, value)}"
            if name in _SHIPPED_ACCURACY and self._shipped:
                tuned = (
                    f" after {_RUNG_FINETUNE_TEXT} epoch of fine-tuning" if self._finetuned else ""
                )
                text += (
                    f" as it would ship{tuned}, {show_metric(name, ctx.curve[-1])} "
                    "before compression"
                )
            parts.append(text)
        return ", ".join(parts)

    def _rung_finetune(
        self, params: Mapping[str, Any], ctx: TrialContext
    ) -> Callable[[Any], None] | None:
        """A short fine-tune for a copy that structured pruning cuts units from, when the
        trial fine-tunes after training and the workload passed its training data."""
        if (
            ctx.watched_train is None
            or str(params.get("prune_structure", "unstructured")) != "structured"
            or float(params.get("prune_threshold", 0.0)) <= 0
            or int(params.get("finetune_epochs", 0)) <= 0
        ):
            return None
        from ._shipping import finetuner, settings_from_params

        assert ctx.watched_model is not None
        return finetuner(
            settings_from_params(params),
            params,
            ctx.watched_train,
            teacher=ctx.watched_model,
            device=ctx.device,
            seed=ctx.seed,
            epochs=_RUNG_FINETUNE,
        )

    def _compress(
        self,
        params: Mapping[str, Any],
        ctx: TrialContext,
        finetune: Callable[[Any], None] | None = None,
    ) -> Any:
        """A copy of the model, shipped as sampled (the same path as the final metric)."""
        from ._shipping import settings_from_params, ship

        assert ctx.watched_model is not None and ctx.watched_inputs is not None
        model = copy.deepcopy(ctx.watched_model).to("cpu").eval()
        return ship(
            model,
            settings_from_params(params),
            calibration=ctx.watched_inputs.detach().to("cpu"),
            device=ctx.device,
            finetune=finetune,
            runtime=self._spec.measure.runtime,
        )

    def _shipped_accuracy(self, shipped: Any, ctx: TrialContext) -> float:
        from ._objective import measure_threads
        from ._shipping import measure

        assert ctx.watched_val is not None and ctx.watched_inputs is not None
        figures = measure(
            shipped,
            settings=self._spec.measure,
            threads=measure_threads(self._spec),
            example=ctx.watched_inputs[:1].detach().to("cpu"),
            val_data=ctx.watched_val,
            model_metrics=False,
        )
        return float(figures["accuracy"])

    def _measure(self, shipped: Any, ctx: TrialContext) -> dict[str, float]:
        """Size and latency of the shipped copy (once per trial), as the final metric has them."""
        from ._objective import measure_threads
        from ._shipping import measure

        assert ctx.watched_inputs is not None
        figures = measure(
            shipped,
            settings=self._spec.measure,
            threads=measure_threads(self._spec),
            example=ctx.watched_inputs[:1].detach().to("cpu"),
            warmup=min(_EARLY_WARMUP, self._spec.measure.warmup),
            repeats=min(_EARLY_REPEATS, self._spec.measure.repeats),
        )
        return {name: float(figures[name]) for name in _MODEL_METRICS if name in figures}

    def _read(self, key: str, exclude: int) -> list[tuple[int, Any]]:
        """``(trial number, value)`` of user attribute ``key`` for the study's other trials."""
        return read_trial_attr(self._storage, self._study_id, key, exclude=exclude)


def _same_bracket(es: EarlyStoppingSpec, max_epochs: int, a: int, b: int) -> bool:
    if es.name != "hyperband":
        return True
    n_brackets = len(rung_epochs(es.min_epochs, es.reduction_factor, max_epochs)) + 1
    return a % n_brackets == b % n_brackets


def build_early_stopping(spec: StudySpec, storage: Any, study_id: int) -> EarlyStopping | None:
    """The spec's early-stopping rule, or None for ``early_stopping: none``."""
    if spec.early_stopping.name == "none":
        return None
    return EarlyStopping(spec, storage, study_id)

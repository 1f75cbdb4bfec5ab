"""Time a study's front again: every kept model side by side, on one machine, at one time.

Each trial times its model when it ends, minutes or hours apart from the others, on
whichever worker ran it. A VM's share of its host, a neighbour's compile or a sweep spread
over a mixed cluster move those figures, so two front trials' latencies may differ by the
machine's speed rather than the model's. Re-timing loads each front trial's kept model,
builds it as the trial shipped it (the same runtime, compile, freezing, threads and batch
sizes), and times them all in turns, over a few rounds in rotated orders, so that whatever
the machine does falls on every model alike. The stored figures are left as they were; the
re-timing is kept on the study (:data:`~tuner.storage.keys.RETIMED_ATTR`), where the CLI
and the dashboard show it beside them.
"""

from __future__ import annotations

import datetime as dt
import functools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._artifacts import ArtifactMissing, TrialModel, artifact_status, load_trial_model
from ._exceptions import SpecError, first_line, storage_error
from ._measure import latency_timer, machine_name, reference_ms, to_eval
from .storage import (
    RetimedTrial,
    Retiming,
    StoreError,
    TrialRecord,
    dominated_by,
    load_study_readonly,
    pareto_front,
    read_records,
    study_objectives,
)
from .storage.keys import RETIMED_ATTR

# The figures re-timed: latency at batch 1 and at the spec's batch size, median and p90.
LATENCY_METRICS = ("latency_ms", "latency_ms_p90", "latency_ms_batch", "latency_ms_batch_p90")
DEFAULT_ROUNDS = 3


# One timing: median and p90 milliseconds of one pass.
_Timing = Callable[[], tuple[float, float]]


@dataclass
class _Candidate:
    record: TrialRecord
    runtime: str
    batch_size: int
    threads: int
    timings: dict[str, _Timing]  # "" for batch 1, "_batch" for the batch size
    p50: dict[str, list[float]] = field(default_factory=dict)
    p90: dict[str, list[float]] = field(default_factory=dict)


def _threads(tm: TrialModel, record: TrialRecord) -> int:
    return int(record.metrics.get("latency_threads") or tm.measure.get("threads") or 1)


def _passes(tm: TrialModel, suffix: str) -> tuple[int, int]:
    """Warm-up and timed passes, as the trial used them (half at the batch size)."""
    warmup = int(tm.measure.get("warmup", 10))
    repeats = int(tm.measure.get("repeats", 50))
    return (max(1, warmup // 2), max(3, repeats // 2)) if suffix else (warmup, repeats)


def _torch_model(tm: TrialModel, device: str) -> torch.nn.Module:
    """The model the trial ran in the torch runtime, on ``device``."""
    if device == "cpu":
        return to_eval(tm.shipped_torch())
    from ._compression import quantize

    target = torch.device(device)
    model = tm.model.to(target).eval()
    if tm.quantize != "none":
        model = quantize(
            model,
            mode=tm.quantize,
            calibration_inputs=None if tm.calibration is None else tm.calibration.to(target),
            device=target,
            keep_float=tuple(tm.float_layers),
        )[0]
    return model.eval()


def _candidate(tm: TrialModel, record: TrialRecord) -> _Candidate:
    """The trial's model made ready to time, as the trial timed it."""
    metrics = record.metrics
    runtime = str(metrics.get("latency_runtime") or tm.measure.get("runtime") or "torch")
    batch_size = int(metrics.get("latency_batch_size") or tm.measure.get("batch_size") or 1)
    threads = _threads(tm, record)
    timings: dict[str, _Timing] = {}
    sizes = {"_batch": batch_size, "": 1}
    if runtime == "onnxruntime":
        from ._formats import OnnxRunner, onnx_shipped

        runner = OnnxRunner(onnx_shipped(tm)[0].SerializeToString(), threads=threads)
        for suffix, size in sizes.items():
            warmup, repeats = _passes(tm, suffix)
            timings[suffix] = functools.partial(
                runner.latency, tm.example, batch_size=size, warmup=warmup, repeats=repeats
            )
        return _Candidate(record, runtime, batch_size, threads, timings)
    device = str(metrics.get("latency_device") or "cpu")
    model = _torch_model(tm, device)
    default = str(tm.measure.get("compile", "auto")) == "always"
    compiled = bool(metrics.get("compiled", default))
    for suffix, size in sizes.items():
        timer = latency_timer(
            model,
            tm.example,
            batch_size=size,
            device=device,
            threads=threads,
            compile=compiled,
            # Freezing where the trial kept it; it is kept again only where it still
            # answers the same and is faster here.
            freezing=bool(metrics.get(f"compiled_frozen{suffix}")),
        )
        warmup, repeats = _passes(tm, suffix)
        timings[suffix] = functools.partial(timer.time, warmup=warmup, repeats=repeats)
    return _Candidate(record, runtime, batch_size, threads, timings)


def _not_here(record: TrialRecord) -> str | None:
    """Why this machine cannot time the trial's model as it was timed, if it cannot."""
    device = str(record.metrics.get("latency_device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        gpu = record.metrics.get("latency_machine", "a GPU")
        return f"timed on {device} ({gpu}); this machine has no CUDA GPU"
    return None


def retime_front(
    storage: Any,
    study_name: str,
    *,
    rounds: int = DEFAULT_ROUNDS,
    folder: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    save: bool = True,
) -> Retiming:
    """Time every front trial's kept model again, side by side on this machine.

    Args:
        storage: an open Optuna storage (writable when ``save``).
        study_name: the study.
        rounds: times each model is timed, in rotated orders; the medians are kept.
        folder: the artifacts root, when it moved since the study ran.
        progress: called with a line as each model is ready and each round ends.
        save: keep the result on the study (:data:`~tuner.storage.keys.RETIMED_ATTR`).

    Raises:
        SpecError: ``rounds`` is not a whole number of at least 1.
        ArtifactMissing: no front trial has a model that can be timed here (why each not).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise SpecError(f"rounds: got {rounds!r}; expected an integer >= 1")
    say = progress or (lambda _line: None)
    try:
        study = load_study_readonly(storage, study_name)
        records = read_records(storage, study_name)
    except StoreError as exc:
        raise storage_error(exc) from exc
    objectives = study_objectives(study)
    front = pareto_front(records, objectives)
    skipped: dict[int, str] = {}
    candidates: list[_Candidate] = []
    for index, record in enumerate(front, start=1):
        reason = _not_here(record)
        status = artifact_status(study, record.number, folder=folder)
        if reason is None and status.path is None:
            reason = status.reason or "no model kept"
        if reason is not None:
            skipped[record.number] = reason
            say(f"trial {record.number}: not re-timed: {reason}")
            continue
        assert status.path is not None
        try:
            candidate = _candidate(load_trial_model(status.path), record)
        except Exception as exc:  # noqa: BLE001 - one model that cannot be built is reported
            skipped[record.number] = first_line(exc)
            say(f"trial {record.number}: not re-timed: {first_line(exc)}")
            continue
        candidates.append(candidate)
        say(f"trial {record.number} ready ({candidate.runtime}) [{index}/{len(front)}]")
    if not candidates:
        why = "; ".join(f"trial {n}: {r}" for n, r in skipped.items()) or "the front is empty"
        raise ArtifactMissing(f"no front trial of {study_name!r} can be re-timed here ({why})")

    devices = {str(c.record.metrics.get("latency_device") or "cpu") for c in candidates}
    # The yardstick as the trials timed it: on their device and with their threads (on the
    # CPU with one thread where they differ).
    yardstick_device = next(iter(devices)) if len(devices) == 1 else "cpu"
    threads = {c.threads for c in candidates}
    yardstick_threads = next(iter(threads)) if len(threads) == 1 else 1
    yardstick: list[float] = []
    for k in range(rounds):
        yardstick.append(reference_ms(yardstick_device, threads=yardstick_threads))
        shift = k * len(candidates) // rounds
        for candidate in candidates[shift:] + candidates[:shift]:
            for suffix, timing in candidate.timings.items():
                p50, p90 = timing()
                candidate.p50.setdefault(suffix, []).append(p50)
                candidate.p90.setdefault(suffix, []).append(p90)
        say(f"round {k + 1}/{rounds} done")

    trials = []
    for candidate in candidates:
        retimed: dict[str, float] = {}
        for suffix in candidate.timings:
            retimed[f"latency_ms{suffix}"] = statistics.median(candidate.p50[suffix])
            retimed[f"latency_ms{suffix}_p90"] = statistics.median(candidate.p90[suffix])
        metrics = candidate.record.metrics
        stored = {
            m: float(metrics[m])
            for m in (*LATENCY_METRICS, "latency_reference_ms")
            if _number(metrics.get(m))
        }
        machine = metrics.get("latency_machine")
        trials.append(
            RetimedTrial(
                number=candidate.record.number,
                runtime=candidate.runtime,
                batch_size=candidate.batch_size,
                stored=stored,
                retimed=retimed,
                stored_machine=None if machine is None else str(machine),
            )
        )
    values = {
        t.number: {**next(r.values for r in front if r.number == t.number), **t.retimed}
        for t in trials
    }
    result = Retiming(
        study=study_name,
        machine=" / ".join(sorted(machine_name(d) for d in devices)),
        at=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        rounds=rounds,
        reference_ms=statistics.median(yardstick),
        reference_spread=max(yardstick) / min(yardstick) - 1.0,
        trials=trials,
        skipped=skipped,
        dominated=dominated_by(values, objectives),
    )
    if save:
        try:
            study.set_user_attr(RETIMED_ATTR, result.as_dict())
        except StoreError as exc:
            raise storage_error(exc) from exc
    return result


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def retime(
    study_name: str,
    *,
    storage: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    artifacts: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Retiming:
    """Time every front trial's kept model of ``study_name`` again, side by side on this
    machine, and keep the result on the study (what ``tuner retime`` does).

    Args:
        study_name: the study.
        storage: storage URL; else ``$TUNER_STORAGE``, else ``sqlite:///tuner.db``.
        rounds: times each model is timed, in rotated orders; the medians are kept.
        artifacts: the artifacts folder, when it moved since the study ran.
        progress: called with a line as each model is ready and each round ends.

    Returns:
        Each re-timed trial's stored and re-timed latencies, and the trials that drop off
        the front once timed together (:class:`~tuner.storage.Retiming`).

    Example::

        result = tuner.retime("digits-mlp", storage="sqlite:///tuner.db")
        for trial in result.trials:
            print(trial.number, trial.stored["latency_ms"], trial.retimed["latency_ms"])
    """
    from .storage import open_storage, resolve_url

    try:
        store = open_storage(resolve_url(storage), heartbeat=False)
    except StoreError as exc:
        raise storage_error(exc) from exc
    try:
        return retime_front(store, study_name, rounds=rounds, folder=artifacts, progress=progress)
    finally:
        store.engine.dispose()

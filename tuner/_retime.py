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

import dataclasses
import datetime as dt
import functools
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo.config as dynamo_config

from ._artifacts import ArtifactMissing, TrialModel, artifact_status, load_trial_model
from ._exceptions import ExportError, SpecError, first_line, storage_error
from ._measure import latency_timer, machine_name, reference_ms, to_eval
from .storage import (
    RetimedTrial,
    Retiming,
    StoreError,
    TrialRecord,
    counted,
    dominated_by,
    load_study_readonly,
    pareto_front,
    read_records,
    study_objectives,
)
from .storage._outage import ride_out
from .storage._retimed import DEFAULT_ROUNDS
from .storage.keys import RETIMED_ATTR

# The figures re-timed: latency at batch 1 and at the spec's batch size, median and p90.
LATENCY_METRICS = ("latency_ms", "latency_ms_p90", "latency_ms_batch", "latency_ms_batch_p90")


# One timing: median and p90 milliseconds of one pass.
_Timing = Callable[[], tuple[float, float]]


@dataclass
class _Candidate:
    record: TrialRecord
    runtime: str
    batch_size: int
    threads: int
    compiled: bool
    timings: dict[str, _Timing]  # "" for batch 1, "_batch" for the batch size
    p50: dict[str, list[float]] = field(default_factory=dict)
    p90: dict[str, list[float]] = field(default_factory=dict)
    failed: str | None = None  # why the model stopped running as it was timed again
    label: str = ""  # "trial N", and " of STUDY" where several studies are timed


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
        return _Candidate(record, runtime, batch_size, threads, False, timings)
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
    return _Candidate(record, runtime, batch_size, threads, compiled, timings)


def _not_here(record: TrialRecord) -> str | None:
    """Why this machine cannot time the trial's model as it was timed, if it cannot."""
    device = str(record.metrics.get("latency_device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        gpu = record.metrics.get("latency_machine", "a GPU")
        return f"timed on {device} ({gpu}); this machine has no CUDA GPU"
    return None


@dataclass
class _Front:
    """One study's front, its models made ready to time and the trials that could not be."""

    name: str
    study: Any
    objectives: dict[str, str]
    front: list[TrialRecord]
    loaded: list[_Loaded]
    skipped: dict[int, str]


# A front trial's kept model, its record, and how progress lines name it.
_Loaded = tuple[TrialModel, TrialRecord, str]


@dataclass
class _PoolTiming:
    """What timing a pool of models gave (plain data: it comes back from a target node),
    each keyed by the model's place in the pool."""

    trials: dict[int, RetimedTrial]
    unbuilt: dict[int, str]  # models that could not be made ready to time, and why
    failed: dict[int, str]  # models that failed as they were timed, and why
    yardstick: list[float]
    machine: str


def _prepare(
    storage: Any,
    study_name: str,
    folder: str | Path | None,
    say: Callable[[str], None],
    of: str,
    here: bool = True,
) -> _Front:
    """``study_name``'s front, each kept model loaded; progress lines name trials as
    ``trial N`` + ``of``. ``here``: the models are timed on this machine."""
    try:
        study = load_study_readonly(storage, study_name)
        records = read_records(storage, study_name)
    except StoreError as exc:
        raise storage_error(exc) from exc
    objectives = study_objectives(study)
    front = pareto_front(records, objectives)
    out = _Front(study_name, study, objectives, front, [], {})
    for record in front:
        reason = _not_here(record) if here else None
        status = artifact_status(study, record.number, folder=folder)
        if reason is None and status.path is None:
            reason = status.reason or "no model kept"
        if reason is None and status.path is not None:
            try:
                out.loaded.append(
                    (load_trial_model(status.path), record, f"trial {record.number}{of}")
                )
                continue
            except Exception as exc:  # noqa: BLE001 - one model that cannot be read is reported
                reason = first_line(exc)
        out.skipped[record.number] = str(reason)
        say(f"trial {record.number}{of}: not re-timed: {reason}")
    return out


def _time_pool(loaded: list[_Loaded], rounds: int, say: Callable[[str], None]) -> _PoolTiming:
    """Build each model as its trial shipped it, and time them all in turns, here."""
    pool: list[tuple[int, _Candidate]] = []
    unbuilt: dict[int, str] = {}
    # Every front model is compiled (where its trial was) before any is timed, so one model
    # class may be compiled for many shapes at once: past dynamo's recompile limit the
    # compile would reset dynamo, and the models compiled before would run recompiled
    # without their settings. The limit is raised for as many compiles as are made here.
    with dynamo_config.patch(recompile_limit=1024, accumulated_recompile_limit=1024):
        for index, (tm, record, label) in enumerate(loaded):
            try:
                candidate = _candidate(tm, record)
            except Exception as exc:  # noqa: BLE001 - one model that cannot be built is reported
                unbuilt[index] = first_line(exc)
                say(f"{label}: not re-timed: {unbuilt[index]}")
                continue
            candidate.label = label
            pool.append((index, candidate))
            say(f"{label} ready ({candidate.runtime}) [{index + 1}/{len(loaded)}]")
    if not pool:
        return _PoolTiming({}, unbuilt, {}, [], "")
    candidates = [c for _, c in pool]
    devices = _devices(candidates)
    yardstick = _time_in_turns(candidates, devices, rounds, say)
    machine = " / ".join(sorted(machine_name(d) for d in devices))
    return _PoolTiming(
        {i: _retimed_trial(c) for i, c in pool if c.failed is None},
        unbuilt,
        {i: str(c.failed) for i, c in pool if c.failed is not None},
        yardstick,
        machine,
    )


def _time_on_target(
    target: str, loaded: list[_Loaded], rounds: int, say: Callable[[str], None]
) -> _PoolTiming:
    """:func:`_time_pool` run on a node that offers ``target``, the models sent there as
    trials keep them (the node builds each as its trial shipped it)."""
    from ._target import WAIT_S, connected_target, pack, run_on_target

    ray = connected_target(target)
    sent: list[tuple[bytes, TrialRecord, str]] = []
    paths: list[str] = []
    for tm, record, label in loaded:
        payload, roots = pack(tm)
        sent.append((payload, record, label))
        paths += [p for p in roots if p not in paths]
    models = counted(len(sent), "model")
    say(f"timing {models} on the target {target!r}, {rounds} rounds")
    # The target says how it goes, as it goes (what it could not read or time, too).
    timing: _PoolTiming = run_on_target(
        ray,
        target,
        _time_pool_here,
        sent,
        rounds,
        paths,
        what=f"the front ({models})",
        # the wait for the target, and the timing itself: each model, each round
        wait_s=WAIT_S + 60.0 * len(sent) * rounds,
        say=say,
    )
    return timing


def _time_pool_here(
    sent: list[tuple[bytes, TrialRecord, str]],
    rounds: int,
    paths: list[str],
    say: Callable[[str], None] = lambda _line: None,
) -> _PoolTiming:
    """The Ray task on the target: load the models and time them in turns, saying how it
    goes."""
    from ._target import on_path, unpack

    on_path(paths)
    loaded: list[_Loaded] = []
    places: list[int] = []  # each loaded model's place in ``sent``
    unread: dict[int, str] = {}
    for index, (data, record, label) in enumerate(sent):
        try:
            tm = unpack(data, paths)
        except Exception as exc:  # noqa: BLE001 - one model that cannot be read is reported
            # (a missing module's error names the folders the node lacks already)
            absent = [p for p in paths if not os.path.isdir(p)]
            lacks = absent and not isinstance(exc, ModuleNotFoundError)
            where = f" (its classes come from {', '.join(absent)}, which this node lacks)"
            unread[index] = first_line(exc) + (where if lacks else "")
            say(f"{label}: not re-timed: {unread[index]}")
            continue
        loaded.append((tm, record, label))
        places.append(index)
    timing = _time_pool(loaded, rounds, say)
    return _PoolTiming(
        {places[i]: t for i, t in timing.trials.items()},
        {**unread, **{places[i]: r for i, r in timing.unbuilt.items()}},
        {places[i]: r for i, r in timing.failed.items()},
        timing.yardstick,
        timing.machine,
    )


def front_target(storage: Any, study_names: Sequence[str]) -> str | None:
    """The ``measure.target`` the studies' fronts were timed on, if they were.

    Raises:
        SpecError: their fronts were timed on several targets, or some on one and some
            where they trained.
    """
    found: dict[str | None, int] = {}
    for name in study_names:
        try:
            records = read_records(storage, name)
            study = load_study_readonly(storage, name)
        except StoreError as exc:
            raise storage_error(exc) from exc
        for record in pareto_front(records, study_objectives(study)):
            value = record.metrics.get("latency_target")
            found.setdefault(None if value is None else str(value), record.number)
    if len(found) > 1:
        named = ", ".join(
            f"trial {n} on {repr(t) if t else 'the machine it trained on'}"
            for t, n in found.items()
        )
        raise SpecError(
            f"the front was timed on more than one machine ({named}); `tuner retime --here` "
            "times every model on one machine"
        )
    return next(iter(found), None)


def _devices(pool: list[_Candidate]) -> set[str]:
    """The devices the pool's models were timed on."""
    return {str(c.record.metrics.get("latency_device") or "cpu") for c in pool}


def _time_in_turns(
    pool: list[_Candidate], devices: set[str], rounds: int, say: Callable[[str], None]
) -> list[float]:
    """Time every model of ``pool`` (timed on ``devices``) ``rounds`` times, each round in a
    rotated order, with the yardstick timed at the start of each round; returns the
    yardstick's timings."""
    # The yardstick as the trials timed it: on their device and with their threads (on the
    # CPU with one thread where they differ).
    device = next(iter(devices)) if len(devices) == 1 else "cpu"
    threads = {c.threads for c in pool}
    yardstick: list[float] = []
    for k in range(rounds):
        yardstick.append(
            reference_ms(device, threads=next(iter(threads)) if len(threads) == 1 else 1)
        )
        shift = -(-k * len(pool) // rounds) % len(pool)  # rounded up: distinct for 2 models
        for candidate in pool[shift:] + pool[:shift]:
            if candidate.failed is None:
                _time_once(candidate, say)
        say(f"round {k + 1}/{rounds} done")
    return yardstick


def _time_once(candidate: _Candidate, say: Callable[[str], None]) -> None:
    """Time ``candidate`` once at each batch size; a model that fails (one that ran when
    its trial timed it) is left out of the rounds after, and the others go on."""
    for suffix, timing in candidate.timings.items():
        try:
            p50, p90 = timing()
        except Exception as exc:  # noqa: BLE001 - reported on the trial, not raised
            candidate.failed = f"its model failed as it was timed again: {first_line(exc)}"
            say(f"{candidate.label}: not re-timed: {candidate.failed}")
            return
        candidate.p50.setdefault(suffix, []).append(p50)
        candidate.p90.setdefault(suffix, []).append(p90)


def _check_rounds(rounds: Any) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise SpecError(f"rounds: got {rounds!r}; expected an integer >= 1")


def _retimed_trial(candidate: _Candidate) -> RetimedTrial:
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
    return RetimedTrial(
        number=candidate.record.number,
        runtime=candidate.runtime,
        batch_size=candidate.batch_size,
        compiled=candidate.compiled,
        stored=stored,
        retimed=retimed,
        stored_machine=None if machine is None else str(machine),
    )


def retime_fronts(
    storage: Any,
    study_names: Sequence[str],
    *,
    rounds: int = DEFAULT_ROUNDS,
    folder: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    save: bool = True,
    target: str | None = None,
) -> dict[str, Retiming]:
    """Time every front trial's kept model of each study again, all side by side in one
    pool on this machine (or on the node of a connected Ray cluster that offers
    ``target``), so that the studies' fronts compare (two nights of a sweep).

    Args:
        storage: an open Optuna storage (writable when ``save``).
        study_names: the studies.
        rounds: times each model is timed, in rotated orders; the medians are kept.
        folder: the artifacts root, when it moved since the studies ran.
        progress: called with a line as each model is ready and each round ends.
        save: keep each study's result on it (:data:`~tuner.storage.keys.RETIMED_ATTR`).
        target: a ``measure.target``: time the pool there, in one Ray task, as trials
            with that target timed their models (see :func:`front_target`).

    Returns:
        Each study's re-timing; a study none of whose front trials could be timed has no
        re-timed trial, and says why in its ``skipped``.

    Raises:
        SpecError: ``rounds`` is not a whole number of at least 1.
        ArtifactMissing: no front trial of any of the studies can be timed here.
        DispatchError: no node offers ``target``, or the timing failed there.
        ExportError: every model failed as it was timed (one line naming the trials); a
            model that fails while others run is listed in ``skipped``, with the reason.
    """
    _check_rounds(rounds)
    say = progress or (lambda _line: None)
    several = len(study_names) > 1
    fronts = [
        _prepare(storage, n, folder, say, f" of {n}" if several else "", here=target is None)
        for n in study_names
    ]
    loaded = [item for f in fronts for item in f.loaded]
    owners = [f for f in fronts for _ in f.loaded]
    names = ", ".join(repr(n) for n in study_names)
    if loaded:
        if target is None:
            timing = _time_pool(loaded, rounds, say)
        else:
            timing = _time_on_target(target, loaded, rounds, say)
        for index, reason in timing.unbuilt.items():
            owners[index].skipped[loaded[index][1].number] = reason
    if not loaded or not (timing.trials or timing.failed):
        why = "; ".join(
            f"trial {n}{f' of {f.name}' if several else ''}: {r}"
            for f in fronts
            for n, r in f.skipped.items()
        )
        where = "here" if target is None else f"on the target {target!r}"
        raise ArtifactMissing(
            f"no front trial of {names} can be re-timed {where} ({why or 'the front is empty'})"
        )
    if not timing.trials:
        raise ExportError(
            "no front model could be timed again: "
            + "; ".join(f"{loaded[i][2]}: {reason}" for i, reason in timing.failed.items())
        )
    for index, reason in timing.failed.items():
        owners[index].skipped[loaded[index][1].number] = reason
    machine, yardstick = timing.machine, timing.yardstick
    at = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results = {}
    for f in fronts:
        trials = [t for i, t in sorted(timing.trials.items()) if owners[i] is f]
        stored = {r.number: r.values for r in f.front}
        values = {t.number: {**stored[t.number], **t.retimed} for t in trials}
        result = Retiming(
            study=f.name,
            machine=machine,
            at=at,
            rounds=rounds,
            reference_ms=statistics.median(yardstick),
            reference_spread=max(yardstick) / min(yardstick) - 1.0,
            trials=trials,
            skipped=f.skipped,
            dominated=dominated_by(values, f.objectives),
            target=target,
        )
        if save and not _keep(storage, f, result, say):
            result = dataclasses.replace(result, kept=False)
        results[f.name] = result
    return results


def _keep(storage: Any, front: _Front, result: Retiming, say: Callable[[str], None]) -> bool:
    """Keep ``result`` on its study; where the store refuses (locked, read-only, gone), say
    so and go on (``False``): the timings are returned all the same."""
    try:
        ride_out(lambda: front.study.set_user_attr(RETIMED_ATTR, result.as_dict()), storage)
    except Exception as exc:  # noqa: BLE001 - the re-timing is still returned and printed
        say(f"the re-timing of {front.name!r} was not kept on the study: {first_line(exc)}")
        return False
    return True


def retime_front(
    storage: Any,
    study_name: str,
    *,
    rounds: int = DEFAULT_ROUNDS,
    folder: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    save: bool = True,
    target: str | None = None,
) -> Retiming:
    """Time every front trial's kept model of ``study_name`` again, side by side on this
    machine (:func:`retime_fronts` for one study; the same arguments and errors)."""
    return retime_fronts(
        storage,
        [study_name],
        rounds=rounds,
        folder=folder,
        progress=progress,
        save=save,
        target=target,
    )[study_name]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def retime(
    study_name: str,
    *,
    storage: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    artifacts: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    address: str | None = None,
    here: bool = False,
    ship: bool = True,
) -> Retiming:
    """Time every front trial's kept model of ``study_name`` again, side by side on this
    machine, and keep the result on the study (what ``tuner retime`` does). A front timed
    on a ``measure.target`` is timed there again: on the node of the Ray cluster at
    ``address`` (else ``$RAY_ADDRESS``) that offers it.

    Args:
        study_name: the study.
        storage: storage URL; else ``$TUNER_STORAGE``, else ``sqlite:///tuner.db``.
        rounds: times each model is timed, in rotated orders; the medians are kept.
        artifacts: the artifacts folder, when it moved since the study ran.
        progress: called with a line as each model is ready and each round ends.
        address: the Ray cluster whose node offers the front's ``measure.target``.
        here: time a target's front on this machine instead.
        ship: joining the cluster, ship this folder to it (where the model classes are).

    Returns:
        Each re-timed trial's stored and re-timed latencies, and the trials that drop off
        the front once timed together (:class:`~tuner.storage.Retiming`).

    Example::

        result = tuner.retime("digits-mlp", storage="sqlite:///tuner.db")
        for trial in result.trials:
            print(trial.number, trial.stored["latency_ms"], trial.retimed["latency_ms"])
    """
    from .storage import open_storage, resolve_url

    _check_rounds(rounds)
    url = resolve_url(storage)
    try:
        # Read-only first: a mistyped URL must not create a store, nor a missing study
        # leave one behind.
        reader = open_storage(url, read_only=True, heartbeat=False)
        try:
            load_study_readonly(reader, study_name)
        finally:
            reader.engine.dispose()
        store = open_storage(url, heartbeat=False)
    except StoreError as exc:
        raise storage_error(exc) from exc
    try:
        target = None if here else front_target(store, [study_name])
        if target is not None:
            from ._ray import join_cluster

            join_cluster(
                address,
                why=f"the front of {study_name!r} was timed on measure.target {target!r}",
                instead="or --here to time it on this machine",
                ship=ship,
            )
        return retime_front(
            store,
            study_name,
            rounds=rounds,
            folder=artifacts,
            progress=progress,
            target=target,
        )
    finally:
        store.engine.dispose()

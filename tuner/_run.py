"""``tuner.run``: create or resume a study on the store and drive it to its budget."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from ._dispatch import (
    BACKENDS,
    NOT_NEEDED,
    Dispatcher,
    InlineDispatcher,
    LocalProcessDispatcher,
    WorkerJob,
    cpu_count,
    retire_retries,
)
from ._exceptions import (
    DispatchError,
    SpecError,
    StoreUnavailableError,
    TrialsKeepFailing,
    storage_error,
)
from ._space import center
from ._spec import StudySpec, load_spec
from .storage import (
    StoreError,
    StoreUnavailable,
    TrialRecord,
    count_states,
    mask_url,
    open_storage,
    pareto_front,
    precision,
    read_records,
    resolve_url,
    show_metric,
    sparsity_label,
)
from .storage._outage import add_listener, ride_out
from .storage._room import connection_room, room_warning
from .storage._url import absolute_url
from .storage.keys import SPEC_ATTR, START_ATTR


@dataclass(frozen=True)
class RunResult:
    """What a run leaves behind: the study's counts and its Pareto front."""

    study_name: str
    storage_url: str
    objectives: dict[str, str]
    counts: dict[str, int]
    pareto_front: list[TrialRecord]
    trials_run: int = 0

    @property
    def n_finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)


def make_dispatcher(backend: str, **options: Any) -> Dispatcher:
    if backend == "inline":
        return InlineDispatcher()
    if backend == "local":
        return LocalProcessDispatcher()
    if backend == "ray":
        try:
            from ._ray import RayDispatcher
        except ImportError as exc:
            raise DispatchError("backend 'ray' needs Ray: pip install 'tuner[ray]'") from exc
        return RayDispatcher(**options)
    raise DispatchError(f"backend {backend!r} is unknown; expected one of {', '.join(BACKENDS)}")


def open_store(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    try:
        return open_storage(url, **kwargs)
    except StoreError as exc:
        raise storage_error(exc) from exc


def prepare_study(
    spec: StudySpec,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    start: bool = True,
) -> optuna.Study:
    """Create the study, or check that the existing one has the same objectives.

    A new study whose spec starts at the ``center`` gets that trial queued first (unless
    ``start`` is false: the caller queues its own first trials)."""
    directions = list(spec.objectives.values())
    names = list(spec.objectives)
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        have = existing.metric_names or []
        have_dirs = [
            "maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize"
            for d in existing.directions
        ]
        if have and (have != names or have_dirs != directions):
            raise SpecError(
                f"spec field 'objectives': study {study_name!r} already exists with objectives "
                f"{dict(zip(have, have_dirs))}; expected the same, or a new --study-name"
            )
        return existing
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    study.set_user_attr("tuner.workload", spec.workload)
    if start:
        queue_center(study, spec)
    return study


def queue_center(study: optuna.Study, spec: StudySpec) -> None:
    """Queue the middle of the search space as the next trial, if the spec starts there.

    A sampler's first trials are random draws, and early stopping trains the first few to
    the end: which draw comes first decides what the first epochs buy. The middle of
    every range is a draw that is rarely extreme on any parameter."""
    if spec.sampler.start != "center":
        return
    params = center(spec.params)
    if params:
        study.enqueue_trial(params, user_attrs={START_ATTR: "center"}, skip_if_exists=True)


def run(
    study: StudySpec | str | Path | Mapping[str, Any],
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    backend: str | None = None,
    study_name: str | None = None,
    progress: bool = False,
    **backend_options: Any,
) -> RunResult:
    """Tune ``study`` until its budget of finished trials is met; return the Pareto front.

    Running the same spec again continues to the same total and never re-runs a
    finished trial.

    Args:
        study: a :class:`StudySpec`, a path to a YAML spec, or the spec as a mapping.
        storage: storage URL; else the spec's ``storage``, else ``$TUNER_STORAGE``,
            else ``sqlite:///tuner.db``.
        n_trials: total finished trials (COMPLETE + PRUNED); else ``budget.n_trials``.
        workers: trials in flight at once.
        backend: ``inline`` (this process), ``local`` (processes) or ``ray``; by default
            ``inline`` for one worker and ``local`` for more.
        study_name: name in the store; else the spec's ``name``.
        progress: draw a progress bar on the terminal.

    Example::

        result = tuner.run("search_spaces/digits_mlp.yaml", n_trials=10)
        for t in result.pareto_front:
            print(t.number, t.values)

    Raises:
        SpecError: the spec or an argument is invalid (nothing is written).
        StorageError: the store cannot be opened.
    """
    spec = load_spec(study)
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1
    ):
        raise SpecError(f"n_trials: got {n_trials!r}; expected an integer >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers: got {workers!r}; expected an integer >= 1")
    backend = backend or ("inline" if workers == 1 else "local")
    if backend not in BACKENDS:
        raise SpecError(f"backend: got {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "inline" and workers != 1:
        raise SpecError(
            f"workers: got {workers} with backend 'inline'; expected 1, or backend 'local'"
        )
    if spec.measure.target and backend != "ray":
        raise SpecError(
            f"spec field 'measure.target': got {spec.measure.target!r} with backend {backend!r}; "
            "expected backend 'ray' (--backend ray, with --address for the cluster whose node "
            "offers it), or no measure.target to time models where they train"
        )
    name = study_name or spec.name
    if study_name is not None:
        spec.with_overrides(name=study_name)  # validates the name
    url = resolve_url(storage, spec.storage)
    budget = n_trials or spec.budget.n_trials
    dispatcher = make_dispatcher(backend, **backend_options)
    dispatcher.preflight(spec.to_dict())  # before the store is touched
    # One line when the store goes away and one when it is back (workers stay quiet).
    stop_telling = add_listener(_say)
    try:
        store = open_store(url)
    finally:
        stop_telling()
    prepare_study(spec, store, name)
    from ._artifacts import artifacts_root, models_in_store

    # Every worker, wherever it runs, keeps its trials' models in the same place: the same
    # folder, or the study store (decided here, where $TUNER_ARTIFACTS is read).
    folder = str(artifacts_root(spec.artifacts.path, url))
    in_store = models_in_store(spec.artifacts, url)
    spec = spec.with_overrides(artifacts=replace(spec.artifacts, path=folder, in_store=in_store))
    if in_store and spec.artifacts.keep != "none":
        from .storage._blobs import StoreArtifacts

        try:  # here, not by workers keeping their first models at once
            StoreArtifacts(store).create_table()
        except StoreError as exc:
            raise storage_error(exc) from exc
    deadline = time.time() + spec.budget.timeout_s if spec.budget.timeout_s else None
    threads = spec.measure.threads or max(1, int(spec.resources.cpus))
    if backend == "local" and workers * threads > cpu_count():
        threads = max(1, cpu_count() // workers)
    run_id = uuid.uuid4().hex
    # Workers open the store from their own folder (a Ray actor's is not this one's).
    worker_url = absolute_url(url)
    jobs = [
        WorkerJob(
            spec=spec.to_dict(),
            storage_url=worker_url,
            study_name=name,
            n_trials=budget,
            deadline=deadline,
            worker_index=i,
            threads=threads,
            run_id=run_id,
        )
        for i in range(workers)
    ]
    before = count_states(store, name)
    # A study already at its budget needs no workers (nor a Ray to start).
    done_before = before.get("COMPLETE", 0) + before.get("PRUNED", 0) >= budget
    # A server nearly out of connections refuses the last workers; say so before they wait.
    crowded = None if done_before else room_warning(connection_room(store), workers)
    if crowded is not None:
        _say(crowded)
    reporter = _Progress(store, name, spec, budget) if progress else None
    if reporter is not None:
        reporter.start(url, workers, backend)
    stop_telling = add_listener(reporter.say if reporter is not None else _say)
    try:
        if not done_before:
            dispatcher.run(jobs, on_tick=_StoreWatch(store, name, reporter).tick)
        return _finish(spec, store, name, url, budget, before, deadline)
    except StoreUnavailable as exc:
        raise StoreUnavailableError(
            f"{exc}; finished trials are kept, run the same command again to resume"
        ) from exc
    finally:
        stop_telling()
        if reporter is not None:
            reporter.close()


def _say(message: str) -> None:
    print(f"tuner: {message}", file=sys.stderr, flush=True)


class _StoreWatch:
    """The driver's look at the store while workers run: rides out an outage (telling
    it once), and draws progress."""

    EVERY_S = 0.5

    def __init__(self, store: Any, name: str, reporter: _Progress | None) -> None:
        self._store = store
        self._name = name
        self._reporter = reporter
        self._last = -math.inf

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.EVERY_S:
            self._last = now
            ride_out(lambda: count_states(self._store, self._name), self._store)
        if self._reporter is not None:
            self._reporter.tick()


def _started(counts: Mapping[str, int]) -> int:
    return sum(n for state, n in counts.items() if state != "WAITING")


def _finish(
    spec: StudySpec,
    store: Any,
    name: str,
    url: str,
    budget: int,
    before: Mapping[str, int],
    deadline: float | None,
) -> RunResult:
    from ._artifacts import enforce_keep_for_run

    enforce_keep_for_run(store, name, spec, url)
    retired = retire_retries(store, name, budget)
    counts = count_states(store, name)
    records = read_records(store, name)
    # Trials that left WAITING or were created, less the queued retries ended unrun: a
    # queued trial (the new study's center, a retry) counts once it is run.
    ran = _started(counts) - _started(before) - len(retired)
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    timed_out = deadline is not None and time.time() >= deadline
    grid_used_up = spec.sampler.name == "grid" and finished >= _grid_size(spec)
    if finished < budget and not timed_out and not grid_used_up:
        store.engine.dispose()
        errors = [r.error for r in records if r.state == "FAIL" and r.error]
        last = errors[-1].splitlines()[0] if errors else "no error recorded"
        raise TrialsKeepFailing(
            f"study {name!r} stopped at {finished}/{budget} finished trials because trials keep "
            f"failing; last error: {last}. Fix the cause and run again to resume"
        )
    result = RunResult(
        study_name=name,
        storage_url=mask_url(url),
        objectives=dict(spec.objectives),
        counts=counts,
        pareto_front=pareto_front(records, spec.objectives),
        trials_run=ran,
    )
    store.engine.dispose()
    return result


def _grid_size(spec: StudySpec) -> int:
    size = 1
    for p in spec.params.values():
        size *= len(p.domain_values())
    return size


class _Progress:
    """A progress bar fed by the store, so it sees every worker's trials.

    Where no bar can be drawn (output to a file, a pipe, a job's log) each trial that ends
    gets one line instead, with the run's count so far.
    """

    def __init__(self, store: Any, name: str, spec: StudySpec, budget: int) -> None:
        self._store = store
        self._name = name
        self._spec = spec
        self._budget = budget
        self._last = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._lock = threading.Lock()
        # Without a bar: a line per trial that ends, after those ended when the run started
        # (a resumed study), which are read once the store answers (None until then).
        self._lines = False
        self._ended: set[int] | None = None
        self._ended_count = -1
        self._best_text = ""

    def start(self, url: str, workers: int, backend: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=True)
        console.print(
            f"study [bold]{self._name}[/] on {mask_url(url)}: {self._budget} trials, "
            f"{workers} worker(s), backend {backend}",
            soft_wrap=True,
        )
        if not console.is_terminal and not _force_progress():
            self._lines = True
            self._log_ended()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal and not _force_progress(),
        )
        self._progress.start()
        self._task = self._progress.add_task("trials", total=self._budget, detail="")
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if self._progress is None or (not force and now - self._last < 1.0):
            return
        self._last = now
        with self._lock:
            try:
                counts = count_states(self._store, self._name)
            except Exception:
                return
            # Every trial is read only when one has ended since the last look: a study of
            # thousands of trials on a shared server is not read in full every second.
            ended = sum(counts.get(state, 0) for state in _ENDED)
            changed = ended != self._ended_count
            self._ended_count = ended
            if self._lines:
                if (changed or self._ended is None) and not self._log_ended():
                    self._ended_count = -1  # look again next time
                return
            finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
            detail = (
                f"done {counts.get('COMPLETE', 0)} · stopped {counts.get('PRUNED', 0)} · "
                f"failed {counts.get('FAIL', 0)} · running {counts.get('RUNNING', 0)}"
            )
            if changed:
                self._best_text = self._best()
            if self._best_text:
                detail += f" · {self._best_text}"
            self._progress.update(self._task, completed=min(finished, self._budget), detail=detail)

    def _log_ended(self) -> bool:
        """One line for each trial that ended since the last look; False where the store
        could not be read."""
        try:
            records = read_records(self._store, self._name)
        except Exception:
            return False
        ended = [r for r in records if r.state in _ENDED]
        if self._ended is None:
            self._ended = {r.number for r in ended}
            self._ended_count = len(ended)  # the next look reads again only if one ends
            return True
        new = sorted((r for r in ended if r.number not in self._ended), key=_end_order)
        # The count each line gives is the finished trials once that one had ended.
        count = sum(r.state != "FAIL" for r in ended) - sum(r.state != "FAIL" for r in new)
        for record in new:
            self._ended.add(record.number)
            count += record.state != "FAIL"
            # A queued retry ended unrun once the budget was met was never this run's trial.
            if record.error != NOT_NEEDED:
                self.say(f"{trial_line(record, self._spec.objectives)} ({count}/{self._budget})")
        return True

    def _best(self) -> str:
        first, direction = next(iter(self._spec.objectives.items()))
        try:
            records = read_records(self._store, self._name)
        except Exception:
            return ""
        parts = []
        if self._spec.early_stopping.name != "none":
            finished = [r for r in records if r.state in ("COMPLETE", "PRUNED")]
            trained = sum(int(r.metrics.get("epochs", len(r.curve))) for r in finished)
            saved = self._spec.budget.max_epochs * len(finished) - trained
            parts.append(f"epochs saved {max(0, saved)}")
        front = pareto_front(records, self._spec.objectives)
        if front:
            values = [r.values[first] for r in front]
            best = max(values) if direction == "maximize" else min(values)
            parts.append(f"best {first} {best:.4g} · front {len(front)}")
        return " · ".join(parts)

    def say(self, message: str) -> None:
        """One line above the progress bar."""
        if self._progress is not None:
            self._progress.console.print(
                f"tuner: {message}", markup=False, highlight=False, soft_wrap=True
            )
        else:
            _say(message)

    def close(self) -> None:
        if self._progress is not None:
            self.tick(force=True)
            self._progress.stop()


_ENDED = ("COMPLETE", "PRUNED", "FAIL")


def _end_order(record: TrialRecord) -> tuple[float, int]:
    end = record.datetime_complete
    return (end.timestamp() if end is not None else math.inf, record.number)


def trial_line(record: TrialRecord, objectives: Mapping[str, str]) -> str:
    """How a trial ended, in one line: its objectives, the epoch it stopped at, or its error.

    Example: ``trial 4 complete (structured 50%, int8): accuracy 89.0%, size_bytes 86.1 KB,
    latency_ms 0.575 ms``.
    """
    if record.state == "FAIL":
        error = (record.error or "no error recorded").splitlines()[0]
        return f"trial {record.number} failed: {error}"
    if record.state == "PRUNED":
        epochs = record.metrics.get("epochs", len(record.curve))
        return f"trial {record.number} stopped early after {epochs} epoch(s)"
    values = ", ".join(
        f"{metric} {show_metric(metric, record.values.get(metric))}" for metric in objectives
    )
    shipped = sparsity_label(record.params, record.metrics)
    if precision(record.metrics) != "float":
        shipped += f", {precision(record.metrics)}"
    return f"trial {record.number} complete ({shipped}): {values}"


def _force_progress() -> bool:
    import os

    return os.environ.get("TUNER_PROGRESS") == "1"


def result_as_json(result: RunResult) -> str:
    return json.dumps(
        [{"number": r.number, "params": r.params, "values": r.values} for r in result.pareto_front],
        indent=2,
        default=str,
    )

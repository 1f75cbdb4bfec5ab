"""Dispatchers keep trials in flight until the study's budget is met.

Every dispatcher runs the same worker loop (:func:`work`) somewhere: in this
process (``inline``), in local processes (``local``) or, elsewhere, on Ray. The
loop reads the budget from the store, so any number of workers and drivers on one
study stop at exactly ``n_trials`` finished (COMPLETE + PRUNED) trials.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy

from ._exceptions import DispatchError

POLL_S = 1.0
MAX_CONSECUTIVE_FAILURES = 5
GAVE_UP_EXIT = 3


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs, as plain picklable data."""

    spec: dict[str, Any]
    storage_url: str
    study_name: str
    n_trials: int
    deadline: float | None = None
    worker_index: int = 0
    threads: int = 1


def _finished_and_running(storage: Any, study_id: int) -> tuple[int, int]:
    from .storage import count_states

    counts = count_states(storage, _study_name(storage, study_id))
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0), counts.get("RUNNING", 0)


def _study_name(storage: Any, study_id: int) -> str:
    return storage.get_study_name_from_id(study_id)


def _admit_under_budget(storage: Any, study_id: int, n_trials: int):
    """Fail the trial at once if trials started before it already fill the budget."""
    from ._objective import BudgetMet

    def admit(trial: optuna.Trial) -> None:
        engine = getattr(storage, "engine", None)
        if engine is None:
            return
        with engine.connect() as conn:
            ahead = conn.execute(
                sqlalchemy.text(
                    "SELECT COUNT(*) FROM trials WHERE study_id = :sid AND number < :num "
                    "AND state IN ('COMPLETE', 'PRUNED', 'RUNNING')"
                ),
                {"sid": study_id, "num": trial.number},
            ).scalar_one()
        if ahead >= n_trials:
            trial.set_user_attr(
                "error", "not run: trials started before it already fill the budget"
            )
            raise BudgetMet()

    return admit


def build_objective(spec: Any, storage: Any, study_id: int, n_trials: int) -> Any:
    """The objective every backend's workers run: budget check, training, compression, measuring."""
    from ._objective import Objective
    from ._workloads import resolve_workload

    return Objective(
        spec,
        resolve_workload(spec.workload),
        admit=_admit_under_budget(storage, study_id, n_trials),
    )


def work(job: WorkerJob) -> int:
    """Run trials of ``job`` until the budget is met or the deadline passes; return trials run."""
    import torch

    from ._samplers import build_sampler
    from ._spec import spec_from_dict
    from .storage import open_storage

    torch.set_num_threads(max(1, job.threads))
    spec = spec_from_dict(job.spec)
    storage = open_storage(job.storage_url)
    study_id = storage.get_study_id_from_name(job.study_name)
    finished, running = _finished_and_running(storage, study_id)
    sampler = build_sampler(spec, seed_offset=1000 * job.worker_index + finished + running)
    study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=sampler)
    objective = build_objective(spec, storage, study_id, job.n_trials)
    ran = 0
    failures = 0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    while job.deadline is None or time.time() < job.deadline:
        finished, running = _finished_and_running(storage, study_id)
        if finished >= job.n_trials:
            break
        if finished + running >= job.n_trials:
            # Trials in flight may still fill the budget; if one dies its retry comes back WAITING.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(POLL_S)
            continue
        before = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        ran += 1
        failed = (
            len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))) > before
        )
        failures = failures + 1 if failed else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            storage.engine.dispose()
            raise WorkerGaveUp(f"the last {failures} trials of this worker failed")
    storage.engine.dispose()
    return ran


class WorkerGaveUp(Exception):
    """A worker stopped because its trials keep failing."""


class Dispatcher(ABC):
    """Where workers run. Subclasses implement :meth:`_launch`, :meth:`_alive` and :meth:`_stop`."""

    name: str = ""

    def run(self, jobs: list[WorkerJob], *, on_tick: Any = None) -> None:
        """Run one worker per job until all are done; ``on_tick()`` is called while waiting."""
        self._launch(jobs)
        try:
            while self._alive():
                if on_tick is not None:
                    on_tick()
                time.sleep(0.5)
            self._check()
        except BaseException:
            self._stop()
            raise
        finally:
            if on_tick is not None:
                on_tick()

    @abstractmethod
    def _launch(self, jobs: list[WorkerJob]) -> None: ...

    @abstractmethod
    def _alive(self) -> bool: ...

    @abstractmethod
    def _stop(self) -> None: ...

    def _check(self) -> None:
        """Raise DispatchError if a worker ended abnormally."""


class InlineDispatcher(Dispatcher):
    """One worker in a thread of this process: for tests and ``--workers 1``."""

    name = "inline"

    def __init__(self) -> None:
        import threading

        self._thread: Any = None
        self._error: BaseException | None = None
        self._threading = threading

    def _launch(self, jobs: list[WorkerJob]) -> None:
        if len(jobs) != 1:
            raise DispatchError(
                f"--workers {len(jobs)} with backend 'inline'; expected 1 (use backend 'local')"
            )

        def target() -> None:
            try:
                work(jobs[0])
            except BaseException as exc:  # handed to the driver thread
                self._error = exc

        self._thread = self._threading.Thread(target=target, name="tuner-worker", daemon=True)
        self._thread.start()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _stop(self) -> None:
        # A thread cannot be killed; its trial's heartbeat stops with the process.
        pass

    def _check(self) -> None:
        if isinstance(self._error, WorkerGaveUp):
            return
        if self._error is not None:
            raise self._error


def _process_main(job: WorkerJob) -> None:
    try:
        work(job)
    except KeyboardInterrupt:
        pass
    except WorkerGaveUp:
        raise SystemExit(GAVE_UP_EXIT) from None


class LocalProcessDispatcher(Dispatcher):
    """N worker processes on this machine, sharing the store."""

    name = "local"

    def __init__(self) -> None:
        self._procs: list[Any] = []

    def _launch(self, jobs: list[WorkerJob]) -> None:
        ctx = mp.get_context("spawn")
        for job in jobs:
            proc = ctx.Process(
                target=_process_main, args=(job,), name=f"tuner-worker-{job.worker_index}"
            )
            proc.start()
            self._procs.append(proc)

    def _alive(self) -> bool:
        return any(p.is_alive() for p in self._procs)

    def _stop(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout=10)

    def _check(self) -> None:
        bad = [p for p in self._procs if p.exitcode not in (0, None, GAVE_UP_EXIT)]
        if len(bad) == len(self._procs) and bad:
            raise DispatchError(
                f"all {len(bad)} worker processes exited with an error (exit codes "
                f"{sorted({p.exitcode for p in bad})}); see the messages above"
            )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]


BACKENDS = ("inline", "local", "ray")


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


def cpu_count() -> int:
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )

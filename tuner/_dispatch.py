"""Dispatchers keep trials in flight until the study's budget is met.

Every dispatcher runs the same worker loop (:func:`work`) somewhere: in this
process (``inline``), in local processes (``local``) or, elsewhere, on Ray. The
loop reads the budget from the store, so any number of workers and drivers on one
study stop at exactly ``n_trials`` finished (COMPLETE + PRUNED) trials.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from ._exceptions import EXIT_GAVE_UP, EXIT_STORE_DOWN, DispatchError, RankDied
from .storage import StoreError, StoreUnavailable, mask_url
from .storage._optuna import enter_optimize_loop, stop_requested, trial_id
from .storage._outage import retry_window_s, ride_out
from .storage.keys import ERROR_ATTR, RETRY_OF_ATTR, RUN_ATTR, WORKER_ATTR

POLL_S = 1.0
TICK_S = 0.5
MAX_CONSECUTIVE_FAILURES = 5
# A worker process exits with these when its trials keep failing, or when it waited out
# the store's retry window.
GAVE_UP_EXIT = EXIT_GAVE_UP
STORE_DOWN_EXIT = EXIT_STORE_DOWN


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
    run_id: str = ""


# The system attribute that says which run's workers are running a trial.
# Set by Optuna's stale-trial retry on the WAITING copy of a failed trial.
INTERRUPTED = "interrupted: the run was stopped while this trial was running; it is retried"


def _finished_and_running(storage: Any, study_id: int, connection: Any = None) -> tuple[int, int]:
    from .storage import count_states

    counts = count_states(storage, study_id, connection)
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0), counts.get("RUNNING", 0)


def build_objective(spec: Any, storage: Any, study_id: int) -> Any:
    """The objective every backend's workers run: budget check, training, early stopping,
    compression, measuring."""
    from ._builtin_workloads import resolve_workload
    from ._early_stopping import build_early_stopping
    from ._objective import Objective

    return Objective(
        spec,
        resolve_workload(spec.workload),
        should_stop=build_early_stopping(spec, storage, study_id),
    )


def _heartbeat_interval(storage: Any) -> int | None:
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter() if getter is not None else None


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Any, storage: Any) -> Any:
    """Run one asked trial with heartbeats and record how it ended; return its state.

    What ``study.optimize(n_trials=1)`` does, split so the trial can be created under
    the budget lock: a dead worker's trial stops beating and is failed and retried.
    """
    import threading

    from optuna.trial import TrialState

    interval = _heartbeat_interval(storage)
    stop = threading.Event()
    beat = None
    storage.set_trial_user_attr(trial_id(trial), WORKER_ATTR, worker_name())  # after the lock
    if interval:
        storage.record_heartbeat(trial_id(trial))

        def heartbeat() -> None:
            while not stop.wait(interval):
                try:
                    storage.record_heartbeat(trial_id(trial))
                except Exception:
                    # The store stayed away past its retry window; the trial's own next
                    # write meets the same error and ends the worker.
                    return

        beat = threading.Thread(target=heartbeat, name="tuner-heartbeat", daemon=True)
        beat.start()
    values = None
    retry = False
    try:
        values = objective(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except StoreError:
        # The store is gone: nothing can be recorded. The trial stays RUNNING until a
        # rerun (or another worker's heartbeat check) fails it and queues it again.
        raise
    except RankDied:
        # A dead rank is what a dead worker is: the trial is queued again, same parameters.
        state = TrialState.FAIL
        retry = True
    except Exception:
        state = TrialState.FAIL
    finally:
        stop.set()
        if beat is not None:
            beat.join()
    try:
        study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    except ValueError as exc:
        trial.set_user_attr(ERROR_ATTR, f"invalid objective values {values!r}: {exc}")
        study.tell(trial, state=TrialState.FAIL)
        state = TrialState.FAIL
    if retry:
        again = storage.get_heartbeat_stale_trial_callback()
        if again is not None:
            again(study, storage.get_trial(trial_id(trial)))
    return state


_BUDGET_MET = object()


def _claim(
    storage: Any,
    study: optuna.Study,
    study_id: int,
    job: WorkerJob,
    again: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Any:
    """Under the budget lock: a new trial, None when the budget is taken by trials in
    flight, or ``_BUDGET_MET``.

    ``again`` (parameters, user attributes; see ``Objective.compress_again``) asks for a
    trial that compresses an earlier trial's trained model anew: its training parameters
    are fixed, and the sampler picks what it leaves open. Trials waiting to be retried go
    first.
    """
    from optuna.trial import TrialState

    from .storage._budget import budget_lock

    with budget_lock(storage, study_id) as conn:
        finished, running = _finished_and_running(storage, study_id, conn)
        if finished >= job.n_trials:
            return _BUDGET_MET
        if finished + running >= job.n_trials:
            return None
        with warnings.catch_warnings():
            # run_trial records the heartbeats that study.optimize would.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            if again is not None and not storage.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.WAITING,)
            ):
                # Asked at once under the lock, so no other worker takes it.
                study.enqueue_trial(again[0], user_attrs=again[1])
            trial = study.ask()
        if job.run_id:
            storage.set_trial_system_attr(trial_id(trial), RUN_ATTR, job.run_id)
        return trial


def worker_name() -> str:
    """This worker as a trial records it: its machine and process."""
    import socket

    return f"{socket.gethostname()} (pid {os.getpid()})"


BEATLESS = "its worker lost the study store before the trial's first heartbeat; it is retried"


def fail_stale(study: optuna.Study, storage: Any, study_id: int) -> None:
    """Fail the trials whose workers died, and queue each one again.

    Optuna finds a dead worker's trial by its last heartbeat. A trial created just
    before its worker lost the store has none, and Optuna never calls it stale: it
    would hold a place in the budget for good, and a rerun would wait on it forever.
    Such a trial is failed too once it is older than the grace period, which no live
    worker takes to send a trial's first heartbeat.
    """
    import datetime as dt

    from optuna.trial import TrialState

    from .storage._readers import beatless_running

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    grace = getattr(storage, "grace_period", None) or 2 * (_heartbeat_interval(storage) or 0)
    if not grace:
        return
    # datetime_start is the creating worker's local time, as Optuna writes it.
    cutoff = dt.datetime.now() - dt.timedelta(seconds=grace)
    retry = storage.get_heartbeat_stale_trial_callback()
    for tid in beatless_running(storage, study_id, cutoff):
        try:
            storage.set_trial_user_attr(tid, ERROR_ATTR, BEATLESS)
            storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker was alive after all, and finished it
        if retry is not None:
            retry(study, storage.get_trial(tid))


def work(job: WorkerJob, stop: Any = None, *, build: Any = build_objective) -> int:
    """Run trials of ``job`` until the budget is met or the deadline passes; return trials run.

    ``stop`` (a ``threading.Event``) ends the loop before the next trial once set.
    ``build(spec, storage, study_id)`` makes the objective (the real one by default).
    """
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
    objective = build(spec, storage, study_id)
    # The loop below is study.optimize split in two (see run_trial); samplers that end a
    # study themselves (a grid that is used up) call study.stop(), which Optuna accepts
    # only inside its optimize loop.
    enter_optimize_loop(study)
    ran = 0
    failures = 0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    interval = _heartbeat_interval(storage)
    last_stale_check = -math.inf
    again = None
    while (job.deadline is None or time.time() < job.deadline) and not (
        stop is not None and stop.is_set()
    ):
        # A dead worker's trial is failed here and comes back WAITING (retried). A trial
        # goes stale only after a grace period longer than the heartbeat interval, so
        # looking once per interval finds it as soon as looking before every trial would.
        if interval and time.monotonic() - last_stale_check >= interval:
            fail_stale(study, storage, study_id)
            last_stale_check = time.monotonic()
        # Counting and creating a trial is one call for riding out an outage: if the
        # connection holding the budget lock is lost, the whole claim starts again.
        outcome = ride_out(functools.partial(_claim, storage, study, study_id, job, again), storage)
        if outcome is _BUDGET_MET:
            break
        trial = outcome
        if trial is None:
            # Trials in flight may still fill the budget; if one fails, a slot opens again.
            time.sleep(POLL_S)
            continue
        state = run_trial(study, trial, objective, storage)
        ran += 1
        again = None
        if state == optuna.trial.TrialState.COMPLETE and hasattr(objective, "compress_again"):
            again = objective.compress_again(study, trial.number)
        if stop_requested(study):
            break
        failures = failures + 1 if state == optuna.trial.TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            storage.engine.dispose()
            raise WorkerGaveUp(f"the last {failures} trials of this worker failed")
    storage.engine.dispose()
    return ran


def fail_in_flight(job: WorkerJob) -> list[int]:
    """Fail the trials this run's workers left running, and queue each one again.

    Called once the workers are stopped (an interrupt, SIGTERM, or a driver error), so
    the store never shows work that is not happening. Each trial is retried with the same
    parameters, as a trial of a worker that died is after its heartbeat goes stale, but
    at once rather than after the grace period. Returns the numbers of the trials failed.
    """
    from optuna.trial import TrialState

    from .storage import open_storage

    storage = open_storage(job.storage_url)
    try:
        study = optuna.load_study(study_name=job.study_name, storage=storage)
        retry = storage.get_heartbeat_stale_trial_callback()
        failed: list[int] = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.system_attrs.get(RUN_ATTR) != job.run_id:
                continue
            try:
                storage.set_trial_user_attr(trial_id(trial), ERROR_ATTR, INTERRUPTED)
                storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its worker finished it after all
            failed.append(trial.number)
            if retry is not None:
                retry(study, storage.get_trial(trial_id(trial)))
        return failed
    finally:
        storage.engine.dispose()


def say_stopped_early(stopped: int, workers: int, said: str) -> None:
    """One line for workers that gave up on the store while others went on (the run may
    still meet its budget, with less parallelism than asked for)."""
    import sys

    print(
        f"tuner: {stopped} of {workers} workers stopped early: "
        f"{said or 'the study store was unreachable'}",
        file=sys.stderr,
        flush=True,
    )


class WorkerGaveUp(Exception):
    """A worker stopped because its trials keep failing."""


class Dispatcher(ABC):
    """Where workers run. Subclasses implement :meth:`_launch`, :meth:`_alive` and :meth:`_stop`."""

    name: str = ""

    def preflight(self, spec: Mapping[str, Any]) -> None:
        """Check what the run needs of where trials run before anything is written
        (``spec`` as :meth:`StudySpec.to_dict` gives it); the base needs nothing."""

    def run(self, jobs: list[WorkerJob], *, on_tick: Any = None) -> None:
        """Run one worker per job until all are done; ``on_tick()`` is called while waiting."""
        import signal
        import threading

        main = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
        self._launch(jobs)
        if callable(on_sigterm):
            # Connecting to Ray installs its own SIGTERM handler, which exits at once; the
            # caller's handler stops the workers and fails their trials first.
            signal.signal(signal.SIGTERM, on_sigterm)
        try:
            while self._alive():
                if on_tick is not None:
                    on_tick()
                self._wait(TICK_S)
            self._check()
        except BaseException as exc:
            self._stop()
            if jobs and jobs[0].run_id and not isinstance(exc, StoreUnavailable):
                try:
                    fail_in_flight(jobs[0])
                except Exception as exc:  # the store may be what failed; keep the cause
                    warnings.warn(
                        f"could not fail this run's trials in flight: {exc}; the heartbeat "
                        "check fails and retries them after the grace period",
                        stacklevel=2,
                    )
            raise
        finally:
            if on_tick is not None:
                on_tick()

    def _wait(self, timeout: float) -> None:
        """Return after ``timeout`` seconds, or sooner once no worker is alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive():
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

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
        self._stopping = threading.Event()

    def _launch(self, jobs: list[WorkerJob]) -> None:
        if len(jobs) != 1:
            raise DispatchError(
                f"workers: got {len(jobs)} with backend 'inline'; expected 1 (use backend 'local')"
            )

        def target() -> None:
            try:
                work(jobs[0], self._stopping)
            except BaseException as exc:  # handed to the driver thread
                self._error = exc

        self._thread = self._threading.Thread(target=target, name="tuner-worker", daemon=True)
        self._thread.start()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wait(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _stop(self) -> None:
        # A thread cannot be killed: it starts no new trial, and the trial it is running
        # is failed and queued again by the driver (its result, if it gets one, is refused).
        self._stopping.set()

    def _check(self) -> None:
        if isinstance(self._error, WorkerGaveUp):
            return
        if self._error is not None:
            raise self._error


def _process_main() -> None:
    """Entry point of a local worker process: the job arrives as JSON on stdin."""
    import json
    import sys

    payload = json.loads(sys.stdin.read())
    # The parent's import path, so user workloads it could import are found here too.
    for entry in reversed(payload.pop("sys_path")):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    report = payload.pop("report", None)
    try:
        work(WorkerJob(**payload))
    except KeyboardInterrupt:
        pass
    except WorkerGaveUp:
        raise SystemExit(GAVE_UP_EXIT) from None
    except StoreUnavailable as exc:
        # Not printed: in an outage the driver says so once. The driver reads why from the
        # report, for when only workers were refused (a server out of connections).
        if report:
            with contextlib.suppress(OSError), open(report, "w", encoding="utf-8") as out:
                out.write(str(exc))
        raise SystemExit(STORE_DOWN_EXIT) from None
    except StoreError as exc:
        # One line (the driver adds which workers ended), not a traceback.
        print(f"tuner worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


class LocalProcessDispatcher(Dispatcher):
    """N worker processes on this machine, sharing the store.

    Workers are fresh interpreters (not forks, and not multiprocessing's spawn, which
    re-runs the parent's ``__main__``); the job, storage URL included, goes over stdin
    so it never shows in the process list.
    """

    name = "local"

    def __init__(self) -> None:
        self._procs: list[Any] = []
        self._url = ""
        self._reports = ""

    def _launch(self, jobs: list[WorkerJob]) -> None:
        import dataclasses
        import json
        import subprocess
        import sys
        import tempfile

        # Where a worker that gave up on the store writes why (one file each).
        self._reports = tempfile.mkdtemp(prefix="tuner-workers-")
        for index, job in enumerate(jobs):
            self._url = job.storage_url
            payload = {
                **dataclasses.asdict(job),
                "sys_path": [p for p in sys.path if p],
                "report": os.path.join(self._reports, f"{index}.txt"),
            }
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from tuner._dispatch import _process_main; _process_main()",
                ],
                stdin=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(payload))
            proc.stdin.close()
            self._procs.append(proc)

    def _alive(self) -> bool:
        return any(p.poll() is None for p in self._procs)

    def _stop(self) -> None:
        import shutil

        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()
        shutil.rmtree(self._reports, ignore_errors=True)

    def _store_down_reason(self) -> str:
        """What the first worker that gave up on the store said, if any wrote it."""
        import shutil

        said = ""
        for index in range(len(self._procs)):
            path = os.path.join(self._reports, f"{index}.txt")
            if not said and os.path.exists(path):
                with open(path, encoding="utf-8") as report:
                    said = report.read().strip()
        shutil.rmtree(self._reports, ignore_errors=True)
        return said

    def _check(self) -> None:
        down = [p for p in self._procs if p.returncode == STORE_DOWN_EXIT]
        said = self._store_down_reason()
        if down and len(down) == len(self._procs):
            raise StoreUnavailable(
                f"every worker gave up: {said}"
                if said
                else f"study store {mask_url(self._url)!r} unreachable: every worker gave up "
                f"waiting for it ({retry_window_s():g} s)"
            )
        went_on = [p for p in self._procs if p.returncode in (0, GAVE_UP_EXIT)]
        if down and went_on:
            say_stopped_early(len(down), len(self._procs), said)
        bad = [p for p in self._procs if p.returncode not in (0, None, GAVE_UP_EXIT)]
        if len(bad) == len(self._procs) and bad:
            raise DispatchError(
                f"all {len(bad)} worker processes exited with an error (exit codes "
                f"{sorted({p.returncode for p in bad})}); see the messages above"
            )


BACKENDS = ("inline", "local", "ray")


def cpu_count() -> int:
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


NOT_NEEDED = "not run: the study's budget was met before this retry started"


def retire_retries(storage: Any, study_name: str, budget: int) -> list[int]:
    """Once the budget is met, end the retries no worker will start (FAIL, with why).

    A retry is queued WAITING when a trial is failed (its worker died or was
    interrupted); other trials may fill the budget first. Done under the budget lock,
    where workers claim trials, so a retry being started is never touched. User-queued
    trials (``enqueue_trial``) are left alone. Returns the numbers of the trials ended.
    """
    from optuna.trial import TrialState

    from .storage._budget import budget_lock

    def retire() -> list[int]:
        study_id = storage.get_study_id_from_name(study_name)
        ended: list[int] = []
        with budget_lock(storage, study_id) as conn:
            finished, _ = _finished_and_running(storage, study_id, conn)
            if finished < budget:
                return ended
            for trial in storage.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.WAITING,)
            ):
                if RETRY_OF_ATTR not in trial.system_attrs:
                    continue
                storage.set_trial_user_attr(trial_id(trial), ERROR_ATTR, NOT_NEEDED)
                if storage.set_trial_state_values(trial_id(trial), TrialState.FAIL):
                    ended.append(trial.number)
        return ended

    return ride_out(retire, storage)

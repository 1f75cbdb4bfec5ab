"""A dispatcher for tests: workers are threads of the test process and trials do not train.

Each worker runs tuner's real worker loop (budget lock, heartbeats, retries, the store)
with an objective that samples the spec's search space and returns values computed from
the parameters at once, so the dispatcher contract runs in well under a second.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import optuna

from tuner._dispatch import Dispatcher, WorkerGaveUp, WorkerJob, work
from tuner._space import suggest
from tuner.storage.keys import ERROR_ATTR

FAIL_FIRST = ":flaky"


def quick_objective(spec: Any, _storage: Any, _study_id: int) -> Any:
    """An objective with the spec's parameters and objectives that trains nothing.

    A workload named ``...:flaky`` fails trial 0, as a worker running out of memory would.
    """

    def objective(trial: optuna.Trial) -> list[float]:
        params = suggest(trial, spec.params)
        if spec.workload.endswith(FAIL_FIRST) and trial.number == 0:
            trial.set_user_attr(ERROR_ATTR, "RuntimeError: CUDA out of memory (simulated)")
            raise RuntimeError("CUDA out of memory (simulated)")
        lr = float(params.get("lr", 0.01))
        figures = {
            "accuracy": 1.0 - abs(math.log10(lr) + 1.5) / 3,
            "size_bytes": 4096.0 * (1.0 - float(params.get("prune_threshold", 0.0))),
            "latency_ms": 0.5 if params.get("quantize") == "int8" else 1.0,
        }
        return [figures[name] for name in spec.objectives]

    return objective


class ThreadDispatcher(Dispatcher):
    """One worker thread per job, each running the worker loop with ``build``'s objective."""

    name = "threads"

    def __init__(self, build: Any = quick_objective) -> None:
        self._build = build
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._stopping = threading.Event()

    def _launch(self, jobs: list[WorkerJob]) -> None:
        def target(job: WorkerJob) -> None:
            try:
                work(job, self._stopping, build=self._build)
            except BaseException as exc:  # handed to the driver thread
                self._errors.append(exc)

        self._threads = [
            threading.Thread(target=target, args=(job,), name=f"fake-worker-{job.worker_index}")
            for job in jobs
        ]
        for thread in self._threads:
            thread.start()

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _stop(self) -> None:
        self._stopping.set()

    def _check(self) -> None:
        for error in self._errors:
            if not isinstance(error, WorkerGaveUp):
                raise error

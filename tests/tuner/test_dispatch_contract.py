"""One contract for every dispatcher: inline, local processes and Ray.

Each test runs real training (the tiny digits study) on a real SQLite store; the Ray
cases share one local Ray per test session. The ``fake`` case runs the same contract
through the real driver and worker loop with worker threads whose trials do not train
(``fake_dispatch.py``), in well under a second per test.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from fake_dispatch import ThreadDispatcher

import tuner
import tuner._run
from tuner.storage import count_states, open_storage, read_records

BACKENDS = ["fake", "inline", "local", "ray"]

FLAKY_WORKLOAD = """
from tuner._builtin_workloads import digits_mlp

def flaky(params, ctx):
    if ctx.trial_number == 0:
        raise RuntimeError("CUDA out of memory (simulated by the test workload)")
    return digits_mlp(params, ctx)
"""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    if request.param == "fake":
        monkeypatch.setattr(tuner._run, "make_dispatcher", lambda *_a, **_k: ThreadDispatcher())
        return "local"
    return str(request.param)


def _workers(backend: str, wanted: int = 2) -> int:
    return 1 if backend == "inline" else wanted


def _finished(url: str, name: str = "tiny") -> dict[str, int]:
    return count_states(open_storage(url, heartbeat=False), name)


def test_budget_is_met_exactly(backend: str, sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_epochs": 1})
    result = tuner.run(spec, storage=sqlite_url, backend=backend, workers=_workers(backend))
    counts = _finished(sqlite_url)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 3
    assert counts.get("RUNNING", 0) == 0 and counts.get("WAITING", 0) == 0
    assert result.n_finished == 3 and result.pareto_front
    # Several writers on one SQLite file wait for each other instead of failing.
    assert "database is locked" not in " ".join(r.error or "" for r in _records(sqlite_url))


# Resuming and two drivers are the worker loop's and the store's: the same code for every
# backend. The fake dispatcher runs them with threads; the crash-recovery tests resume
# local and Ray runs, and the PostgreSQL concurrency test runs two drivers' real workers.
@pytest.mark.parametrize("backend", ["fake", "inline"], indirect=True)
def test_resume_adds_no_trials(backend: str, sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(budget={"n_trials": 2, "max_epochs": 1})
    tuner.run(spec, storage=sqlite_url, backend=backend, workers=_workers(backend))
    before = [(r.number, r.state, r.datetime_complete) for r in _records(sqlite_url)]
    again = tuner.run(spec, storage=sqlite_url, backend=backend, workers=_workers(backend))
    assert again.trials_run == 0
    assert [(r.number, r.state, r.datetime_complete) for r in _records(sqlite_url)] == before


def test_failing_trial_is_recorded_and_the_study_goes_on(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_url: str,
    tiny_spec: Any,
) -> None:
    (tmp_path / "contract_workloads.py").write_text(FLAKY_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tiny_spec(workload="contract_workloads:flaky", budget={"n_trials": 3, "max_epochs": 1})
    result = tuner.run(spec, storage=sqlite_url, backend=backend, workers=_workers(backend, 1))
    assert result.n_finished == 3
    records = _records(sqlite_url)
    failed = [r for r in records if r.state == "FAIL"]
    assert [r.number for r in failed] == [0]
    assert "out of memory" in (failed[0].error or "")
    assert sum(r.state == "COMPLETE" for r in records) == 3


@pytest.mark.parametrize("backend", ["fake", "local"], indirect=True)
def test_two_drivers_on_one_study_meet_the_budget_exactly(
    backend: str, sqlite_url: str, tiny_spec: Any
) -> None:
    spec = tiny_spec(budget={"n_trials": 5, "max_epochs": 1})
    tuner.run(spec, storage=sqlite_url, n_trials=1)  # the study exists before both start
    errors: list[BaseException] = []

    def driver() -> None:
        try:
            tuner.run(spec, storage=sqlite_url, backend=backend, workers=1)
        except BaseException as exc:  # re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    counts = _finished(sqlite_url)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 5, counts
    assert counts.get("RUNNING", 0) == 0 and counts.get("WAITING", 0) == 0
    finished = [r for r in _records(sqlite_url) if r.state in ("COMPLETE", "PRUNED")]
    # Every finished trial was run by one worker and recorded once.
    assert len({r.number for r in finished}) == 5
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5


def _records(url: str) -> list[Any]:
    return read_records(open_storage(url, heartbeat=False), "tiny")

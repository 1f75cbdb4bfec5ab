"""Workers and drivers killed with SIGKILL in the middle of trials; the study recovers.

Heartbeats are shortened through the environment (1 s interval, 3 s grace) so a dead
worker's trial is failed and retried within seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tuner.storage import count_states, open_storage

pytestmark = pytest.mark.slow

TUNER = [sys.executable, "-m", "tuner._cli"]
# tuner as started from a terminal, where Ctrl-C raises KeyboardInterrupt: a test run
# started in the background of a script inherits SIGINT ignored, and so would the driver.
TUNER_AT_A_TERMINAL = [
    sys.executable,
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from tuner._cli import main; raise SystemExit(main())",
]
HEARTBEAT_ENV = {"TUNER_HEARTBEAT_INTERVAL_S": "1", "TUNER_GRACE_PERIOD_S": "3"}


def _driver(spec: Path, url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, **HEARTBEAT_ENV, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [*TUNER, "run", str(spec), "--storage", url, "--json", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal would give it
    )


def _started(run_dir: Path) -> list[tuple[int, int]]:
    """(trial number, worker pid) of every trial started so far."""
    found = []
    for f in run_dir.iterdir():
        number, pid = f.name.split(".")
        found.append((int(number), int(pid)))
    return sorted(found)


def _wait_for(condition: Any, what: str, timeout: float = 180) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Say what the run was doing when it stopped moving.
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the run did not end in {timeout:.0f} s:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out[-3000:]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return -1


@contextlib.contextmanager
def _one_look(url: str) -> Iterator[Any]:
    """The store, opened for one look and closed after it. The waits below look ten times
    a second; an engine left to the garbage collector keeps its connections open until
    it is collected, and PostgreSQL runs out of them."""
    storage = open_storage(url, heartbeat=False)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def _trials(url: str) -> list[optuna.trial.FrozenTrial] | None:
    """Every trial of the study "slow", or None while it is not created yet."""
    with _one_look(url) as storage:
        try:
            study = optuna.load_study(study_name="slow", storage=storage)
        except KeyError:
            return None
        return study.get_trials(deepcopy=False)


def _running(url: str) -> set[int]:
    trials = _trials(url) or []
    return {t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING}


def _two_in_flight_early(url: str, budget: int) -> set[int]:
    """The two trials running, while at least two of the budget have not begun; else none."""
    trials = _trials(url)
    if trials is None:
        return set()
    running = {t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING}
    finished = sum(t.state.is_finished() for t in trials)
    return running if len(running) == 2 and finished <= budget - 4 else set()


def _describe(study: optuna.Study) -> str:
    return "; ".join(
        f"{t.number} {t.state.name} {t.system_attrs} {(t.user_attrs.get('error') or '')[:40]!r} "
        f"{t.datetime_start:%H:%M:%S.%f}-{t.datetime_complete or 0:%H:%M:%S.%f}"
        for t in study.trials
    )


def _assert_recovered(url: str, name: str, budget: int, killed: set[int]) -> None:
    counts = count_states(open_storage(url, heartbeat=False), name)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == budget, counts
    assert counts.get("RUNNING", 0) == 0 and counts.get("WAITING", 0) == 0, counts
    study = optuna.load_study(study_name=name, storage=url)
    by_number = {t.number: t for t in study.trials}
    for number in killed:
        dead = by_number[number]
        assert dead.state == optuna.trial.TrialState.FAIL, f"trial {number} is {dead.state.name}"
        retries = [t for t in study.trials if number in t.system_attrs.get("retry_history", [])]
        assert retries, f"killed trial {number} was not retried: {_describe(study)}"
        # A retry runs the parameters the dead trial had drawn; one killed before it drew
        # any (asked for, not begun) has nothing to keep.
        assert all(dead.params.items() <= r.params.items() for r in retries), (
            f"a retry runs the same parameters: trial {number} {dead.params}, "
            f"retries {[r.params for r in retries]}"
        )
        assert all(r.datetime_start >= dead.datetime_complete for r in retries)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_killed_worker_trial_fails_and_is_retried(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, slow_spec: Any
) -> None:
    spec = slow_spec(n_trials=4, epochs=4, epoch_s=0.5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_dir = Path(spec["search_space"]["run_dir"])
    args = ["--workers", "2", "--backend", backend]
    if backend == "ray":
        ray = request.getfixturevalue("ray_local")
        args += ["--address", ray.get_runtime_context().gcs_address]
    driver = _driver(path, url, *args, cwd=tmp_path)
    try:
        number, pid = _wait_for(lambda: _started(run_dir), "a first trial")[0]
        time.sleep(0.5)  # well inside the trial's 2 s of epochs
        os.kill(pid, signal.SIGKILL)
        _finish(driver)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    _assert_recovered(url, "slow", 4, {number})


def test_two_drivers_a_killed_worker_and_a_killed_driver_on_postgres(
    postgres_url: str, request: pytest.FixtureRequest, tmp_path: Path, slow_spec: Any
) -> None:
    ray = request.getfixturevalue("ray_local")
    budget = 10
    spec = slow_spec(n_trials=budget, epochs=3, epoch_s=0.5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = Path(spec["search_space"]["run_dir"])
    address = ray.get_runtime_context().gcs_address
    on_ray = _driver(
        path, postgres_url, "--workers", "2", "--backend", "ray", "--address", address, cwd=tmp_path
    )
    local = _driver(path, postgres_url, "--workers", "2", "--backend", "local", cwd=tmp_path)
    killed: set[int] = set()
    try:
        # Kill the local driver's whole process group while its workers are in trials.
        def local_trials() -> list[int]:
            running = _running(postgres_url)
            return [
                n
                for n, pid in _started(run_dir)
                if n in running and _alive(pid) and _parent(pid) == local.pid
            ]

        _wait_for(local_trials, "trials of the local driver")
        time.sleep(0.3)
        os.killpg(local.pid, signal.SIGKILL)
        local.wait(timeout=30)
        # The killed trials are those still running that no live worker holds: one the
        # killed driver had asked for but not begun has no start file yet, and one that
        # ended just before the kill is kept, not failed. Ray's trials in flight have
        # written their start file within the pause.
        running = _running(postgres_url)
        time.sleep(1.0)
        held = {n for n, pid in _started(run_dir) if _alive(pid)}
        killed.update(running - held)
        assert killed, "the kill caught no trial of the local driver"

        # Kill one Ray worker in the middle of its trial.
        def ray_trial() -> list[tuple[int, int]]:
            running = _running(postgres_url)
            return [
                (n, pid)
                for n, pid in _started(run_dir)
                if n in running and n not in killed and _alive(pid) and _parent(pid) != local.pid
            ]

        number, pid = _wait_for(ray_trial, "a trial on Ray")[-1]
        os.kill(pid, signal.SIGKILL)
        killed.add(number)

        # Run the killed driver again: it resumes the study with the Ray driver still on it.
        again = _driver(path, postgres_url, "--workers", "2", "--backend", "local", cwd=tmp_path)
        _finish(again)
        _finish(on_ray)
    finally:
        for proc in (on_ray, local):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    # Trials the killed driver had finished are kept: only the killed ones failed.
    study = optuna.load_study(study_name="slow", storage=postgres_url)
    failed = {t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL}
    assert killed <= failed
    assert all(
        (t.user_attrs.get("error") or "").startswith("not run")
        for t in study.trials
        if t.number in failed - killed
    ), f"killed {sorted(killed)}: {_describe(study)}"
    _assert_recovered(postgres_url, "slow", budget, killed)


# Each backend with the signal it handles its own way: Ctrl-C's KeyboardInterrupt in
# local worker processes, and SIGTERM, for which connecting to Ray installs a handler of
# its own that tuner replaces.
@pytest.mark.parametrize(("backend", "how"), [("local", "ctrl-c"), ("ray", "sigterm")])
def test_an_interrupted_run_fails_its_trials_in_flight_and_a_rerun_retries_them(
    backend: str, how: str, request: pytest.FixtureRequest, tmp_path: Path, slow_spec: Any
) -> None:
    budget = 6
    spec = slow_spec(n_trials=budget, epochs=8, epoch_s=0.5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--workers", "2", "--backend", backend]
    if backend == "ray":
        ray = request.getfixturevalue("ray_local")
        args += ["--address", ray.get_runtime_context().gcs_address]
    # Default heartbeats (a long grace period): nothing but the interrupt handling can
    # fail the trials in flight within this test.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("TUNER_GRACE_PERIOD_S", None)
    driver = subprocess.Popen(
        [*TUNER_AT_A_TERMINAL, "run", str(path), "--storage", url, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # Two trials in flight with at least two not begun, so the run cannot end before
        # the signal lands (a slow poll on a loaded machine could catch the last two).
        in_flight = _wait_for(lambda: _two_in_flight_early(url, budget), "2 early trials")
        time.sleep(0.5)
        # To the process group: what a terminal sends on Ctrl-C, and what systemd or a
        # scheduler sends to stop a service.
        os.killpg(driver.pid, signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == (130 if how == "ctrl-c" else 143), out[-2000:]
    assert "interrupted" in out and "Traceback" not in out, out[-2000:]
    study = optuna.load_study(study_name="slow", storage=url)
    by_number = {t.number: t for t in study.trials}
    assert not _running(url), _describe(study)
    for number in in_flight:
        assert by_number[number].state == optuna.trial.TrialState.FAIL, _describe(study)
        assert by_number[number].user_attrs["error"].startswith("interrupted")
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == sorted(in_flight)
    # The rerun picks the retries up at once, with their parameters, and meets the budget.
    rerun = _driver(path, url, *args, cwd=tmp_path)
    try:
        _finish(rerun)
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
    _assert_recovered(url, "slow", budget, set(in_flight))


def _outage_driver(path: Path, url: str, cwd: Path, **env_extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [*TUNER, "run", str(path), "--storage", url, "--workers", "2", "--backend", "local"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finished(url: str) -> int:
    trials = _trials(url) or []
    return sum(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in trials
    )


def test_a_database_outage_mid_sweep_is_ridden_out(
    tmp_path: Path, slow_spec: Any, pg_proxy: Any
) -> None:
    # The outage is real: the proxy the sweep talks through drops every connection and
    # refuses new ones for 4 s, as a PostgreSQL restart does.
    spec = slow_spec(n_trials=6, epochs=4, epoch_s=0.5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    driver = _outage_driver(path, pg_proxy.proxied_url, tmp_path)
    try:
        _wait_for(lambda: _finished(pg_proxy.direct_url) >= 2, "2 finished trials")
        assert _running(pg_proxy.direct_url), "trials are in flight when the store goes away"
        pg_proxy.outage(4.0)
        out = _finish(driver)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    lines = out.splitlines()
    assert "Traceback" not in out, out[-3000:]
    assert sum("unreachable" in line for line in lines) == 1, out[-3000:]
    assert sum("is back after" in line for line in lines) == 1, out[-3000:]
    counts = count_states(open_storage(pg_proxy.direct_url, heartbeat=False), "slow")
    # The budget exact, nothing left in flight, and no trial failed: the trials in flight
    # kept running and their writes waited for the store.
    assert counts == {"COMPLETE": 6}, counts


def test_an_outage_past_the_window_stops_the_run_cleanly_and_a_rerun_resumes(
    tmp_path: Path, slow_spec: Any, pg_proxy: Any
) -> None:
    spec = slow_spec(n_trials=4, epochs=4, epoch_s=0.5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    driver = _outage_driver(
        path, pg_proxy.proxied_url, tmp_path, TUNER_STORE_RETRY_S="3", **HEARTBEAT_ENV
    )
    try:
        _wait_for(lambda: _finished(pg_proxy.direct_url) >= 1, "1 finished trial")
        pg_proxy.cut()
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 5, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out[-3000:]
    assert "unreachable for 3 s" in errors[0] and "run the same command again" in errors[0]
    pg_proxy.restore()
    rerun = _driver(
        path, pg_proxy.proxied_url, "--workers", "2", "--backend", "local", cwd=tmp_path
    )
    try:
        _finish(rerun)
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
    counts = count_states(open_storage(pg_proxy.direct_url, heartbeat=False), "slow")
    assert counts.get("COMPLETE", 0) == 4 and counts.get("RUNNING", 0) == 0, counts
    assert counts.get("WAITING", 0) == 0, counts


def test_a_trial_that_never_sent_a_heartbeat_is_failed_and_retried(
    tmp_path: Path, slow_spec: Any
) -> None:
    # A worker that loses the store between creating a trial and its first heartbeat
    # leaves a RUNNING trial with no heartbeat. Optuna never calls it stale; it must not
    # hold a place in the budget for good.
    spec = slow_spec(n_trials=2, epochs=1, epoch_s=0.1)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _finish(_driver(path, url, "--n-trials", "1", cwd=tmp_path), timeout=120)
    study = optuna.load_study(study_name="slow", storage=open_storage(url, heartbeat=False))
    ghost = study.ask(fixed_distributions={"lr": optuna.distributions.FloatDistribution(0.01, 0.1)})
    time.sleep(3.5)  # past the 3 s grace period
    rerun = _driver(path, url, cwd=tmp_path)
    try:
        _finish(rerun, timeout=60)
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
    counts = count_states(open_storage(url, heartbeat=False), "slow")
    assert counts.get("COMPLETE", 0) == 2 and counts.get("RUNNING", 0) == 0, counts
    failed = optuna.load_study(study_name="slow", storage=url).trials[ghost.number]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "first heartbeat" in failed.user_attrs["error"]

"""`tuner submit` and `tuner jobs` against a real Ray head started on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml

from tuner.storage import count_states, open_storage

TUNER = [sys.executable, "-m", "tuner._cli"]
AUTH = {"RAY_AUTH_MODE": "disabled"}  # the same on the head and on the client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head on 127.0.0.1 with its own temp folder, shared by this module's tests;
    every process of it ends afterwards."""
    bin_dir = Path(sys.executable).parent
    temp_dir = tempfile.mkdtemp(prefix="tuner-rh-", dir="/tmp")  # short: Ray's socket paths
    port, dashboard = _free_port(), _free_port()
    env = {**os.environ, **AUTH, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            str(bin_dir / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # Ports of its own, so a Ray already running here (the tests' shared one)
            # cannot keep this head's job agent from starting.
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError("the Ray head did not come up") from None
                time.sleep(1)
        yield address
    finally:
        # Stop exactly this head: its process group, then anything still using its folder.
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        for pid in _pids_with(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def _tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **AUTH}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [*TUNER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_submitted_sweep_succeeds_and_its_trials_are_in_the_store(
    ray_head: str, postgres_url: str, tmp_path: Path, tiny_spec: Any
) -> None:
    # trust authentication ignores the password, so it stands in for a real secret
    url = (
        sqlalchemy.engine.make_url(postgres_url)
        .set(password="s3cret-pw")
        .render_as_string(hide_password=False)
    )
    work = tmp_path / "project"
    work.mkdir()
    (work / "spec.yaml").write_text(
        yaml.safe_dump(tiny_spec("submitted", budget={"n_trials": 2, "max_epochs": 1}))
    )
    (work / "local.db").write_text("not shipped")
    first = _tuner("submit", "spec.yaml", "--address", ray_head, "--storage", url, cwd=work)
    assert first.returncode == 0, first.stderr
    submission_id = next(
        w.rstrip(":") for w in first.stdout.split() if w.startswith("tuner-submitted-")
    )

    again = _tuner("submit", "spec.yaml", "--address", ray_head, "--storage", url, cwd=work)
    assert again.returncode == 1
    assert "already running" in again.stderr and submission_id in again.stderr
    assert "Traceback" not in again.stderr

    followed = _tuner("jobs", "logs", submission_id, "--address", ray_head, "--follow", cwd=work)
    assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr

    status = _tuner("jobs", "status", submission_id, "--address", ray_head, cwd=work)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    listing = _tuner("jobs", "list", "--address", ray_head, cwd=work)
    assert submission_id in listing.stdout and "SUCCEEDED" in listing.stdout, listing.stdout
    logs = _tuner("jobs", "logs", submission_id, "--address", ray_head, cwd=work)
    assert "2 complete" in logs.stdout
    for out in (first, again, followed, status, listing, logs):
        assert "s3cret-pw" not in out.stdout + out.stderr, "the password is never printed"

    counts = count_states(open_storage(postgres_url, heartbeat=False), "submitted")
    assert counts.get("COMPLETE", 0) == 2 and counts.get("RUNNING", 0) == 0

    from ray.job_submission import JobSubmissionClient

    details = JobSubmissionClient(ray_head).get_job_info(submission_id)
    assert "s3cret-pw" not in details.entrypoint
    assert details.runtime_env.get("pip") is None, "no pip in the job's environment"
    assert ".venv" in details.runtime_env["excludes"] and "*.db" in details.runtime_env["excludes"]


def test_submit_without_an_address_is_refused(tmp_path: Path, tiny_spec: Any) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec()))
    env_free = _tuner("submit", "spec.yaml", cwd=tmp_path)
    assert env_free.returncode == 2
    assert env_free.stderr.strip().splitlines()[-1].startswith("error: --address")


def test_a_working_dir_with_a_file_named_like_a_library_is_refused(
    tmp_path: Path, tiny_spec: Any
) -> None:
    # The job runs in the folder it uploads, which Ray puts first on the import path.
    shipped = tmp_path / "project"
    shipped.mkdir()
    (shipped / "spec.yaml").write_text(yaml.safe_dump(tiny_spec()))
    (shipped / "ray.py").write_text("raise ImportError('the folder\\'s ray.py')\n")
    args = ["submit", str(shipped / "spec.yaml"), "--address", "http://127.0.0.1:9"]
    out = _tuner(*args, "--working-dir", str(shipped), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: --working-dir: {shipped / 'ray.py'} would be imported in place of the "
        "installed ray that tuner uses (workloads are imported from the working folder "
        "first); rename it, or run tuner from another folder"
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_a_stopped_job_leaves_no_trial_running(
    ray_head: str, postgres_url: str, tmp_path: Path, slow_spec: Any
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    # The workload ships with the job's working folder, as a user's own module would.
    (work / "slow_workload.py").write_text((tmp_path / "slow_workload.py").read_text())
    (work / "spec.yaml").write_text(yaml.safe_dump(slow_spec(n_trials=3, epochs=40, epoch_s=0.5)))
    submitted = _tuner(
        "submit", "spec.yaml", "--address", ray_head, "--storage", postgres_url, cwd=work
    )
    assert submitted.returncode == 0, submitted.stderr
    submission_id = next(w.rstrip(":") for w in submitted.stdout.split() if w.startswith("tuner-"))
    store = open_storage(postgres_url, heartbeat=False)

    def running() -> int:
        try:
            return count_states(store, "slow").get("RUNNING", 0)
        except Exception:  # the study is not created yet
            return 0

    deadline = time.time() + 180
    while running() < 1:
        assert time.time() < deadline, "the job never had a trial running"
        time.sleep(0.5)
    stopped = _tuner("jobs", "stop", submission_id, "--address", ray_head, cwd=work)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    deadline = time.time() + 60
    while (
        "STOPPED"
        not in _tuner("jobs", "status", submission_id, "--address", ray_head, cwd=work).stdout
    ):
        assert time.time() < deadline, "the job did not stop"
        time.sleep(1)
    # The job's driver failed its trials in flight as interrupted and queued them again:
    # the store shows nothing running, without waiting out a heartbeat grace period.
    counts = count_states(store, "slow")
    assert counts.get("RUNNING", 0) == 0, counts
    assert counts.get("FAIL", 0) >= 1 and counts.get("WAITING", 0) == counts["FAIL"], counts
    store.engine.dispose()

"""Sweeps submitted to a Ray cluster as Ray jobs, through Ray's Jobs API.

The job runs ``tuner run SPEC --backend ray`` on the cluster, inside the packed
working directory. The study store's URL travels in the job's environment, never in
its command line, and is shown masked everywhere.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import DispatchError, SpecError, first_line

STORAGE_VAR = "TUNER_SUBMIT_STORAGE"
STUDY_KEY = "tuner_study"
# Never shipped to the cluster: environments, history, local stores and outputs.
EXCLUDES = [
    ".venv",
    "venv",
    ".git",
    "*.db",
    "*.db-wal",
    "*.db-shm",
    "*.sqlite",
    "*.sqlite3",
    "__pycache__",
    "*.pyc",
    "tuner-artifacts",
    "build",
    "dist",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "node_modules",
]
ACTIVE = ("PENDING", "RUNNING")
AGENT_WAIT_S = 180
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class JobInfo:
    """One submitted sweep as the cluster reports it."""

    submission_id: str
    study: str
    status: str
    message: str
    storage: str
    start_time: float | None
    end_time: float | None


def submission_id_for(study: str) -> str:
    """A Ray submission id naming the study, unique per submission."""
    slug = re.sub(r"[^a-z0-9]+", "-", study.lower()).strip("-") or "study"
    return f"tuner-{slug[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"


def client(address: str | None) -> Any:
    """A ``JobSubmissionClient`` for ``address`` (else ``$RAY_API_SERVER_ADDRESS``/``$RAY_ADDRESS``)."""
    from ._ray import auth_mode

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SpecError(
            "--address: missing; expected the Ray dashboard address, e.g. http://HEAD:8265 "
            "(or set RAY_API_SERVER_ADDRESS)"
        )
    mode = auth_mode()
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise DispatchError("tuner submit needs Ray: pip install 'tuner[ray]'") from exc
    try:
        return JobSubmissionClient(address)
    except Exception as exc:
        raise DispatchError(
            f"cannot reach Ray's job server at {address}: {first_line(exc)} "
            f"(RAY_AUTH_MODE is {mode!r}; it must match the cluster's)"
        ) from exc


def _job_info(details: Any) -> JobInfo:
    from .storage import mask_url

    metadata = details.metadata or {}
    return JobInfo(
        submission_id=details.submission_id or details.job_id or "?",
        study=metadata.get(STUDY_KEY, "?"),
        status=str(getattr(details.status, "value", details.status)),
        message=(details.message or "").strip(),
        storage=mask_url(metadata.get("tuner_storage", ""))
        if metadata.get("tuner_storage")
        else "",
        start_time=details.start_time / 1000 if details.start_time else None,
        end_time=details.end_time / 1000 if details.end_time else None,
    )


def list_jobs(jobs_client: Any) -> list[JobInfo]:
    """Sweeps submitted by tuner, newest first."""
    try:
        found = jobs_client.list_jobs()
    except Exception as exc:
        raise DispatchError(f"cannot list Ray jobs: {first_line(exc)}") from exc
    mine = [_job_info(d) for d in found if (d.metadata or {}).get(STUDY_KEY)]
    return sorted(mine, key=lambda j: j.start_time or 0, reverse=True)


def job_info(jobs_client: Any, submission_id: str) -> JobInfo:
    try:
        return _job_info(jobs_client.get_job_info(submission_id))
    except Exception as exc:
        raise DispatchError(f"no Ray job {submission_id!r}: {first_line(exc)}") from exc


def submit(
    spec_path: str,
    *,
    address: str | None,
    storage: str | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    study_name: str | None = None,
    working_dir: str | Path = ".",
) -> JobInfo:
    """Submit the sweep of ``spec_path`` to the Ray cluster at ``address``.

    The spec is checked here first. The working directory is packed (without
    environments, ``.git``, local stores and outputs) and the job runs
    ``tuner run SPEC --backend ray`` in it.

    Raises:
        SpecError: the spec or an argument is invalid.
        DispatchError: the cluster cannot be reached, or the study already runs there.
    """
    from ._spec import load_spec
    from .storage import mask_url, resolve_url
    from .storage._url import absolute_url, check_url

    folder = Path(working_dir).resolve()
    if not folder.is_dir():
        raise SpecError(f"--working-dir: {str(working_dir)!r} is not a folder")
    from ._folder import shadowing_error

    hidden = shadowing_error(str(folder))  # the job runs in it, with it first on the path
    if hidden is not None:
        raise SpecError(f"--working-dir: {hidden}")
    spec = load_spec(spec_path)
    name = study_name or spec.name
    if study_name is not None:
        spec.with_overrides(name=study_name)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"--workers: got {workers!r}; expected an integer >= 1")
    if n_trials is not None and (isinstance(n_trials, bool) or n_trials < 1):
        raise SpecError(f"--n-trials: got {n_trials!r}; expected an integer >= 1")
    spec_arg = _spec_in_job(spec_path, folder)
    url = absolute_url(resolve_url(storage, spec.storage))
    check_url(url)
    jobs_client = client(address)
    for job in list_jobs(jobs_client):
        if job.study == name and job.status in ACTIVE:
            raise DispatchError(
                f"study {name!r} is already running on this cluster as job {job.submission_id} "
                f"({job.status}); follow it with `tuner jobs logs {job.submission_id} --follow` "
                f"or stop it with `tuner jobs stop {job.submission_id}`"
            )
    command = [
        "python",
        "-m",
        "tuner._submit",
        spec_arg,
        "--workers",
        str(workers),
        "--study-name",
        name,
    ]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    env = {STORAGE_VAR: url}
    from ._ray import FORWARDED_ENV

    env.update({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})
    runtime_env = {"working_dir": str(folder), "excludes": list(EXCLUDES), "env_vars": env}
    submission_id = submission_id_for(name)
    deadline = time.time() + AGENT_WAIT_S
    while True:
        try:
            jobs_client.submit_job(
                entrypoint=shlex.join(command),
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata={STUDY_KEY: name, "tuner_storage": mask_url(url), "tuner_spec": spec_arg},
            )
            break
        except Exception as exc:
            message = first_line(exc).replace(url, mask_url(url))
            # A head that has just started answers before its job agent is up.
            if "No available agent" in message and time.time() < deadline:
                time.sleep(2)
                continue
            raise DispatchError(f"Ray refused the job for study {name!r}: {message}") from exc
    return job_info(jobs_client, submission_id)


def _spec_in_job(spec_path: str, folder: Path) -> str:
    """How the job names the spec: a path inside the working directory, or a shipped name."""
    path = Path(spec_path)
    if not path.exists():
        return spec_path  # a shipped spec's name; the job finds it the same way
    try:
        return str(path.resolve().relative_to(folder))
    except ValueError:
        raise SpecError(
            f"spec: {spec_path!r} is outside the working directory {folder}; "
            "expected a spec inside it (or pass --working-dir)"
        ) from None


def wait(jobs_client: Any, submission_id: str, *, poll_s: float = 1.0) -> JobInfo:
    """Block until the job ends; return its last state."""
    while True:
        info = job_info(jobs_client, submission_id)
        if info.status in TERMINAL:
            return info
        time.sleep(poll_s)


def follow(jobs_client: Any, submission_id: str, out: Any = None) -> JobInfo:
    """Print the job's log as it grows until the job ends; return its last state."""
    import asyncio

    out = out or sys.stdout

    async def tail() -> None:
        async for chunk in jobs_client.tail_job_logs(submission_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as exc:
        raise DispatchError(f"cannot follow the log of {submission_id}: {first_line(exc)}") from exc
    return wait(jobs_client, submission_id, poll_s=0.5)


def logs(jobs_client: Any, submission_id: str) -> str:
    try:
        return str(jobs_client.get_job_logs(submission_id))
    except Exception as exc:
        raise DispatchError(f"no log for Ray job {submission_id!r}: {first_line(exc)}") from exc


def stop(jobs_client: Any, submission_id: str) -> bool:
    try:
        return bool(jobs_client.stop_job(submission_id))
    except Exception as exc:
        raise DispatchError(f"cannot stop Ray job {submission_id!r}: {first_line(exc)}") from exc


def _job_main(argv: list[str]) -> int:
    """Entry point of the job on the cluster: ``tuner run`` with the store from the environment."""
    import argparse

    from ._cli import main

    parser = argparse.ArgumentParser(prog="python -m tuner._submit")
    parser.add_argument("spec")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--study-name")
    parser.add_argument("--n-trials", type=int)
    args = parser.parse_args(argv)
    url = os.environ.get(STORAGE_VAR)
    if not url:
        print(f"error: {STORAGE_VAR} is not set in the job's environment", file=sys.stderr)
        return 2
    run_args = [
        "run",
        args.spec,
        "--storage",
        url,
        "--backend",
        "ray",
        "--workers",
        str(args.workers),
    ]
    if args.study_name:
        run_args += ["--study-name", args.study_name]
    if args.n_trials:
        run_args += ["--n-trials", str(args.n_trials)]
    return main(run_args)


if __name__ == "__main__":
    raise SystemExit(_job_main(sys.argv[1:]))

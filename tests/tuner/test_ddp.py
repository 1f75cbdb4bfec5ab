"""Data-parallel trials (``workers_per_trial: 2``) on CPU with gloo: locally and on Ray."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import tuner
from tuner._ddp import RankJob, train_local
from tuner._ray_train import train_on_ray
from tuner._spec import Resources
from tuner._workloads import TrialContext, TrialStopped
from tuner.storage import open_storage, read_records

RANK_WORKLOADS = """
import json, os, signal
from tuner._builtin_workloads import digits_mlp

# Written into the module: ranks on a Ray started before this test do not see its env.
RANK_LOG = {log!r}

def logged(params, ctx):
    # Every rank notes each epoch it reported, so a test sees where each one stopped.
    report = ctx.report

    def noting(epoch, **metrics):
        with open(os.path.join(RANK_LOG, f"rank{ctx.rank}"), "a") as f:
            f.write(json.dumps(epoch) + "\\n")
        report(epoch, **metrics)

    ctx.report = noting
    return digits_mlp(params, ctx)

def killed(params, ctx):
    # Rank 1 of the first attempt dies in its second epoch, as a rank killed by the OOM
    # killer would; the retry (same parameters) trains normally.
    marker = os.path.join(RANK_LOG, "killed-once")
    report = ctx.report

    def dying(epoch, **metrics):
        if ctx.rank == 1 and epoch == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        report(epoch, **metrics)

    ctx.report = dying
    return digits_mlp(params, ctx)
"""


@pytest.fixture
def rank_workloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The folder the ranks note their epochs in, and the workloads' module name.

    The name is new for each test: Ray keeps its worker processes (and the modules they
    imported) from one test to the next.
    """
    log = tmp_path / "ranks"
    log.mkdir()
    module = f"rank_workloads_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(RANK_WORKLOADS.replace("{log!r}", repr(str(log))))
    monkeypatch.syspath_prepend(str(tmp_path))
    # Spawned ranks (and Ray workers) import the workload by its path too.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    return log, module


def _spec(tiny_spec: Any, name: str, ranks: int, **extra: Any) -> dict[str, Any]:
    return tiny_spec(
        name=name,
        budget={"n_trials": 1, "max_epochs": 3},
        resources={"cpus": 1, "workers_per_trial": ranks},
        sampler={"name": "random", "seed": 5},
        **extra,
    )


def _trains_as_one(two: Any, sqlite_url: str, tiny_spec: Any, epochs: int) -> None:
    """``two`` (a record of a two-rank trial) learned as the same trial in one process does."""
    reference = _spec(tiny_spec, "one", 1)
    reference["budget"] = {"n_trials": 1, "max_epochs": epochs}
    tuner.run(reference, storage=sqlite_url)
    (one,) = read_records(open_storage(sqlite_url, heartbeat=False), "one")
    assert one.state == two.state == "COMPLETE", (one.error, two.error)
    assert one.params == two.params
    # The same steps on the same data: the curves agree within the noise of the
    # ranks' different reduction order (and the trained model is compressed and measured
    # once, in the trial's worker).
    assert len(two.curve) == epochs
    for a, b in zip(one.curve, two.curve):
        assert abs(a - b) <= 0.03, (one.curve, two.curve)
    assert two.metrics["test_accuracy"] > 0.5 and two.values["size_bytes"] > 0


def test_two_ranks_train_as_well_as_one(sqlite_url: str, tiny_spec: Any) -> None:
    # Two local rank processes; on Ray, the killed-rank test below checks the same of the
    # trial it retries.
    tuner.run(_spec(tiny_spec, "two", 2), storage=sqlite_url)
    (two,) = read_records(open_storage(sqlite_url, heartbeat=False), "two")
    _trains_as_one(two, sqlite_url, tiny_spec, epochs=3)


@pytest.mark.parametrize("engine", ["torch", "ray"])
def test_a_stop_on_rank_0_ends_every_rank(
    engine: str, request: pytest.FixtureRequest, rank_workloads: tuple[Path, str]
) -> None:
    log, module = rank_workloads
    stops: list[int] = []

    def on_report(epoch: int, _metrics: dict[str, float]) -> bool:
        stops.append(epoch)
        return epoch == 1  # early stopping's answer after the second epoch

    ctx = TrialContext(device=torch.device("cpu"), max_epochs=5, seed=0, trial_number=0)
    ctx.on_report = on_report
    job = RankJob(
        workload=f"{module}:logged",
        params={"lr": 0.05, "batch_size": 64, "hidden_units": 16},
        world_size=2,
        use_cuda=False,
        max_epochs=5,
        seed=0,
        trial_number=0,
    )
    with pytest.raises(TrialStopped):
        if engine == "ray":
            request.getfixturevalue("ray_local")
            train_on_ray(job, ctx, Resources(cpus=1))
        else:
            train_local(job, ctx)
    assert stops == [0, 1]
    for rank in (0, 1):
        epochs = [int(line) for line in (log / f"rank{rank}").read_text().split()]
        assert epochs == [0, 1], (rank, epochs)
    assert len(ctx.curve) == 2


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_killed_rank_fails_the_trial_and_it_is_retried(
    backend: str,
    request: pytest.FixtureRequest,
    rank_workloads: tuple[Path, str],
    sqlite_url: str,
    tiny_spec: Any,
) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_local")
    spec = _spec(tiny_spec, "killed", 2, workload=f"{rank_workloads[1]}:killed")
    spec["budget"] = {"n_trials": 1, "max_epochs": 2}
    result = tuner.run(spec, storage=sqlite_url, backend=backend, workers=1)
    assert result.n_finished == 1
    records = sorted(
        read_records(open_storage(sqlite_url, heartbeat=False), "killed"), key=lambda r: r.number
    )
    failed, retried = records
    assert failed.state == "FAIL" and "rank" in (failed.error or "") and "retried" in failed.error
    assert retried.state == "COMPLETE" and retried.params == failed.params
    study = optuna.load_study(study_name="killed", storage=sqlite_url)
    assert study.trials[1].system_attrs.get("failed_trial") == study.trials[0].number
    if backend == "ray":
        # The retry's two ranks ran on Ray Train: they learn as one process does.
        _trains_as_one(retried, sqlite_url, tiny_spec, epochs=2)


def test_early_stopping_stops_a_data_parallel_trial(
    rank_workloads: tuple[Path, str], sqlite_url: str, tiny_spec: Any
) -> None:
    log, module = rank_workloads
    spec = _spec(
        tiny_spec,
        "stopping",
        2,
        workload=f"{module}:logged",
        early_stopping={"name": "median", "min_epochs": 1, "min_trials": 1},
    )
    spec["budget"] = {"n_trials": 2, "max_epochs": 4}
    # A trial that learns, then one whose learning rate is far too small: the median rule
    # stops the second after its first epoch, on every rank.
    fixed = {"optimizer": "adamw", "batch_size": 64, "prune_threshold": 0.0, "quantize": "none"}
    study = optuna.create_study(
        study_name="stopping", storage=sqlite_url, directions=["maximize", "minimize", "minimize"]
    )
    study.enqueue_trial({**fixed, "lr": 0.1})
    study.enqueue_trial({**fixed, "lr": 0.0101})
    tuner.run(spec, storage=sqlite_url)
    records = sorted(
        read_records(open_storage(sqlite_url, heartbeat=False), "stopping"), key=lambda r: r.number
    )
    assert [r.state for r in records] == ["COMPLETE", "PRUNED"], [
        (r.state, r.error) for r in records
    ]
    assert len(records[1].curve) < 4
    for rank in (0, 1):
        epochs = [int(line) for line in (log / f"rank{rank}").read_text().split()]
        # 4 epochs of the first trial, then the second's epochs up to its stop.
        assert epochs == [0, 1, 2, 3, *range(len(records[1].curve))], (rank, epochs)

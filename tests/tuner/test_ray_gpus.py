"""GPU scheduling on Ray with logical GPUs (this machine has none).

The session's Ray has 2 logical GPUs: Ray places trials on them and sets
``CUDA_VISIBLE_DEVICES``; the trials run on the CPU.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pytest

import tuner
from tuner.storage import open_storage, read_records

pytestmark = pytest.mark.slow


def _complete(url: str) -> list[Any]:
    return [
        r for r in read_records(open_storage(url, heartbeat=False), "slow") if r.state == "COMPLETE"
    ]


def _max_in_flight(url: str) -> int:
    study = optuna.load_study(study_name="slow", storage=url)
    events = []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        events += [(t.datetime_start, 1), (t.datetime_complete, -1)]
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def test_quarter_gpus_pack_four_trials_on_each_gpu(
    ray_local: Any, sqlite_url: str, slow_spec: Any
) -> None:
    # Each trial waits until all 8 have started: only possible if Ray packs 4 per GPU.
    spec = slow_spec(
        n_trials=8,
        epochs=1,
        epoch_s=0.2,
        resources={"cpus": 0.5, "gpus": 0.25},
        search_space={"barrier": 8, "barrier_s": 150},
    )
    tuner.run(spec, storage=sqlite_url, backend="ray", workers=8)
    records = _complete(sqlite_url)
    assert len(records) == 8
    assert all(r.metrics["started_together"] == 8 for r in records)
    assert all(r.metrics["visible_gpus"] == 1 for r in records), "a trial sees only its GPU"
    assert Counter(r.metrics["gpu_id"] for r in records) == {0.0: 4, 1.0: 4}


def test_whole_gpus_run_at_most_one_trial_per_gpu(
    ray_local: Any, sqlite_url: str, slow_spec: Any
) -> None:
    spec = slow_spec(n_trials=4, epochs=2, epoch_s=0.5, resources={"cpus": 1, "gpus": 1})
    tuner.run(spec, storage=sqlite_url, backend="ray", workers=4)
    records = _complete(sqlite_url)
    assert len(records) == 4
    assert all(r.metrics["visible_gpus"] == 1 for r in records)
    assert {r.metrics["gpu_id"] for r in records} <= {0.0, 1.0}
    # 4 workers asked for, 2 GPUs: Ray holds the other two back.
    assert _max_in_flight(sqlite_url) <= 2

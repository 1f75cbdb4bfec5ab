"""The Ray backend's settings: token authentication agreed between tuner and the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

TUNER = [sys.executable, "-m", "tuner._cli"]


@pytest.mark.slow
def test_an_empty_auth_mode_joins_a_cluster_started_with_it(
    ray_local: Any, tmp_path: Path, tiny_spec: Any
) -> None:
    # Ray reads RAY_AUTH_MODE set but empty as "off"; tuner must read it the same way, or a
    # driver joining such a cluster asks for a token the cluster never made, and hangs.
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(budget={"n_trials": 2, "max_epochs": 1})))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    address = ray_local.get_runtime_context().gcs_address
    done = subprocess.run(
        [*TUNER, "run", str(path), "--storage", url, "--backend", "ray", "--address", address],
        cwd=tmp_path,
        env={**os.environ, "RAY_AUTH_MODE": ""},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_auth_mode_reads_unset_as_token_and_empty_as_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tuner._ray import auth_mode

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert auth_mode() == "token" and os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "")
    assert auth_mode() == "disabled" and os.environ["RAY_AUTH_MODE"] == "disabled"
    monkeypatch.setenv("RAY_AUTH_MODE", "Disabled")
    assert auth_mode() == "disabled"

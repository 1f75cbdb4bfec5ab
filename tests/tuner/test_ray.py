"""The Ray backend's settings: token authentication agreed between tuner and the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

import tuner

TUNER = [sys.executable, "-m", "tuner._cli"]


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


def _target_spec(tiny_spec: Any, target: str) -> dict[str, Any]:
    spec = tiny_spec(budget={"n_trials": 1, "max_epochs": 1})
    # int8: the model sent to the target is a PT2E graph of torchao's quantize ops.
    spec["search_space"] = {**spec["search_space"], "quantize": "int8"}
    spec["measure"] = {**spec["measure"], "target": target}
    return spec


@pytest.mark.slow
def test_measure_target_times_every_model_on_the_node_that_offers_it(
    ray_local: Any, tmp_path: Path, tiny_spec: Any
) -> None:
    address = ray_local.get_runtime_context().gcs_address
    head = ray_local.get_runtime_context().get_node_id()
    # A second node, as a machine like the one the models ship to joins the cluster. It
    # offers no CPU to Ray, so no trial trains there: only the timing goes to it.
    ray_cli = str(Path(sys.executable).parent / "ray")
    node = subprocess.Popen(
        [ray_cli, "start", "--address", address, "--num-cpus", "0", "--num-gpus", "0"]
        + ["--resources", '{"edge": 1}', "--block", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        edge = None
        for _ in range(120):
            alive = [n for n in ray_local.nodes() if n["Alive"] and n["Resources"].get("edge")]
            if alive:
                edge = alive[0]["NodeID"]
                break
            time.sleep(0.5)
        assert edge is not None and edge != head, "the second node did not join"

        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(_target_spec(tiny_spec, "edge")))
        url = f"sqlite:///{tmp_path / 'study.db'}"
        # Joined with RAY_AUTH_MODE set but empty, which Ray reads as "off": tuner must read
        # it the same way, or a driver joining a cluster started so asks for a token the
        # cluster never made, and hangs.
        done = subprocess.run(
            [*TUNER, "run", str(path), "--storage", url, "--backend", "ray", "--address", address],
            cwd=tmp_path,
            env={**os.environ, "RAY_AUTH_MODE": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        trials = optuna.load_study(study_name="tiny", storage=url).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]
        for t in trials:
            attrs = t.user_attrs
            assert attrs["latency_target"] == "edge"
            assert attrs["latency_node_id"] == edge  # timed on the target, not where it trained
            assert (
                attrs["int8_layers"] and attrs["latency_ms"] > 0 and attrs["latency_ms_batch"] > 0
            )
            assert attrs["latency_reference_ms"] > 0 and attrs["latency_machine"]
            # The torch runtime's figures as the trial records them where it times itself.
            assert attrs["latency_runtime"] == "torch" and attrs["compiled"] is False
            assert attrs["latency_batch_size"] == 8 and attrs["compile_time_s"] == 0

        # A target no node offers: one line, with the command that makes one, and nothing
        # written to the store.
        other = tmp_path / "other.db"
        with pytest.raises(tuner.DispatchError) as refused:
            tuner.run(
                _target_spec(tiny_spec, "nowhere"),
                storage=f"sqlite:///{other}",
                backend="ray",
                address=address,
            )
        line = str(refused.value)
        assert "\n" not in line and "offers a unit of the resource 'nowhere'" in line, line
        assert f"ray start --address {address} --resources" in line, line
        assert not other.exists()
    finally:
        node.terminate()
        node.wait(timeout=60)


def test_measure_target_needs_the_ray_backend(tmp_path: Path, tiny_spec: Any) -> None:
    store = tmp_path / "s.db"
    with pytest.raises(tuner.SpecError) as refused:
        tuner.run(_target_spec(tiny_spec, "edge"), storage=f"sqlite:///{store}")
    line = str(refused.value)
    assert line.startswith("spec field 'measure.target': got 'edge' with backend 'inline'"), line
    assert "\n" not in line and not store.exists()

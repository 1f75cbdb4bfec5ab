"""The Ray backend's settings: token authentication agreed between tuner and the cluster."""

from __future__ import annotations

import json
import os
import socket
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


# A user's workload in the folder tuner runs from, with its own model class: the trials
# and the target must import both, from the copy of the folder tuner ships to the cluster.
EDGE_MODELS = """
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import tuner

DRIVER_FOLDER = {folder!r}


class EdgeMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.layers(x)


def edge_mlp(params, ctx):
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    split = (x[:1200], y[:1200]), (x[1200:1500], y[1200:1500]), (x[1500:], y[1500:])
    trained = tuner.train_classifier(
        EdgeMLP(), params, ctx, train=split[0], val=split[1], test=split[2]
    )
    here = Path(__file__).resolve().parent
    trained.metrics["from_shipped_copy"] = float(here != Path(DRIVER_FOLDER).resolve())
    return trained


edge_mlp.metrics = ["from_shipped_copy"]
"""


def _target_spec(tiny_spec: Any, target: str) -> dict[str, Any]:
    spec = tiny_spec(budget={"n_trials": 1, "max_epochs": 1})
    # int8: the model sent to the target is a PT2E graph of torchao's quantize ops.
    spec["search_space"] = {**spec["search_space"], "quantize": "int8"}
    spec["measure"] = {**spec["measure"], "target": target}
    return spec


@pytest.mark.slow
def test_a_cluster_run_ships_its_workload_and_times_each_model_on_the_target(
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

        (tmp_path / "edge_models.py").write_text(EDGE_MODELS.format(folder=str(tmp_path)))
        path = tmp_path / "spec.yaml"
        path.write_text(
            yaml.safe_dump({**_target_spec(tiny_spec, "edge"), "workload": "edge_models:edge_mlp"})
        )
        # Joined with RAY_AUTH_MODE set but empty, which Ray reads as "off": tuner must read
        # it the same way, or a driver joining a cluster started so asks for a token the
        # cluster never made, and hangs. The store is the default, a SQLite file in this
        # folder named by a relative path, which workers running elsewhere must find too.
        done = subprocess.run(
            [*TUNER, "run", str(path), "--backend", "ray", "--address", address],
            cwd=tmp_path,
            env={**os.environ, "RAY_AUTH_MODE": "", "TUNER_STORAGE": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"shipping {tmp_path} to the cluster" in done.stderr, done.stderr[-3000:]
        url = f"sqlite:///{tmp_path / 'tuner.db'}"
        trials = optuna.load_study(study_name="tiny", storage=url).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]
        for t in trials:
            attrs = t.user_attrs
            # The trial imported the workload from the copy tuner shipped, not from this
            # folder: a node without it (no shared disk) runs it the same way.
            assert attrs["from_shipped_copy"] == 1.0
            assert attrs["latency_target"] == "edge"
            assert attrs["latency_node_id"] == edge  # timed on the target, not where it trained
            assert (
                attrs["int8_layers"] and attrs["latency_ms"] > 0 and attrs["latency_ms_batch"] > 0
            )
            assert attrs["latency_reference_ms"] > 0 and attrs["latency_machine"]
            # The torch runtime's figures as the trial records them where it times itself.
            assert attrs["latency_runtime"] == "torch" and attrs["compiled"] is False
            assert attrs["latency_batch_size"] == 8 and attrs["compile_time_s"] == 0

        # tuner retime times the front again where it was timed: on the target.
        env = {**os.environ, "RAY_AUTH_MODE": "", "TUNER_STORAGE": ""}
        env.pop("RAY_ADDRESS", None)
        retime = [*TUNER, "retime", "tiny", "--rounds", "1", "--json"]
        retimed = subprocess.run(
            [*retime, "--address", address],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert retimed.returncode == 0, retimed.stderr[-3000:]
        assert "timing 1 model on the target 'edge'" in retimed.stderr, retimed.stderr[-3000:]
        # The target's own progress reaches this terminal (streamed from the task).
        said = retimed.stderr
        assert "ready (torch) [1/1]" in said and "round 1/1 done" in said, said[-3000:]
        result = json.loads(retimed.stdout)
        assert result["target"] == "edge" and [t["number"] for t in result["trials"]] == [0]
        assert result["trials"][0]["retimed"]["latency_ms"] > 0
        # Without the cluster it says so, rather than time the target's front here.
        alone = subprocess.run(retime, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert alone.returncode != 0
        assert alone.stderr.strip().splitlines() == [
            "error: --address: the front of 'tiny' was timed on measure.target 'edge'; expected "
            "the Ray cluster whose node offers it (--address HEAD:6379, or RAY_ADDRESS), or "
            "--here to time it on this machine"
        ], alone.stderr

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


def test_an_address_where_no_cluster_answers_is_one_line_and_writes_nothing(
    tmp_path: Path, tiny_spec: Any
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()))
    started = time.monotonic()
    done = subprocess.run(
        [*TUNER, "run", str(path), "--backend", "ray", "--address", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env={**os.environ, "TUNER_STORAGE": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Ray on its own retries for minutes; tuner says it at once, before it opens the store.
    assert time.monotonic() - started < 60
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: --address: nothing answers at 127.0.0.1:{port} (Connection refused); expected "
        f"the head of a running Ray cluster (`ray start --head --port {port}`)"
    ], done.stderr
    assert not (tmp_path / "tuner.db").exists()

"""GPU trials: residual CNNs and Transformers trained, compressed and timed on CUDA.

These run only where PyTorch sees a CUDA device (``bench/gpu_check.sh`` runs them there);
elsewhere they are skipped. Fractional GPUs are covered without a GPU by
``test_ray_gpus.py`` (Ray schedules logical GPUs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import tuner
from tuner._shipping import Settings, measure, ship
from tuner._spec import MeasureSpec
from tuner._workloads import TrialContext

from .test_shipping import WORKLOADS, _grid_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda", 0)


def _trained(name: str) -> Any:
    import user_models

    build = getattr(user_models, WORKLOADS[name].split(":")[1])
    params = {"optimizer": "adamw", "lr": 0.003, "batch_size": 64}
    return build(params, TrialContext(CUDA, max_epochs=3, seed=0))


def _against_dense(trained: Any, structure: str, quantize: str) -> tuple[dict, dict]:
    """The figures of ``trained`` shipped with ``quantize``, and dense, on the GPU."""
    calibration = trained.train_data[0][:512]
    figures = {}
    for mode in (quantize, "none"):
        settings = Settings(threshold=0.5, structure=structure, quantize=mode, finetune_epochs=0)
        shipped = ship(trained.model, settings, calibration=calibration, device=CUDA)
        figures[mode] = measure(
            shipped,
            settings=MeasureSpec(batch_size=32, warmup=3, repeats=10),
            threads=1,
            example=trained.test_data[0][:1],
            test_data=trained.test_data,
        )
        assert next(shipped.model.parameters()).device.type == "cuda"
    return figures[quantize], figures["none"]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
@pytest.mark.parametrize("structure", ["unstructured", "structured"])
def test_int8_runs_on_the_gpu_with_the_accuracy_of_the_float_model(
    name: str, structure: str
) -> None:
    int8, dense = _against_dense(_trained(name), structure, "int8")
    assert int8["int8_layers"], "torchao made int8 layers"
    assert not dense["int8_layers"]
    for f in (int8, dense):
        assert f["latency_device"].startswith("cuda"), f["latency_device"]
        assert f["latency_ms"] > 0 and f["latency_ms_batch"] > 0
        assert f["latency_reference_ms"] > 0 and f["latency_machine"].startswith("NVIDIA")
    assert int8["size_bytes"] < dense["size_bytes"]
    assert abs(int8["test_accuracy"] - dense["test_accuracy"]) <= 0.03, (int8, dense)
    if structure == "structured":
        assert dense["removed_units"] > 0


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("model", sorted(WORKLOADS))
def test_a_gpu_study_completes_every_compression_setting(
    model: str, runtime: str, sqlite_url: str, tmp_path: Path
) -> None:
    spec = _grid_spec(f"{model}-{runtime}-gpu", WORKLOADS[model], runtime, compile="auto")
    spec["measure"].update(batch_size=32, warmup=3, repeats=10)
    spec["resources"] = {"gpus": 1}
    spec["artifacts"]["path"] = str(tmp_path / "artifacts")
    tuner.run(spec, storage=sqlite_url, backend="inline")
    study = optuna.load_study(study_name=spec["name"], storage=sqlite_url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4, [
        t.user_attrs.get("error") for t in trials
    ]
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["device"].startswith("cuda"), "the trial trained on the GPU"
        # ONNX Runtime's CPU package runs the exported file on the CPU, and says so.
        where = "cuda" if runtime == "torch" else "cpu"
        assert attrs["latency_device"].startswith(where), attrs["latency_device"]
        assert attrs["accuracy"] > 0.2
        if trial.params["quantize"] == "int8":
            assert attrs["int8_layers"] or attrs.get("onnx_int8_nodes")


def test_keep_float_on_the_gpu_keeps_layers_that_would_be_int8() -> None:
    # On CUDA int8 is nn.Linear alone: `ends` keeps the first and last Linear float (the
    # residual CNN's stem is a convolution, float there anyway).
    trained = _trained("residual-cnn")
    calibration = trained.train_data[0][:512]
    settings = Settings(
        threshold=0.0,
        structure="unstructured",
        quantize="int8",
        finetune_epochs=0,
        keep_float="ends",
    )
    shipped = ship(trained.model, settings, calibration=calibration, device=CUDA)
    assert shipped.report.float_layers == ("head",)
    assert "head" not in shipped.report.int8_layers


def _float8_gpu() -> bool:
    return torch.cuda.get_device_capability(CUDA) >= (8, 9)


@pytest.mark.parametrize("structure", ["unstructured", "structured"])
def test_float8_runs_on_a_gpu_that_has_it(structure: str) -> None:
    if not _float8_gpu():
        pytest.skip("float8 needs a GPU of compute capability 8.9 or more")
    float8, dense = _against_dense(_trained("transformer"), structure, "float8")
    # The feed-forward layers of both encoder layers; attention and the 4-wide embedding
    # stay float.
    assert len(float8["float8_layers"]) == 4, float8["float8_layers"]
    assert not float8["int8_layers"] and not dense["float8_layers"]
    assert float8["compiled"] and float8["latency_device"].startswith("cuda")
    assert float8["size_bytes"] < dense["size_bytes"]
    assert abs(float8["test_accuracy"] - dense["test_accuracy"]) <= 0.03, (float8, dense)


def test_a_gpu_study_with_float8_completes_or_says_why_not(sqlite_url: str, tmp_path: Path) -> None:
    spec = _grid_spec("transformer-float8-gpu", WORKLOADS["transformer"], "torch", compile="auto")
    spec["search_space"]["quantize"]["choices"] = ["int8", "float8"]
    spec["search_space"]["prune_structure"] = "structured"
    spec["budget"]["n_trials"] = 2
    spec["measure"].update(batch_size=32, warmup=3, repeats=10)
    spec["resources"] = {"gpus": 1}
    spec["artifacts"]["path"] = str(tmp_path / "artifacts")
    tuner.run(spec, storage=sqlite_url, backend="inline")
    study = optuna.load_study(study_name=spec["name"], storage=sqlite_url)
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if trial.params["quantize"] == "float8" and not _float8_gpu():
            assert trial.state == optuna.trial.TrialState.FAIL
            assert "compute capability 8.9" in attrs["error"]
            continue
        assert trial.state == optuna.trial.TrialState.COMPLETE, attrs.get("error")
        if trial.params["quantize"] == "float8":
            assert attrs["float8_layers"] and attrs["compiled"]
        if trial.params["quantize"] == "int8":
            assert attrs["int8_layers"]
    # The front timed again side by side on the GPU, each model as its trial shipped it.
    retimed = tuner.retime(spec["name"], storage=sqlite_url, rounds=2)
    assert retimed.machine == torch.cuda.get_device_name(0) and not retimed.skipped
    for trial in retimed.trials:
        assert trial.compiled and trial.runtime == "torch"
        assert trial.retimed["latency_ms"] > 0 and trial.retimed["latency_ms_batch"] > 0

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from torch import nn

import tuner
from tuner._cli import main
from tuner._datasets import digits
from tuner._export import artifact_path, export_bytes
from tuner.storage import open_storage

SPARSE_INT8_SPACE = {
    "optimizer": "adamw",
    "lr": 0.01,
    "batch_size": 64,
    "hidden_units": 64,
    "prune_threshold": 0.8,
    "quantize": {"type": "categorical", "choices": ["int8", "none"]},
}


def _spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "workload": "digits-mlp",
        "search_space": dict(SPARSE_INT8_SPACE),
        "sampler": {"name": "grid"},
        "budget": {"n_trials": 2, "max_epochs": 3},
        "measure": {"batch_size": 8, "warmup": 2, "repeats": 5, "compile": "never"},
    }
    spec.update(overrides)
    return spec


def _trials(url: str, name: str) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return {t.number: t for t in study.get_trials()}


def _onnx_accuracy(path: Path) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, labels = digits().test
    logits = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    return float((logits.argmax(axis=1) == labels.numpy()).mean())


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two trials of one digits MLP at 80% sparsity: one int8, one float; every model kept."""
    folder = tmp_path_factory.mktemp("shipped")
    url = f"sqlite:///{folder / 'study.db'}"
    spec = _spec("ship", artifacts={"keep": "all"})
    tuner.run(spec, storage=url)
    trials = _trials(url, "ship")
    by_mode = {t.params["quantize"]: t for t in trials.values()}
    return {"url": url, "folder": folder, "int8": by_mode["int8"], "float": by_mode["none"]}


def test_models_are_kept_next_to_the_sqlite_store(shipped: dict[str, Any]) -> None:
    store = open_storage(shipped["url"], read_only=True, heartbeat=False)
    for trial in (shipped["int8"], shipped["float"]):
        path = artifact_path(store, "ship", trial.number)
        assert path is not None and path.is_file()
        assert path.parent == shipped["folder"] / "tuner-artifacts" / "ship"
        assert trial.user_attrs["artifact"] == "kept"


def test_sparse_int8_trial_exports_to_onnx_that_runs_within_one_point(
    shipped: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trial = shipped["int8"]
    out = tmp_path / "int8.onnx"
    code = main(
        ["export", "ship", "--trial", str(trial.number), "--format", "onnx", "--out", str(out)]
        + ["--storage", shipped["url"]]
    )
    printed = capsys.readouterr().out
    assert code == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    int8_ops = [n.op_type for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert len(int8_ops) == 3, "every Linear layer computes in int8"
    assert "int8 nodes: 3 (MatMulInteger x3)" in printed
    accuracy = _onnx_accuracy(out)
    assert accuracy == pytest.approx(trial.user_attrs["test_accuracy"], abs=0.01)
    assert "test_accuracy" in printed and "stored vs exported file" in printed
    assert "weights that are zero: 80.0%" in printed

    float_out = tmp_path / "float.onnx"
    code = main(
        ["export", "ship", "--trial", str(shipped["float"].number), "--out", str(float_out)]
        + ["--storage", shipped["url"]]
    )
    assert code == 0
    assert "int8: none" in capsys.readouterr().out
    assert out.stat().st_size < 0.6 * float_out.stat().st_size
    assert _onnx_accuracy(float_out) == pytest.approx(
        shipped["float"].user_attrs["test_accuracy"], abs=1e-9
    )


def test_onnx_keeps_sparse_weights_small_and_dense_float_layers_exact(
    shipped: dict[str, Any],
) -> None:
    store = open_storage(shipped["url"], read_only=True, heartbeat=False)
    data = export_bytes(store, "ship", shipped["float"].number, "onnx")
    dense_params = 64 * 64 + 64 * 64 + 64 * 10
    # 80% zeros: a bitmask and the non-zeros take far less than the dense float weights.
    assert len(data) < 0.4 * dense_params * 4
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inputs = digits().test[0][:5].numpy()
    assert session.run(None, {"input": inputs})[0].shape == (5, 10)


def test_pt2_and_state_dict_exports_load_back(shipped: dict[str, Any], tmp_path: Path) -> None:
    inputs, labels = digits().test
    for trial in (shipped["int8"], shipped["float"]):
        path = tmp_path / f"trial{trial.number}.pt2"
        args = ["export", "ship", "--trial", str(trial.number), "--format", "pt2"]
        assert main([*args, "--out", str(path), "--storage", shipped["url"]]) == 0
        exported = torch.export.load(str(path))
        # The file holds what the graph reads: an int8 graph's int8 weights, not also the
        # float weights they were quantized from.
        placeholders = {n.name: n for n in exported.graph.nodes if n.op == "placeholder"}
        stored = [s for s in exported.graph_signature.input_specs if s.target is not None]
        assert stored and all(placeholders[s.arg.name].users for s in stored), [
            s.target for s in stored if not placeholders[s.arg.name].users
        ]
        program = exported.module()
        with torch.no_grad():
            accuracy = (program(inputs).argmax(1) == labels).float().mean().item()
        assert accuracy == pytest.approx(trial.user_attrs["test_accuracy"], abs=1e-6)

    path = tmp_path / "float.pth"
    number = shipped["float"].number
    args = ["export", "ship", "--trial", str(number), "--format", "state_dict"]
    assert main([*args, "--out", str(path), "--storage", shipped["url"]]) == 0
    state = torch.load(str(path), weights_only=True)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    model.load_state_dict(state)
    weights = torch.cat([model[i].weight.flatten() for i in (0, 2, 4)])
    assert (weights == 0).float().mean().item() == pytest.approx(0.8, abs=0.01)
    with torch.no_grad():
        accuracy = (model(inputs).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(shipped["float"].user_attrs["test_accuracy"], abs=1e-6)


def test_a_model_that_cannot_be_rebuilt_is_one_export_error_line() -> None:
    from tuner._artifacts import TrialModel
    from tuner._exceptions import ExportError
    from tuner._formats import export_trial_model

    x, y = digits().test
    broken = TrialModel(
        model=nn.Linear(64, 10),
        quantize="int8",
        prune_threshold=0.0,
        prune_structure="unstructured",
        calibration=None,
        test_data=(x, y),
        qat_program=b"not a torch.export program",  # a damaged model file
    )
    for fmt in ("pt2", "state_dict", "onnx"):
        with pytest.raises(ExportError) as caught:
            export_trial_model(broken, fmt)
        message = str(caught.value)
        assert message.startswith(f"the trial's model cannot be written as {fmt}: ")
        assert "\n" not in message


def test_a_float8_trial_is_not_exported_and_says_why() -> None:
    from tuner._artifacts import TrialModel
    from tuner._exceptions import ExportError
    from tuner._formats import export_trial_model

    x, y = digits().test
    float8 = TrialModel(
        model=nn.Linear(64, 16),
        quantize="float8",
        prune_threshold=0.0,
        prune_structure="unstructured",
        calibration=x[:32],
        test_data=(x, y),
    )
    for fmt in ("pt2", "state_dict", "onnx"):
        # Not a float model in its place: the ONNX file would not be what was measured.
        with pytest.raises(ExportError, match="shipped float8.*no float8 kernels"):
            export_trial_model(float8, fmt)


def test_export_of_an_unknown_trial_is_bad_input(
    shipped: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.onnx"
    assert main(["export", "ship", "--trial", "7", "--out", str(out), "--storage", shipped["url"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial 7" in err[0] and "0..1" in err[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def pareto_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One objective, so the worse trial is dominated and loses its model under keep: pareto."""
    folder = tmp_path_factory.mktemp("pareto")
    url = f"sqlite:///{folder / 'study.db'}"
    lr = {"type": "categorical", "choices": [1e-4, 0.03]}
    spec = _spec(
        "front",
        objectives={"accuracy": "maximize"},
        search_space={**SPARSE_INT8_SPACE, "lr": lr, "quantize": "none"},
    )
    tuner.run(spec, storage=url)
    trials = _trials(url, "front")
    worse, better = sorted(trials.values(), key=lambda t: t.values[0])
    assert worse.values[0] < better.values[0]
    return {"url": url, "worse": worse, "better": better, "folder": folder}


def test_a_dropped_artifact_says_so_and_how_to_get_the_model_back(
    pareto_study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, worse = pareto_study["url"], pareto_study["worse"]
    store = open_storage(url, read_only=True, heartbeat=False)
    assert artifact_path(store, "front", pareto_study["better"].number) is not None
    assert artifact_path(store, "front", worse.number) is None
    kept = list((pareto_study["folder"] / "tuner-artifacts" / "front").iterdir())
    assert len(kept) == 1, "only the front's model stays on disk"

    out = tmp_path / "worse.onnx"
    args = ["export", "front", "--trial", str(worse.number), "--out", str(out)]
    assert main([*args, "--storage", url]) == 1
    printed = capsys.readouterr().out
    assert f"artifact of trial {worse.number} was dropped by keep: pareto" in printed
    assert f"re-run it with: tuner export front --trial {worse.number}" in printed
    assert "--retrain" in printed
    assert not out.exists()

    assert main([*args, "--retrain", "--storage", url]) == 0
    printed = capsys.readouterr().out
    assert _onnx_accuracy(out) == pytest.approx(worse.user_attrs["test_accuracy"], abs=0.01)
    stored = f"{100 * worse.user_attrs['test_accuracy']:.1f}%"
    assert re.search(rf"test_accuracy\s*│\s*{re.escape(stored)}\s*│", printed), printed


def test_onnxruntime_measurement_makes_the_front_the_figures_of_the_onnx_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = _spec(
        "ort",
        search_space={**SPARSE_INT8_SPACE, "quantize": "int8"},
        budget={"n_trials": 1, "max_epochs": 2},
        measure={"batch_size": 8, "warmup": 5, "repeats": 20, "runtime": "onnxruntime"},
    )
    tuner.run(spec, storage=url)
    (trial,) = _trials(url, "ort").values()
    attrs = trial.user_attrs
    assert attrs["latency_runtime"] == "onnxruntime" and attrs["size_format"] == "onnx"
    assert attrs["onnx_int8_nodes"] == ["MatMulInteger"] * 3
    out = tmp_path / "ort.onnx"
    assert main(["export", "ort", "--trial", "0", "--out", str(out), "--storage", url]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size == attrs["size_bytes"]
    assert _onnx_accuracy(out) == pytest.approx(attrs["test_accuracy"], abs=1e-9)
    assert "size_bytes of the exported file differs" not in printed


def test_a_loaded_program_runs_without_the_per_call_input_check(tmp_path: Path) -> None:
    from tuner._artifacts import load_program
    from tuner._formats import exported_program

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    inputs = torch.randn(5, 8)
    path = tmp_path / "model.pt2"
    torch.export.save(exported_program(model, inputs), str(path))
    as_exported = torch.export.load(str(path)).module()
    assert as_exported.validate_inputs  # what .module() does on every call

    loaded = load_program(str(path))
    assert loaded.validate_inputs is False
    with torch.no_grad():
        assert torch.allclose(loaded(inputs), model(inputs))
        assert torch.allclose(loaded(inputs[:1]), as_exported(inputs[:1]))
        # The graph still guards its input's shape.
        with pytest.raises(Exception, match="7|8"):
            loaded(torch.randn(2, 7))

"""Whole studies on models people ship: a residual CNN and a Transformer, every compression
setting in both runtimes, trained for real on MNIST-1D."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import tuner
from tuner._cli import main as tuner_main
from tuner._formats import OnnxRunner, onnx_bytes
from tuner._shipping import Settings, measure, ship, trial_model
from tuner._spec import MeasureSpec

pytestmark = pytest.mark.slow

WORKLOADS = {
    "residual-cnn": "user_models:residual_cnn",
    "image-resnet": "user_models:image_resnet",
    "transformer": "user_models:transformer",
}


def _grid_spec(name: str, workload: str, runtime: str, compile: str = "never") -> dict[str, Any]:
    # Compiling int8 costs 10-20 s a model on a cold cache; one study below compiles.
    return {
        "name": name,
        "workload": workload,
        "objectives": {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"},
        "search_space": {
            "optimizer": "adamw",
            "lr": 0.003,
            "batch_size": 64,
            "prune_threshold": 0.5,
            "finetune_epochs": 1,
            "prune_structure": {"type": "categorical", "choices": ["unstructured", "structured"]},
            "quantize": {"type": "categorical", "choices": ["none", "int8"]},
        },
        "sampler": {"name": "grid", "seed": 0},
        "budget": {"n_trials": 4, "max_epochs": 2},
        "measure": {
            "batch_size": 8,
            "warmup": 1,
            "repeats": 3,
            "runtime": runtime,
            "compile": compile,
        },
        "artifacts": {"keep": "all"},
    }


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("model", sorted(WORKLOADS))
def test_every_compression_setting_completes(
    model: str, runtime: str, sqlite_url: str, tmp_path: Path
) -> None:
    compiled = model == "residual-cnn" and runtime == "torch"
    spec = _grid_spec(
        f"{model}-{runtime}", WORKLOADS[model], runtime, compile="auto" if compiled else "never"
    )
    spec["artifacts"]["path"] = str(tmp_path / "artifacts")
    tuner.run(spec, storage=sqlite_url)
    study = optuna.load_study(study_name=spec["name"], storage=sqlite_url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4, [
        t.user_attrs.get("error") for t in trials
    ]
    settings = {(t.params["prune_structure"], t.params["quantize"]): t for t in trials}
    assert len(settings) == 4
    dense_params = settings[("unstructured", "none")].user_attrs["param_count"]
    for (structure, quantize), trial in settings.items():
        attrs = trial.user_attrs
        assert attrs["latency_runtime"] == runtime
        assert attrs["accuracy"] > 0.2, (structure, quantize, attrs["accuracy"])
        assert attrs["sparsity"] == pytest.approx(0.5, abs=0.2) or structure == "structured"
        if structure == "structured":
            assert attrs["param_count"] < dense_params / 2 and attrs["removed_units"] > 0
            assert attrs["sparsity"] > 0.5
        if quantize == "int8":
            if runtime == "torch":
                assert attrs["int8_layers"]
                assert attrs["compiled"] == compiled
                assert (attrs["compile_time_s"] > 0) == compiled
                # Whether each batch size was timed compiled with inductor's freezing.
                frozen = [attrs.get("compiled_frozen"), attrs.get("compiled_frozen_batch")]
                assert all(isinstance(f, bool) for f in frozen) == compiled
            else:
                assert attrs["onnx_int8_nodes"]
        else:
            assert not attrs["int8_layers"]
    # int8 ships fewer bytes than float at the same sparsity.
    for structure in ("unstructured", "structured"):
        int8 = settings[(structure, "int8")].user_attrs["size_bytes"]
        assert int8 < settings[(structure, "none")].user_attrs["size_bytes"]


def _answers_the_same_on_every_x86_cpu(path: Path, inputs: torch.Tensor) -> None:
    """The int8 file's weights fit -64..64, and its predictions do not depend on the kernels.

    ONNX Runtime's default int8 kernels on x86 CPUs without VNNI add pairs of uint8 x int8
    products in 16 bits; ``session.x64quantprecision`` switches to uint8 x uint8 kernels,
    exact on every CPU. On a CPU with VNNI both are exact, so the weight range is what
    keeps a file safe on the CPUs this machine may not have.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(path)).graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights, "the file holds int8 weights"
    assert all(w.size == 0 or (w.min() >= -64 and w.max() <= 64) for w in weights)

    def predictions(exact: bool, batch: int) -> np.ndarray:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if exact:
            options.add_session_config_entry("session.x64quantprecision", "1")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = [session.run(None, {name: x.numpy()})[0] for x in inputs.split(batch)]
        return np.concatenate(out).argmax(axis=1)

    exact = predictions(True, len(inputs))
    for batch in (1, 512, len(inputs)):
        assert (predictions(False, batch) == exact).mean() >= 0.995, batch


def _trained_transformer() -> Any:
    from user_models import transformer

    from tuner._workloads import TrialContext

    params = {"optimizer": "adamw", "lr": 0.003, "batch_size": 64}
    return transformer(params, TrialContext(torch.device("cpu"), max_epochs=3, seed=0))


def test_structured_int8_transformer_exports_to_onnx_within_a_point_of_its_stored_accuracy(
    tmp_path: Path,
) -> None:
    trained = _trained_transformer()
    calibration = trained.train_data[0][:512]
    settings = Settings(threshold=0.5, structure="structured", quantize="int8", finetune_epochs=0)
    shipped = ship(trained.model, settings, calibration=calibration, device=torch.device("cpu"))
    attention = shipped.pruned.encoder.layers[0].self_attn
    assert attention.embed_dim == 16, "the attention really narrows"
    stored = measure(
        shipped,
        settings=MeasureSpec(batch_size=8, warmup=1, repeats=3, runtime="onnxruntime"),
        threads=1,
        example=trained.test_data[0][:1],
        test_data=trained.test_data,
    )
    tm = trial_model(
        shipped,
        test_data=trained.test_data,
        measure=MeasureSpec(runtime="onnxruntime"),
        threads=1,
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(tm))
    exported = OnnxRunner(path).accuracy(*trained.test_data)
    assert abs(exported - stored["test_accuracy"]) <= 0.01
    assert stored["onnx_int8_nodes"], "the exported file computes in int8"
    _answers_the_same_on_every_x86_cpu(path, trained.test_data[0])
    # And the torch runtime's int8 copy of the same model agrees with it.
    torch_figures = measure(
        shipped,
        settings=MeasureSpec(batch_size=8, warmup=1, repeats=3, compile="never"),
        threads=1,
        example=trained.test_data[0][:1],
        test_data=trained.test_data,
    )
    assert abs(torch_figures["test_accuracy"] - exported) <= 0.03


def test_distillation_brings_a_pruned_student_closer_to_its_teacher_than_plain_fine_tuning() -> (
    None
):
    from torch import nn

    from tuner._datasets import digits
    from tuner._shipping import finetuner
    from tuner._workloads import fit

    data = digits()
    params = {"optimizer": "adamw", "lr": 3e-3, "batch_size": 32}
    inputs = data.test[0]
    for seed in (0, 1):
        torch.manual_seed(seed)
        # A teacher that disagrees with the labels now and then (briefly trained on few
        # rows): the labels alone pull the student away from it, its outputs pull it back.
        teacher = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        few = (data.train[0][:300], data.train[1][:300])
        fit(teacher, few, params, epochs=3, device=torch.device("cpu"), seed=seed)
        teacher.eval()
        with torch.no_grad():
            said = teacher(inputs).argmax(1)
        agreement = {}
        for distill in ("none", "kd"):
            settings = Settings(0.7, "structured", "none", 3, distill, 4.0, 0.9)
            recover = finetuner(
                settings, params, data.train, teacher=teacher, device=torch.device("cpu"), seed=seed
            )
            shipped = ship(
                teacher,
                settings,
                calibration=data.train[0][:256],
                device=torch.device("cpu"),
                finetune=recover,
            )
            # Removed units stay removed while the student learns.
            assert shipped.model[0].out_features < 128
            with torch.no_grad():
                agreement[distill] = (shipped.model(inputs).argmax(1) == said).float().mean().item()
        assert agreement["kd"] > agreement["none"] + 0.03, (seed, agreement)


def test_gradual_sparsity_shares_the_fine_tune_budget_between_its_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch import nn

    import tuner._shipping as shipping
    from tuner._datasets import digits

    data = digits()
    trained: list[tuple[int, frozenset[tuple[float, ...]]]] = []
    real_fit = shipping.fit

    def fit(model: nn.Module, rows: Any, params: Any, **kwargs: Any) -> None:
        # The real fit, noting how many passes over which rows each step got.
        trained.append((kwargs["epochs"], frozenset(map(tuple, rows[0].tolist()))))
        real_fit(model, rows, params, **kwargs)

    monkeypatch.setattr(shipping, "fit", fit)
    params = {"optimizer": "adamw", "lr": 3e-3, "batch_size": 32}
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    settings = Settings(0.5, "structured", "none", 10, prune_steps=3)
    cpu = torch.device("cpu")
    shipped = ship(
        model,
        settings,
        calibration=data.train[0][:64],
        device=cpu,
        finetune=shipping.finetuner(settings, params, data.train, teacher=None, device=cpu, seed=0),
    )
    assert shipped.model[0].out_features == 16
    # Ten epochs over three steps: 3 + 3 + 4, each over all the training rows.
    assert [epochs for epochs, _ in trained] == [3, 3, 4]
    everything = frozenset(map(tuple, data.train[0].tolist()))
    assert all(rows == everything for _, rows in trained)
    # Early stopping's rung check fine-tunes on an eighth of the rows: the steps share it,
    # one pass each over their own slice.
    trained.clear()
    ship(
        model,
        settings,
        calibration=data.train[0][:64],
        device=cpu,
        finetune=shipping.finetuner(
            settings, params, data.train, teacher=None, device=cpu, seed=0, epochs=0.125
        ),
    )
    assert [epochs for epochs, _ in trained] == [1, 1, 1]
    slices = [rows for _, rows in trained]
    assert all(len(rows) >= len(data.train[0]) // 24 - 5 for rows in slices)
    assert not (slices[0] & slices[1]) and not (slices[1] & slices[2])


def test_a_study_searches_distillation_and_counts_the_fine_tune_as_training(
    sqlite_url: str,
) -> None:
    spec = {
        "name": "distill",
        "workload": "digits-mlp",
        "objectives": {"accuracy": "maximize", "size_bytes": "minimize"},
        "search_space": {
            "optimizer": "adamw",
            "lr": 0.003,
            "prune_threshold": 0.6,
            "prune_structure": "structured",
            "finetune_epochs": 2,
            "prune_steps": 3,
            "distill": {"type": "categorical", "choices": ["none", "kd"]},
            "distill_temperature": {"type": "float", "low": 1.0, "high": 6.0},
            "distill_alpha": {"type": "float", "low": 0.3, "high": 1.0},
        },
        "sampler": {"name": "random", "seed": 3},
        "budget": {"n_trials": 4, "max_epochs": 3},
        "measure": {"batch_size": 8, "warmup": 1, "repeats": 3, "compile": "never"},
        "artifacts": {"keep": "none"},
    }
    tuner.run(spec, storage=sqlite_url)
    study = optuna.load_study(study_name="distill", storage=sqlite_url)
    trials = study.get_trials(deepcopy=False)
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert {t.params["distill"] for t in trials} == {"none", "kd"}
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["finetune_time_s"] > 0
        assert attrs["train_time_s"] > attrs["finetune_time_s"]
        assert attrs["accuracy"] > 0.6, (trial.params, attrs["accuracy"])


def test_layers_kept_in_float_are_recorded_and_float_in_the_onnx_file(
    sqlite_url: str, tmp_path: Path
) -> None:
    spec = _grid_spec("keep-float", WORKLOADS["transformer"], "onnxruntime")
    spec["search_space"].update(
        {
            "prune_threshold": 0.0,
            "prune_structure": "unstructured",
            "quantize": "int8",
            "keep_float": {"type": "categorical", "choices": ["none", "ends", "sensitive"]},
        }
    )
    spec["budget"]["n_trials"] = 3
    spec["artifacts"]["path"] = str(tmp_path / "artifacts")
    tuner.run(spec, storage=sqlite_url)
    study = optuna.load_study(study_name="keep-float", storage=sqlite_url)
    trials = {t.params["keep_float"]: t for t in study.get_trials(deepcopy=False)}
    assert {t.state for t in trials.values()} == {optuna.trial.TrialState.COMPLETE}
    none, ends, sensitive = (trials[k].user_attrs for k in ("none", "ends", "sensitive"))
    assert none["float_layers"] == []
    assert ends["float_layers"] == ["embed", "head"]
    assert len(sensitive["float_layers"]) == 2
    for attrs in (ends, sensitive):
        assert not set(attrs["float_layers"]) & set(attrs["int8_layers"])
        assert len(attrs["onnx_int8_nodes"]) < len(none["onnx_int8_nodes"])
        assert attrs["size_bytes"] > none["size_bytes"]
    assert len(ends["onnx_int8_nodes"]) == len(none["onnx_int8_nodes"]) - 2
    # Attention is one layer, named as in the torch runtime: its output projection with it.
    assert "encoder.layers.0.self_attn" in none["int8_layers"]
    assert not any(name.endswith("out_proj") for name in none["int8_layers"])
    # The exported file is what was measured: two int8 nodes fewer, same accuracy.
    out = tmp_path / "ends.onnx"
    number = trials["ends"].number
    args = ["export", "keep-float", "--trial", str(number), "--format", "onnx", "--out", str(out)]
    assert tuner_main([*args, "--storage", sqlite_url]) == 0
    import onnx

    from tuner._formats import onnx_int8_nodes

    assert len(onnx_int8_nodes(onnx.load(str(out)))) == len(ends["onnx_int8_nodes"])


def test_quantization_aware_training_ships_its_learned_int8_in_the_onnx_file(
    sqlite_url: str, tmp_path: Path
) -> None:
    spec = _grid_spec("qat", WORKLOADS["transformer"], "onnxruntime")
    spec["search_space"].update(
        {
            "prune_threshold": 0.5,
            "prune_structure": "structured",
            "quantize": "int8",
            "qat_epochs": {"type": "categorical", "choices": [0, 1]},
            # No fine-tune: the time QAT takes is the only fine-tuning time.
            "finetune_epochs": 0,
        }
    )
    spec["budget"]["n_trials"] = 2
    spec["artifacts"]["path"] = str(tmp_path / "artifacts")
    tuner.run(spec, storage=sqlite_url)
    study = optuna.load_study(study_name="qat", storage=sqlite_url)
    trials = {t.params["qat_epochs"]: t for t in study.get_trials(deepcopy=False)}
    assert {t.state for t in trials.values()} == {optuna.trial.TrialState.COMPLETE}
    learned = trials[1].user_attrs
    # The file holds the scales training learned: int8 weights behind DequantizeLinear.
    assert learned["onnx_int8_nodes"] and all(
        n.startswith("QDQ") for n in learned["onnx_int8_nodes"]
    )
    assert learned["int8_layers"]
    assert all(not n.startswith("QDQ") for n in trials[0].user_attrs["onnx_int8_nodes"])
    # QAT's fine-tune is training time too.
    assert learned["finetune_time_s"] > 0 == trials[0].user_attrs["finetune_time_s"]
    out = tmp_path / "qat.onnx"
    args = ["export", "qat", "--trial", str(trials[1].number), "--format", "onnx"]
    assert tuner_main([*args, "--out", str(out), "--storage", sqlite_url]) == 0
    import onnx

    from tuner._datasets import mnist1d

    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    test = mnist1d().test
    assert OnnxRunner(out).accuracy(*test) == pytest.approx(learned["test_accuracy"], abs=0.01)
    _answers_the_same_on_every_x86_cpu(out, test[0])
    # A fresh process, as a user runs the CLI, has imported nothing that quantizes: the
    # learned int8 graph still loads, exports to pt2, and that file runs.
    pt2 = tmp_path / "qat.pt2"
    fresh = [sys.executable, "-m", "tuner._cli", "export", "qat", "--trial", str(trials[1].number)]
    done = subprocess.run(
        [*fresh, "--format", "pt2", "--out", str(pt2), "--storage", sqlite_url],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},  # the workload's module
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Traceback" not in done.stderr
    from tuner._artifacts import load_program

    program = load_program(str(pt2))
    x, y = test
    shipped = float((program(x).argmax(dim=1) == y).float().mean())
    assert shipped == pytest.approx(learned["test_accuracy"], abs=0.01)


def test_attention_kept_float_keeps_both_its_projections_float_in_onnx() -> None:
    from user_models import PatchTransformer

    from tuner._artifacts import TrialModel
    from tuner._formats import onnx_int8_nodes, onnx_shipped

    torch.manual_seed(0)
    inputs = torch.randn(64, 1, 40)

    def shipped(float_layers: list[str]) -> tuple[int, tuple[str, ...]]:
        torch.manual_seed(0)
        noise = torch.Generator().manual_seed(1)
        model = PatchTransformer(width=32).eval()
        with torch.no_grad():  # trained layers differ; freshly built ones are copies
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=noise))
        tm = TrialModel(
            model=model,
            quantize="int8",
            prune_threshold=0.0,
            prune_structure="unstructured",
            calibration=inputs,
            test_data=(inputs, torch.zeros(64, dtype=torch.long)),
            float_layers=float_layers,
        )
        proto, layers = onnx_shipped(tm)
        return len(onnx_int8_nodes(proto)), layers

    nodes, layers = shipped([])
    kept_nodes, kept_layers = shipped(["encoder.layers.0.self_attn"])
    assert "encoder.layers.0.self_attn" in layers
    # No int8 node is left that belongs to it: its output projection is named with it.
    assert set(kept_layers) == set(layers) - {"encoder.layers.0.self_attn"}
    assert kept_nodes == nodes - 2  # its input and its output projection


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("workload", ["vit", "tokens"])
def test_structured_int8_vision_and_token_transformers_ship_in_both_runtimes(
    workload: str, runtime: str
) -> None:
    # The ViT's forward cuts tokens by ``self.width`` (as torchvision's VisionTransformer
    # does with ``hidden_dim``): the narrowed attribute must hold in the exported graph too.
    # The token model's input is int64 ids, which its ONNX file must be fed as such.
    import user_models

    from tuner._workloads import TrialContext

    params = {"optimizer": "adamw", "lr": 0.003, "batch_size": 64}
    build = getattr(user_models, workload)
    trained = build(params, TrialContext(torch.device("cpu"), max_epochs=3, seed=0))
    model, inputs = trained.model.eval(), trained.test_data[0]
    settings = Settings(threshold=0.5, structure="structured", quantize="int8", finetune_epochs=0)
    shipped = ship(model, settings, calibration=inputs, device=torch.device("cpu"), runtime=runtime)
    if workload == "vit":
        assert shipped.pruned.width == shipped.pruned.patches.out_channels == 16
    else:
        assert inputs.dtype == torch.int64 and shipped.pruned.embed.embedding_dim == 16
    with torch.no_grad():
        labels = shipped.pruned(inputs).argmax(dim=1)  # the pruned float model's answers
    figures = measure(
        shipped,
        settings=MeasureSpec(batch_size=8, warmup=1, repeats=3, runtime=runtime, compile="never"),
        threads=1,
        example=inputs[:1],
        test_data=(inputs, labels),
    )
    assert (
        figures["latency_ms"] > 0
        and figures["param_count"] < sum(p.numel() for p in model.parameters()) / 3
    )
    int8 = figures["onnx_int8_nodes"] if runtime == "onnxruntime" else figures["int8_layers"]
    assert int8, "it computes in int8"
    if workload == "tokens":
        # The embedding table ships in 8 bits too, read through an int8 Gather in ONNX.
        assert figures["int8_layers"][0] == "embed"
        assert runtime == "torch" or figures["onnx_int8_nodes"][0] == "Gather"
    # What ships (the int8 graph, or the int8 ONNX file) answers as the pruned float model.
    assert figures["test_accuracy"] >= 0.9


def _ship_int8_lookups(
    model: torch.nn.Module, ids: torch.Tensor, runtime: str, **settings: Any
) -> dict[str, Any]:
    """The figures of ``model`` shipped unpruned (int8 unless ``settings`` say otherwise),
    scored against its own float answers on ``ids``."""
    with torch.no_grad():
        labels = model(ids).argmax(dim=1)
    chosen = Settings(
        **{"threshold": 0.0, "structure": "unstructured", "quantize": "int8", **settings},
        finetune_epochs=0,
    )
    shipped = ship(
        model,
        chosen,
        calibration=ids,
        device=torch.device("cpu"),
        runtime=runtime,
        qat=lambda graph: graph(ids),  # one pass sets the fake quantizers' ranges
    )
    spec = MeasureSpec(batch_size=8, warmup=1, repeats=3, runtime=runtime, compile="never")
    return measure(shipped, settings=spec, threads=1, example=ids[:1], test_data=(ids, labels))


def _token_model() -> tuple[torch.nn.Module, torch.Tensor]:
    from user_models import TokenTransformer

    torch.manual_seed(0)
    return TokenTransformer(width=32, levels=2000).eval(), torch.randint(0, 2000, (128, 40))


def test_a_learned_int8_token_model_ships_its_embedding_table_in_eight_bits_in_onnx() -> None:
    model, ids = _token_model()
    onnx = _ship_int8_lookups(model, ids, "onnxruntime", qat_epochs=1)
    learned = _ship_int8_lookups(model, ids, "torch", qat_epochs=1)
    assert onnx["int8_layers"] == learned["int8_layers"]
    assert onnx["int8_layers"][0] == "embed" and onnx["onnx_int8_nodes"][0] == "QDQGather"
    # The table (2000 x 32) is most of the float file; in 8 bits the file is under a third.
    dense = _ship_int8_lookups(model, ids, "onnxruntime", quantize="none")
    assert onnx["size_bytes"] < dense["size_bytes"] / 3
    assert onnx["test_accuracy"] >= 0.9


def test_keep_float_ends_leaves_a_token_models_table_float_in_onnx() -> None:
    model, ids = _token_model()
    figures = {
        keep_float: _ship_int8_lookups(model, ids, "onnxruntime", keep_float=keep_float)
        for keep_float in ("none", "ends")
    }
    assert figures["none"]["int8_layers"][0] == "embed"
    assert figures["none"]["onnx_int8_nodes"][0] == "Gather"
    assert figures["ends"]["float_layers"] == ["embed", "head"]
    assert "embed" not in figures["ends"]["int8_layers"]
    assert "Gather" not in figures["ends"]["onnx_int8_nodes"]
    # The float table is most of the file.
    assert figures["ends"]["size_bytes"] > 2 * figures["none"]["size_bytes"]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_only_embedding_tables_go_to_eight_bits(runtime: str) -> None:
    # A bias table indexed at run time is a Gather from a stored tensor too; it stays float.
    from torch import nn

    class Biased(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(500, 16)
            self.bias_table = nn.Parameter(torch.randn(40, 16))
            self.head = nn.Linear(16, 10)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            # A second lookup, from a table that is no nn.Embedding.
            bias = nn.functional.embedding(ids % 40, self.bias_table)
            return self.head((self.embed(ids) + bias).mean(dim=1))

    torch.manual_seed(0)
    figures = _ship_int8_lookups(Biased().eval(), torch.randint(0, 500, (64, 12)), runtime)
    assert figures["int8_layers"] == ["embed", "head"]
    assert runtime == "torch" or figures["onnx_int8_nodes"].count("Gather") == 1
    assert figures["test_accuracy"] >= 0.9

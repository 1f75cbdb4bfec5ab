from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tuner._compression import quantize, sparsify
from tuner._measure import (
    LatencyStats,
    accuracy,
    deserialize_model_state,
    measure_latency,
    serialize_model,
    size_bytes,
)


def _wide_mlp(width: int = 256) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 8, 5),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Conv1d(8, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 58, 10),
    ).eval()


def test_float_model_round_trips_exactly_including_sparse_tensors_and_buffers() -> None:
    model = sparsify(_cnn(), threshold=0.7)
    model[1].running_mean.uniform_()
    model[1].num_batches_tracked.fill_(7)
    state = deserialize_model_state(serialize_model(model))
    expected = model.state_dict()
    assert list(state) == list(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype, name
        assert torch.equal(state[name], tensor), name


def test_other_dtypes_round_trip() -> None:
    holder = nn.Module()
    holder.register_buffer("halves", torch.tensor([[0.0, 1.5], [0.0, 0.0]], dtype=torch.float16))
    holder.register_buffer("brains", torch.tensor([0.0, -2.25, 0.0], dtype=torch.bfloat16))
    holder.register_buffer("flags", torch.tensor([True, False, False, False, False]))
    holder.register_buffer("scalar", torch.tensor(3.0, dtype=torch.float64))
    state = deserialize_model_state(serialize_model(holder))
    for name, tensor in holder.state_dict().items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name


def test_int8_models_store_int8_weights_with_their_scales_and_round_trip() -> None:
    dynamic, _ = quantize(sparsify(_wide_mlp(), threshold=0.5), mode="int8")
    static, int8_layers = quantize(_cnn(), mode="int8", calibration_inputs=torch.randn(32, 1, 64))
    assert int8_layers == ("0", "3", "6")
    for model, names in ((dynamic, ("0", "2", "4")), (static, int8_layers)):
        state = deserialize_model_state(serialize_model(model))
        for name in names:
            weight, bias = model.get_submodule(name)._weight_bias()
            stored = state[f"{name}.weight"]
            assert stored.dtype == torch.int8
            assert torch.equal(stored, weight.int_repr())
            scales = weight.q_per_channel_scales().to(torch.float32)
            assert torch.equal(state[f"{name}.weight.scale"], scales)
            zero_points = weight.q_per_channel_zero_points().to(torch.int32)
            assert torch.equal(state[f"{name}.weight.zero_point"], zero_points)
            assert torch.equal(state[f"{name}.bias"], bias.detach())


def test_unstructured_sparsity_makes_the_shipped_file_much_smaller() -> None:
    dense = _wide_mlp()
    sparse = sparsify(dense, threshold=0.9)
    assert size_bytes(sparse) < 0.3 * size_bytes(dense)


def test_int8_file_is_about_a_quarter_of_float_and_sparse_int8_is_smaller_still() -> None:
    dense = _wide_mlp()
    int8, _ = quantize(dense, mode="int8")
    assert size_bytes(int8) < 0.35 * size_bytes(dense)
    sparse_int8, _ = quantize(sparsify(dense, threshold=0.8), mode="int8")
    assert size_bytes(sparse_int8) < 0.6 * size_bytes(int8)


def test_serialization_is_deterministic() -> None:
    model, _ = quantize(sparsify(_cnn(), threshold=0.5), mode="int8")
    data = serialize_model(model)
    assert serialize_model(model) == data
    assert serialize_model(copy.deepcopy(model)) == data
    assert size_bytes(model) == len(data)
    assert data.startswith(b"TUNR")


def test_a_file_that_is_not_ours_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a tuner model file"):
        deserialize_model_state(b"PK\x03\x04" + bytes(20))


class _ShapeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.dropout = nn.Dropout(0.5)
        self.shapes: list[tuple[int, ...]] = []
        self.modes: list[bool] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.dropout(self.linear(x))


@pytest.mark.parametrize("example_shape", [(64,), (1, 64)])
def test_latency_runs_the_batch_in_eval_mode_with_the_asked_threads(
    example_shape: tuple[int, ...],
) -> None:
    model = _ShapeRecorder().train()
    threads_before = torch.get_num_threads()
    stats = measure_latency(
        model, torch.randn(example_shape), batch_size=4, warmup=2, repeats=7, threads=1
    )
    assert isinstance(stats, LatencyStats)
    assert 0 < stats.p50_ms <= stats.p90_ms
    assert (stats.batch_size, stats.device, stats.threads) == (4, "cpu", 1)
    assert model.shapes == [(4, 64)] * 9
    assert not any(model.modes) and not any(model.grad_enabled)
    assert model.training and model.dropout.training
    assert torch.get_num_threads() == threads_before


def test_int8_model_is_measured_on_cpu_even_when_cuda_is_asked() -> None:
    int8, _ = quantize(_wide_mlp(), mode="int8")
    stats = measure_latency(int8, torch.randn(1, 64), device="cuda", warmup=1, repeats=3)
    assert stats.device == "cpu" and stats.p50_ms > 0


def test_structured_pruning_makes_the_model_faster() -> None:
    dense = _wide_mlp(width=1024)
    pruned = sparsify(dense, threshold=0.75, structure="structured")
    example = torch.randn(1, 64)
    dense_stats = measure_latency(dense, example, batch_size=64, warmup=3, repeats=15)
    pruned_stats = measure_latency(pruned, example, batch_size=64, warmup=3, repeats=15)
    assert 0 < pruned_stats.p50_ms < dense_stats.p50_ms


def test_latency_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency(_wide_mlp(), torch.randn(64), batch_size=0)
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(_wide_mlp(), torch.randn(64), repeats=0)


def test_accuracy_is_the_fraction_of_argmax_hits_in_eval_mode() -> None:
    logits = torch.randn(10, 4)
    labels = logits.argmax(dim=1)
    model = nn.Sequential(nn.Dropout(0.9)).train()
    assert accuracy(model, logits, labels, batch_size=3) == 1.0
    assert model.training
    wrong = labels.clone()
    wrong[:5] = (wrong[:5] + 1) % 4
    assert accuracy(model, logits, wrong) == 0.5
    assert accuracy(model, logits, wrong, batch_size=3) == 0.5


def test_accuracy_of_int8_model_runs_on_cpu_and_matches_float() -> None:
    model = _wide_mlp()
    inputs = torch.randn(200, 64)
    with torch.no_grad():
        labels = model(inputs).argmax(dim=1)
    int8, _ = quantize(model, mode="int8")
    assert accuracy(int8, inputs, labels, device="cuda") > 0.9


def test_accuracy_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="3 inputs and 2 labels"):
        accuracy(nn.Identity(), torch.randn(3, 4), torch.tensor([0, 1]))

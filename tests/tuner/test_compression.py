from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from tuner._compression import (
    CompressionReport,
    compress,
    count_parameters,
    is_quantized,
    quantize,
    sparsify,
    weight_sparsity,
)
from tuner._exceptions import CompressionError, TunerError

Digits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def digits() -> Digits:
    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    return inputs[train], labels[train], inputs[test], labels[test]


def _train(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    model.eval()


def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(inputs).argmax(dim=1) == labels).float().mean().item()


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(1, 8, 5),
        nn.ReLU(),
        nn.Conv1d(8, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 58, 10),
    )


@pytest.fixture(scope="module")
def trained_mlp(digits: Digits) -> nn.Sequential:
    torch.manual_seed(0)
    model = _mlp()
    _train(model, digits[0], digits[1], steps=150)
    return model


@pytest.fixture(scope="module")
def trained_cnn(digits: Digits) -> nn.Sequential:
    torch.manual_seed(0)
    model = _cnn()
    _train(model, digits[0][:, None, :], digits[1], steps=60)
    return model


def test_trained_fixtures_learn_digits(
    trained_mlp: nn.Sequential, trained_cnn: nn.Sequential, digits: Digits
) -> None:
    assert _accuracy(trained_mlp, digits[2], digits[3]) > 0.9
    assert _accuracy(trained_cnn, digits[2][:, None, :], digits[3]) > 0.9


def test_unstructured_threshold_is_the_global_fraction_of_zero_weights(
    trained_mlp: nn.Sequential,
) -> None:
    before = copy.deepcopy(trained_mlp.state_dict())
    pruned = sparsify(trained_mlp, threshold=0.9)
    assert weight_sparsity(pruned) == pytest.approx(0.9, abs=0.02)
    assert weight_sparsity(trained_mlp) < 0.01
    for key, value in trained_mlp.state_dict().items():
        assert torch.equal(value, before[key]), "the caller's model must not change"
    assert not any(hasattr(module, "weight_mask") for module in pruned.modules())


def test_unstructured_half_keeps_digits_accuracy(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    pruned = sparsify(trained_mlp, threshold=0.5, structure="unstructured")
    dense_accuracy = _accuracy(trained_mlp, digits[2], digits[3])
    assert _accuracy(pruned, digits[2], digits[3]) >= dense_accuracy - 0.03


def test_unstructured_finetune_trains_with_masks_so_zeros_stay_zero(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    saw_masks: list[bool] = []

    def finetune(model: nn.Module) -> None:
        saw_masks.append(
            all(hasattr(m, "weight_mask") for m in model.modules() if isinstance(m, nn.Linear))
        )
        _train(model, digits[0], digits[1], steps=40)

    plain = sparsify(trained_mlp, threshold=0.95)
    tuned = sparsify(trained_mlp, threshold=0.95, finetune=finetune)
    assert saw_masks == [True]
    assert weight_sparsity(tuned) == pytest.approx(0.95, abs=0.01)
    for plain_layer, tuned_layer in zip(plain, tuned, strict=True):
        if isinstance(plain_layer, nn.Linear):
            assert torch.equal(plain_layer.weight == 0, tuned_layer.weight == 0)
    assert _accuracy(tuned, digits[2], digits[3]) > _accuracy(plain, digits[2], digits[3])


def test_structured_mlp_at_0_75_is_rebuilt_smaller_with_same_output_shape(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    pruned, report = compress(
        trained_mlp,
        threshold=0.75,
        structure="structured",
        quantize="none",
        calibration_inputs=None,
    )
    linears = [m for m in pruned if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 8), (8, 10)]
    assert count_parameters(pruned) < count_parameters(trained_mlp) / 3
    assert report.param_count == count_parameters(pruned)
    assert report.removed_units == (64 - 16) + (32 - 8)
    with torch.no_grad():
        assert pruned(digits[2]).shape == trained_mlp(digits[2]).shape
    assert isinstance(trained_mlp[0], nn.Linear) and trained_mlp[0].out_features == 64


def _kept_units(weight: torch.Tensor, fraction: float) -> torch.Tensor:
    units = weight.shape[0]
    norms = weight.flatten(1).norm(dim=1)
    return norms.topk(units - round(fraction * units)).indices.sort().values


def test_structured_cnn_computes_what_the_float_model_computes_without_the_pruned_units() -> None:
    torch.manual_seed(1)
    model = _cnn().eval()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer in (reference[0], reference[2]):
            dropped = torch.ones(layer.out_channels, dtype=torch.bool)
            dropped[_kept_units(layer.weight, 0.5)] = False
            layer.weight[dropped] = 0
            layer.bias[dropped] = 0
    pruned = sparsify(model, threshold=0.5, structure="structured")
    assert (pruned[0].out_channels, pruned[2].in_channels, pruned[2].out_channels) == (4, 4, 8)
    assert pruned[5].in_features == 8 * 58
    inputs = torch.randn(16, 1, 64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(inputs), reference(inputs), rtol=1e-5, atol=1e-5)


def test_structured_slices_batchnorm_and_nested_sequentials() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU()),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2)),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8 * 4, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Linear(12, 5),
    ).eval()
    pruned = sparsify(model, threshold=0.5, structure="structured")
    assert pruned[0][1].num_features == pruned[0][0].out_channels == 4
    assert pruned[0][1].running_mean.shape == (4,)
    assert pruned[5].in_features == pruned[2][0].out_channels * 4 == 16
    assert pruned[6].num_features == pruned[5].out_features == 6
    inputs = torch.randn(3, 3, 10, 10)
    with torch.no_grad():
        assert pruned(inputs).shape == (3, 5)


def test_structured_keeps_at_least_one_unit_per_layer() -> None:
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    pruned = sparsify(model, threshold=0.99, structure="structured")
    assert pruned[0].out_features == 1 and pruned[2].in_features == 1
    assert pruned(torch.randn(2, 6)).shape == (2, 3)


def test_structured_calls_finetune_on_the_rebuilt_model(trained_mlp: nn.Sequential) -> None:
    seen: list[int] = []
    sparsify(
        trained_mlp,
        threshold=0.5,
        structure="structured",
        finetune=lambda model: seen.append(model[0].out_features),
    )
    assert seen == [32]


def test_structured_rejects_models_it_cannot_rebuild() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) + x

    with pytest.raises(CompressionError, match="TwoHeads; use prune_structure: unstructured"):
        sparsify(TwoHeads(), threshold=0.5, structure="structured")
    with pytest.raises(CompressionError, match="LSTM at '1'"):
        sparsify(
            nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)), threshold=0.5, structure="structured"
        )
    # Unstructured pruning works on any module.
    assert weight_sparsity(sparsify(TwoHeads(), threshold=0.5)) == pytest.approx(0.5)


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 1.5, math.nan])
def test_threshold_outside_zero_to_one_is_rejected_naming_the_value(threshold: float) -> None:
    with pytest.raises(CompressionError, match=f"got {threshold!r}") as caught:
        sparsify(_mlp(), threshold=threshold)
    assert isinstance(caught.value, TunerError)


def test_unknown_structure_and_mode_are_rejected_naming_the_value() -> None:
    with pytest.raises(CompressionError, match="'blocky'"):
        sparsify(_mlp(), threshold=0.5, structure="blocky")
    with pytest.raises(CompressionError, match="'fp16'"):
        quantize(_mlp(), mode="fp16")
    with pytest.raises(CompressionError, match="'int4'"):
        compress(
            _mlp(),
            threshold=0.0,
            structure="unstructured",
            quantize="int4",
            calibration_inputs=None,
        )


def test_quantize_none_returns_the_model_itself() -> None:
    model = _mlp()
    assert quantize(model, mode="none") == (model, ())


def test_int8_mlp_quantizes_every_linear_dynamically_and_keeps_accuracy(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    quantized, int8_layers = quantize(trained_mlp, mode="int8")
    assert int8_layers == ("0", "2", "4")
    assert all(isinstance(quantized.get_submodule(name), nnqd.Linear) for name in int8_layers)
    assert isinstance(trained_mlp[0], nn.Linear) and not is_quantized(trained_mlp)
    assert is_quantized(quantized)
    float_accuracy = _accuracy(trained_mlp, digits[2], digits[3])
    assert _accuracy(quantized, digits[2], digits[3]) >= float_accuracy - 0.03
    assert count_parameters(quantized) == count_parameters(trained_mlp)


def test_int8_cnn_with_calibration_computes_convolutions_and_linear_in_int8(
    trained_cnn: nn.Sequential, digits: Digits
) -> None:
    train_inputs = digits[0][:, None, :]
    quantized, int8_layers = quantize(
        trained_cnn, mode="int8", calibration_inputs=train_inputs[:256]
    )
    assert set(int8_layers) == {"0", "2", "5"}
    assert isinstance(quantized.get_submodule("0"), nnq.Conv1d)
    assert isinstance(quantized.get_submodule("2"), nnq.Conv1d)
    assert isinstance(quantized.get_submodule("5"), nnq.Linear)
    test_inputs = digits[2][:, None, :]
    float_accuracy = _accuracy(trained_cnn, test_inputs, digits[3])
    assert _accuracy(quantized, test_inputs, digits[3]) >= float_accuracy - 0.03


def test_int8_cnn_without_calibration_only_lists_the_linear(trained_cnn: nn.Sequential) -> None:
    quantized, int8_layers = quantize(trained_cnn, mode="int8")
    assert int8_layers == ("5",)
    assert type(quantized[0]) is nn.Conv1d


def test_int8_falls_back_to_dynamic_when_the_model_cannot_be_traced() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 2, 3)
            self.head = nn.Linear(2 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow defeats FX tracing
                x = x * 2
            return self.head(self.conv(x).flatten(1))

    quantized, int8_layers = quantize(
        Branchy(), mode="int8", calibration_inputs=torch.randn(8, 1, 8)
    )
    assert int8_layers == ("head",)
    assert quantized(torch.randn(2, 1, 8)).shape == (2, 3)


def test_calibration_inputs_that_do_not_fit_the_model_are_rejected(
    trained_cnn: nn.Sequential,
) -> None:
    with pytest.raises(CompressionError, match=r"calibration_inputs of shape \(4, 64\)"):
        quantize(trained_cnn, mode="int8", calibration_inputs=torch.randn(4, 64))


def test_compress_reports_sparsity_measured_on_the_int8_model(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    shipped, report = compress(
        trained_mlp,
        threshold=0.8,
        structure="unstructured",
        quantize="int8",
        calibration_inputs=None,
    )
    assert isinstance(report, CompressionReport)
    assert report.sparsity == weight_sparsity(shipped)
    # Pruned weights quantize to exactly zero; rounding can only add zeros.
    assert 0.79 <= report.sparsity < 0.85
    assert report.int8_layers == ("0", "2", "4")
    assert report.param_count == count_parameters(trained_mlp)
    assert (report.prune_structure, report.prune_threshold, report.quantize) == (
        "unstructured",
        0.8,
        "int8",
    )
    assert report.removed_units == 0
    pruned_accuracy = _accuracy(sparsify(trained_mlp, threshold=0.8), digits[2], digits[3])
    assert _accuracy(shipped, digits[2], digits[3]) == pytest.approx(pruned_accuracy, abs=0.03)


def test_compress_structured_int8_cnn_reports_the_rebuilt_model(
    trained_cnn: nn.Sequential, digits: Digits
) -> None:
    calibration = digits[0][:256, None, :]
    shipped, report = compress(
        trained_cnn,
        threshold=0.5,
        structure="structured",
        quantize="int8",
        calibration_inputs=calibration,
    )
    assert report.removed_units == 4 + 8
    assert report.param_count == count_parameters(shipped) < count_parameters(trained_cnn)
    assert set(report.int8_layers) == {"0", "2", "5"}
    assert shipped(digits[2][:5, None, :]).shape == (5, 10)


def test_count_parameters_counts_weights_and_biases() -> None:
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3, bias=False))
    assert count_parameters(model) == 7 * 5 + 5 + 5 * 3
    assert count_parameters(quantize(model, mode="int8")[0]) == 7 * 5 + 5 + 5 * 3

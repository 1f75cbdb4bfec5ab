from __future__ import annotations

import copy
import functools
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from user_models import PatchTransformer, ResidualCNN, TokenTransformer, ViT

from tuner._compression import (
    CompressionReport,
    _quantize_linear_dynamic,
    compress,
    count_parameters,
    float_layer_choice,
    int8_layer_names,
    layer_sensitivity,
    quantize,
    quantize_aware,
    sparsify,
    weight_sparsity,
)
from tuner._exceptions import CompressionError, TunerError
from tuner._measure import deserialize_model_state, serialize_model, size_bytes

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


def test_structured_mlp_at_0_75_removes_three_quarters_of_each_layer(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    pruned, shipped, report = compress(
        trained_mlp,
        threshold=0.75,
        structure="structured",
        quantize="none",
        calibration_inputs=digits[0][:64],
    )
    assert shipped is pruned
    linears = [m for m in pruned if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 8), (8, 10)]
    assert count_parameters(pruned) < count_parameters(trained_mlp) / 3
    assert report.param_count == count_parameters(pruned)
    assert report.removed_units == (64 - 16) + (32 - 8)
    with torch.no_grad():
        assert pruned(digits[2]).shape == trained_mlp(digits[2]).shape
    assert isinstance(trained_mlp[0], nn.Linear) and trained_mlp[0].out_features == 64


def test_structured_removes_the_channels_with_the_smallest_norm() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    norms = model[0].weight.norm(dim=1)
    kept = norms.topk(4).indices.sort().values
    reference = copy.deepcopy(model)
    with torch.no_grad():
        dropped = torch.ones(8, dtype=torch.bool)
        dropped[kept] = False
        reference[0].weight[dropped] = 0
        reference[0].bias[dropped] = 0
    inputs = torch.randn(16, 6)
    pruned = sparsify(model, threshold=0.5, structure="structured", example_inputs=inputs)
    assert pruned[0].out_features == 4 and pruned[2].in_features == 4
    with torch.no_grad():
        torch.testing.assert_close(pruned(inputs), reference(inputs), rtol=1e-5, atol=1e-5)


def test_structured_residual_cnn_prunes_coupled_channels_together() -> None:
    torch.manual_seed(0)
    model = ResidualCNN(channels=16).eval()
    inputs = torch.randn(8, 1, 40)
    pruned = sparsify(model, threshold=0.5, structure="structured", example_inputs=inputs)
    stem, blocks = pruned.stem[0], pruned.blocks
    # The skip connections add the stem's channels to each block's output: one group.
    assert stem.out_channels == 8
    for block in blocks:
        assert block.conv1.in_channels == block.conv2.out_channels == 8
        assert block.bn2.num_features == block.bn2.running_mean.numel() == 8
        assert block.conv1.out_channels == block.bn1.num_features == 8
    assert pruned.head.in_features == 8 and pruned.head.out_features == 10
    assert count_parameters(pruned) < count_parameters(model) / 3
    with torch.no_grad():
        assert pruned(inputs).shape == (8, 10)
    assert model.stem[0].out_channels == 16, "the caller's model must not change"


def test_structured_transformer_narrows_attention_feed_forward_norms_and_embedding() -> None:
    torch.manual_seed(0)
    model = PatchTransformer(width=32, heads=4).eval()
    inputs = torch.randn(8, 1, 40)
    pruned = sparsify(model, threshold=0.5, structure="structured", example_inputs=inputs)
    for layer in pruned.encoder.layers:
        attention = layer.self_attn
        assert attention.num_heads == 4
        assert attention.embed_dim == 16 and attention.head_dim == 4
        assert attention.in_proj_weight.shape == (3 * 16, 16)
        assert layer.linear1.out_features == 32 and layer.linear1.in_features == 16
        assert layer.norm1.normalized_shape == (16,)
    assert pruned.embed.out_features == 16 and pruned.position.shape == (1, 10, 16)
    assert pruned.head.out_features == 10
    assert count_parameters(pruned) < count_parameters(model) / 3
    # Both the fused fast path (eval) and the plain one (training) run the smaller model.
    with torch.no_grad():
        assert pruned(inputs).shape == (8, 10)
    pruned.train()
    assert pruned(inputs).shape == (8, 10)


@pytest.mark.parametrize("steps", [1, 3])
def test_structured_vision_transformer_whose_forward_reads_its_width_from_an_attribute(
    steps: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Laid out as torchvision's VisionTransformer: tokens are cut by ``self.width``, so
    # narrowing the residual width alone breaks the model; the attribute follows the width.
    torch.manual_seed(0)
    model = ViT(width=32, heads=4).eval()
    inputs = torch.randn(8, 1, 40)
    with caplog.at_level(logging.INFO, logger="tuner._compression"):
        pruned = sparsify(
            model, threshold=0.5, structure="structured", example_inputs=inputs, steps=steps
        )
    assert pruned.width == pruned.patches.out_channels == 16
    assert pruned.cls_token.shape == (1, 1, 16) and pruned.position.shape == (1, 11, 16)
    assert pruned.encoder.layers[0].self_attn.embed_dim == 16
    assert pruned.encoder.layers[0].self_attn.num_heads == 4
    assert count_parameters(pruned) < count_parameters(model) / 3
    with torch.no_grad():
        assert pruned(inputs).shape == (8, 10)
    assert "ViT.width follows the pruned width (32 -> " in caplog.text
    assert model.width == 32, "the caller's model must not change"


def test_a_model_that_reshapes_by_a_fixed_width_names_its_own_method() -> None:
    class FixedWidth(ViT):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.patches(x).reshape(x.shape[0], 32, -1).transpose(1, 2)
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
            return self.head(self.encoder(tokens + self.position)[:, 0])

    model = FixedWidth(width=32, heads=4).eval()
    with pytest.raises(CompressionError) as caught:
        sparsify(model, threshold=0.5, structure="structured", example_inputs=torch.randn(4, 1, 40))
    message = str(caught.value)
    assert "without those channels FixedWidth.forward fails" in message
    assert "\n" not in message and message.endswith("use prune_structure: unstructured")


def test_structured_sparsity_keeps_every_output_layer_of_a_model_with_two_outputs() -> None:
    # Logits (a view of the head's output) and features from a layer that runs after the head.
    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(6, 16)
            self.head = nn.Linear(16, 3)
            self.features = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.body(x))
            logits = self.head(h)
            return logits.view(-1, 3), self.features(h)

    inputs = torch.randn(8, 6)
    pruned = sparsify(TwoOutputs(), threshold=0.5, structure="structured", example_inputs=inputs)
    assert pruned.body.out_features == 8
    assert pruned.head.out_features == 3 and pruned.features.out_features == 4


class _Recurrent(nn.Module):
    def __init__(self, kind: type[nn.RNNBase], embed: bool) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 32) if embed else None
        self.rnn = kind(32 if embed else 4, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.reshape(x.shape[0], -1, 4)
        if self.embed is not None:
            steps = torch.relu(self.embed(steps))
        out, _ = self.rnn(steps)
        return self.head(out[:, -1])


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_unstructured_sparsity_zeroes_recurrent_gate_weights_and_keeps_them_zero(
    kind: type[nn.RNNBase],
) -> None:

    torch.manual_seed(0)
    model = _Recurrent(kind, embed=False).eval()
    inputs, labels = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))

    def finetune(pruned: nn.Module) -> None:
        optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
        pruned.train()
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(pruned(inputs), labels).backward()
            optimizer.step()

    pruned = sparsify(model, threshold=0.5, finetune=finetune)
    assert weight_sparsity(pruned) == pytest.approx(0.5, abs=0.01)
    gates = [w for n, w in pruned.rnn.named_parameters() if n.startswith("weight_")]
    assert len(gates) == 4 and all((w == 0).float().mean() > 0.3 for w in gates)
    assert size_bytes(pruned) < 0.7 * size_bytes(model)
    assert pruned(inputs).shape == (64, 10)


def test_structured_sparsity_leaves_recurrent_layers_whole_and_says_when_nothing_else_is_left() -> (
    None
):
    torch.manual_seed(0)
    inputs = torch.randn(8, 1, 40)
    with pytest.raises(CompressionError) as caught:
        sparsify(
            _Recurrent(nn.LSTM, embed=False),
            threshold=0.5,
            structure="structured",
            example_inputs=inputs,
        )
    message = str(caught.value)
    assert "cannot narrow recurrent layers (rnn (LSTM))" in message
    assert "\n" not in message and message.endswith("use prune_structure: unstructured")
    # The layers around it narrow, and its input with them.
    pruned = sparsify(
        _Recurrent(nn.LSTM, embed=True),
        threshold=0.5,
        structure="structured",
        example_inputs=inputs,
    )
    assert pruned.embed.out_features == pruned.rnn.input_size == 16
    assert pruned.rnn.hidden_size == 32 and pruned.head.out_features == 10
    assert pruned(inputs).shape == (8, 10)
    # torch-pruning's graph follows no other recurrent layer: one line names it.
    with pytest.raises(CompressionError) as caught:
        sparsify(
            _Recurrent(nn.GRU, embed=True),
            threshold=0.5,
            structure="structured",
            example_inputs=inputs,
        )
    message = str(caught.value)
    assert "no recurrent layer but LSTM (rnn (GRU))" in message and "\n" not in message


def test_structured_sparsity_narrows_three_dimensional_convolutions() -> None:
    class Video(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv3d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv3d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return self.head(h.mean(dim=(2, 3, 4)))

    inputs = torch.randn(4, 1, 4, 6, 6)
    model = Video().eval()
    pruned = sparsify(model, threshold=0.5, structure="structured", example_inputs=inputs)
    assert pruned.conv1.out_channels == pruned.conv2.out_channels == 8
    assert pruned(inputs).shape == (4, 4)
    assert weight_sparsity(sparsify(model, threshold=0.5)) == pytest.approx(0.5, abs=0.01)


def test_a_graph_the_pruner_cannot_follow_fails_at_once_with_one_line() -> None:
    # torch-pruning gives up inferring channels through very long chains (on torchvision's
    # Swin Transformer its graph build then grew until the kernel killed the process).
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 16)
            self.b = nn.Linear(6, 16)
            self.head = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g = self.b(x)
            for _ in range(600):
                g = torch.relu(g)
            return self.head(torch.cat([self.a(x), g], dim=1))

    with pytest.raises(CompressionError) as caught:
        sparsify(Deep(), threshold=0.5, structure="structured", example_inputs=torch.randn(4, 6))
    message = str(caught.value)
    assert message.startswith("cannot trace Deep for structured sparsity")
    assert "Maximum recursive depth reached" in message and "\n" not in message


def test_structured_attention_keeps_a_multiple_of_the_head_count() -> None:
    model = PatchTransformer(width=32, heads=4).eval()
    pruned = sparsify(
        model, threshold=0.3, structure="structured", example_inputs=torch.randn(4, 1, 40)
    )
    assert pruned.encoder.layers[0].self_attn.embed_dim % 4 == 0
    assert pruned.encoder.layers[0].self_attn.embed_dim < 32


def test_structured_embedding_model() -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(20, 16)
            self.hidden = nn.Linear(16, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.hidden(self.embedding(x))).mean(1))

    tokens = torch.randint(0, 20, (4, 5))
    pruned = sparsify(Bag(), threshold=0.5, structure="structured", example_inputs=tokens)
    assert pruned.embedding.embedding_dim == 8 and pruned.hidden.in_features == 8
    assert pruned(tokens).shape == (4, 3)


def test_structured_keeps_at_least_one_unit_per_layer() -> None:
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    inputs = torch.randn(2, 6)
    pruned = sparsify(model, threshold=0.99, structure="structured", example_inputs=inputs)
    assert pruned[0].out_features == 1 and pruned[2].in_features == 1
    assert pruned(inputs).shape == (2, 3)


def test_structured_calls_finetune_on_the_smaller_model(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    seen: list[int] = []
    sparsify(
        trained_mlp,
        threshold=0.5,
        structure="structured",
        finetune=lambda model: seen.append(model[0].out_features),
        example_inputs=digits[0][:8],
    )
    assert seen == [32]


def test_gradual_structured_narrows_step_by_step_to_the_one_shot_size(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    widths: list[tuple[int, tuple[int, int]]] = []

    def finetune(model: nn.Module, part: tuple[int, int] = (0, 1)) -> None:
        widths.append((model[0].out_features, part))

    one_shot = sparsify(
        trained_mlp, threshold=0.75, structure="structured", example_inputs=digits[0][:8]
    )
    gradual = sparsify(
        trained_mlp,
        threshold=0.75,
        structure="structured",
        finetune=finetune,
        example_inputs=digits[0][:8],
        steps=3,
    )
    # Most is removed at the first step (cubic schedule), and each step fine-tunes its share.
    assert [part for _, part in widths] == [(0, 3), (1, 3), (2, 3)]
    assert [width for width, _ in widths] == sorted((w for w, _ in widths), reverse=True)
    assert 64 > widths[0][0] > widths[-1][0] == 16
    assert count_parameters(gradual) == count_parameters(one_shot)
    assert [type(m) for m in gradual] == [type(m) for m in one_shot]


def test_gradual_unstructured_reaches_the_threshold_with_zeros_kept_between_steps(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    zeros: list[float] = []

    def finetune(model: nn.Module, part: tuple[int, int] = (0, 1)) -> None:
        _train(model, digits[0], digits[1], steps=5)
        zeros.append(weight_sparsity(model))

    pruned = sparsify(trained_mlp, threshold=0.9, finetune=finetune, steps=4)
    assert len(zeros) == 4
    assert zeros == sorted(zeros) and zeros[0] < 0.9
    assert weight_sparsity(pruned) == pytest.approx(0.9, abs=0.01)
    assert not any(hasattr(module, "weight_mask") for module in pruned.modules())


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_prune_steps_below_one_or_not_whole_is_rejected(steps: object) -> None:
    with pytest.raises(CompressionError, match=f"got {steps!r}"):
        sparsify(_mlp(), threshold=0.5, steps=steps)  # type: ignore[arg-type]


def test_a_model_structured_sparsity_cannot_handle_fails_with_one_line() -> None:
    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(6, 8)
            self.mix = nn.Parameter(torch.randn(8, 5))
            self.head = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.einsum("bi,ij->bj", self.body(x), self.mix))

    with pytest.raises(CompressionError, match="Mixer structurally") as caught:
        sparsify(Mixer(), threshold=0.5, structure="structured", example_inputs=torch.randn(4, 6))
    assert "\n" not in str(caught.value)
    assert "use prune_structure: unstructured" in str(caught.value)
    with pytest.raises(CompressionError, match="needs example inputs"):
        sparsify(_mlp(), threshold=0.5, structure="structured")
    # Unstructured pruning works on any module.
    assert weight_sparsity(sparsify(Mixer(), threshold=0.5)) == pytest.approx(0.5, abs=0.01)


def test_structured_sparsity_names_the_module_that_breaks_without_the_channels() -> None:
    # Attention written by hand, as many models do: one Linear for q, k and v, reshaped into
    # heads by the input's width. Narrowing the residual width breaks the reshape, in
    # attention, not in the layer whose channels were removed.
    class Attention(nn.Module):
        def __init__(self, width: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, c = x.shape
            qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(*qkv.unbind(0))
            return self.proj(out.transpose(1, 2).reshape(b, t, c))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(4, 32)
            self.attn = Attention(32, 4)
            self.head = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x.reshape(x.shape[0], -1, 4))
            return self.head((tokens + self.attn(tokens)).mean(1))

    example = torch.randn(4, 1, 40)
    with pytest.raises(CompressionError) as caught:
        sparsify(Encoder(), threshold=0.5, structure="structured", example_inputs=example)
    message = str(caught.value)
    assert "\n" not in message and "of Encoder structurally" in message
    assert "without those channels attn (Attention) fails" in message
    assert message.endswith("use prune_structure: unstructured")


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


def test_int8_mlp_on_the_cpu_is_a_pt2e_graph_with_int8_weights_and_keeps_accuracy(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    quantized, int8_layers = quantize(trained_mlp, mode="int8", calibration_inputs=digits[0][:256])
    assert isinstance(quantized, torch.fx.GraphModule)
    assert int8_layers == ("0", "2", "4")
    constants = [
        functools.reduce(getattr, node.target.split("."), quantized)
        for node in quantized.graph.nodes
        if node.op == "get_attr"
    ]
    int8_weights = [c for c in constants if c.dtype == torch.int8]
    assert sorted(w.numel() for w in int8_weights) == sorted([64 * 64, 64 * 32, 32 * 10])
    assert isinstance(trained_mlp[0], nn.Linear), "the caller's model must not change"
    float_accuracy = _accuracy(trained_mlp, digits[2], digits[3])
    assert _accuracy(quantized, digits[2], digits[3]) >= float_accuracy - 0.03
    assert quantized(digits[2][:1]).shape == (1, 10), "the batch dimension stays dynamic"


def test_int8_cnn_computes_convolutions_in_int8(trained_cnn: nn.Sequential, digits: Digits) -> None:
    train_inputs = digits[0][:, None, :]
    quantized, int8_layers = quantize(
        trained_cnn, mode="int8", calibration_inputs=train_inputs[:256]
    )
    assert {"0", "2"} <= set(int8_layers)
    test_inputs = digits[2][:, None, :]
    float_accuracy = _accuracy(trained_cnn, test_inputs, digits[3])
    assert _accuracy(quantized, test_inputs, digits[3]) >= float_accuracy - 0.03


def test_int8_transformer_runs_and_lists_its_int8_layers() -> None:
    torch.manual_seed(0)
    model = PatchTransformer(width=32, heads=4).eval()
    inputs = torch.randn(64, 1, 40)
    quantized, int8_layers = quantize(model, mode="int8", calibration_inputs=inputs)
    assert "encoder.layers.0.linear1" in int8_layers and "embed" in int8_layers
    with torch.no_grad():
        reference = model(inputs[:8])
        got = quantized(inputs[:8])
    assert got.shape == (8, 10)
    assert (got.argmax(1) == reference.argmax(1)).float().mean() >= 0.75


def test_int8_on_the_cpu_covers_attention_projections_and_every_convolution() -> None:
    # torchao's x86 quantizer alone leaves attention's projections (F.linear inside
    # MultiheadAttention) and convolutions followed by torch.relu in float.

    torch.manual_seed(0)
    inputs = torch.randn(64, 1, 40)
    residual = ResidualCNN(channels=16).eval()
    _, layers = quantize(residual, mode="int8", calibration_inputs=inputs)
    convolutions = [n for n, m in residual.named_modules() if isinstance(m, nn.Conv1d)]
    assert set(layers) == {*convolutions, "head"}, layers

    transformer = PatchTransformer(width=64, heads=4).eval()
    int8, layers = quantize(transformer, mode="int8", calibration_inputs=inputs)
    assert {"encoder.layers.0.self_attn", "encoder.layers.1.self_attn"} <= set(layers)
    # Nearly every weight is int8: a quarter of the float bytes, plus scales.
    assert size_bytes(int8) < size_bytes(transformer) / 3
    with torch.no_grad():
        agree = (int8(inputs).argmax(1) == transformer(inputs).argmax(1)).float().mean()
    assert agree >= 0.75
    # Attention named in keep_float stays float, its projections both.
    _, kept = quantize(
        transformer,
        mode="int8",
        calibration_inputs=inputs,
        keep_float=("encoder.layers.0.self_attn",),
    )
    assert set(kept) == set(layers) - {"encoder.layers.0.self_attn"}
    # So `keep_float: sensitive` weighs attention too.
    assert set(layer_sensitivity(transformer, inputs)) == set(layers)


def test_int8_runs_one_d_convolutions_as_two_d_ones_with_batchnorm_folded() -> None:
    # So that inductor's freezing can give them int8 kernels (see tuner._measure).
    torch.manual_seed(0)
    inputs = torch.randn(128, 1, 40)
    model = ResidualCNN(channels=16).eval()
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
    int8, layers = quantize(model, mode="int8", calibration_inputs=inputs)
    convolutions = [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d)]
    assert set(layers) == {*convolutions, "head"}, layers
    ops = [str(n.target) for n in int8.graph.nodes if n.op == "call_function"]
    assert sum("conv2d" in op for op in ops) == len(convolutions), ops
    assert not [op for op in ops if "conv1d" in op or "batch_norm" in op], ops
    # The float model is left as it was.
    assert all(type(m) is nn.Conv1d for n, m in model.named_modules() if n in convolutions)
    with torch.no_grad():
        reference, got = model(inputs), int8(inputs)
    assert (got.argmax(1) == reference.argmax(1)).float().mean() >= 0.9
    assert (got - reference).abs().max() < 0.1 * reference.abs().max()


def test_int8_leaves_one_d_convolutions_it_cannot_run_as_two_d_ones() -> None:
    # Padded by reflection, or called twice: run as they are, and still right.
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mirror = nn.Conv1d(1, 8, 3, padding=1, padding_mode="reflect")
            self.twice = nn.Conv1d(8, 8, 3, padding=1)
            self.head = nn.Linear(8 * 40, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.twice(torch.relu(self.twice(self.mirror(x)))).flatten(1))

    # And a model that reads a layer's settings (a causal convolution trims its padding
    # off the end), which would not run with the 2-D layer's.
    class Causal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 8, 3, padding=2)
            self.head = nn.Linear(8 * 40, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x)[..., : -self.conv.padding[0]].flatten(1))

    torch.manual_seed(0)
    inputs = torch.randn(128, 1, 40)
    for model in (Shared().eval(), Causal().eval()):
        int8, layers = quantize(model, mode="int8", calibration_inputs=inputs)
        ops = [str(n.target) for n in int8.graph.nodes if n.op == "call_function"]
        assert not [op for op in ops if "conv2d" in op], ops
        assert layers, "still int8"
        with torch.no_grad():
            agree = (int8(inputs).argmax(1) == model(inputs).argmax(1)).float().mean()
        assert agree >= 0.9


def test_int8_stores_embedding_tables_in_eight_bits() -> None:
    # A token model's size is mostly its embedding table.

    torch.manual_seed(0)
    model = TokenTransformer(width=32, levels=2000).eval()
    ids = torch.randint(0, 2000, (128, 40))
    int8, layers = quantize(model, mode="int8", calibration_inputs=ids)
    assert layers[0] == "embed" and "head" in layers
    assert size_bytes(int8) < size_bytes(model) / 3
    with torch.no_grad():
        agree = (int8(ids).argmax(1) == model(ids).argmax(1)).float().mean()
    assert agree >= 0.9
    # Named in keep_float, the table stays float (and the file keeps its float bytes).
    kept, kept_layers = quantize(model, mode="int8", calibration_inputs=ids, keep_float=("embed",))
    assert kept_layers == layers[1:]
    assert size_bytes(kept) > size_bytes(int8) + 2000 * 32 * 2
    # The embedding is a layer `keep_float: ends` and `sensitive` weigh.
    assert float_layer_choice(model, "ends", ids)[0] == "embed"
    assert "embed" in layer_sensitivity(model, ids)
    # Quantization-aware training ships the table in 8 bits too.
    learned = quantize_aware(model, calibration_inputs=ids, train=lambda graph: None)
    assert int8_layer_names(learned)[0] == "embed"


def test_quantization_aware_training_of_a_residual_cnn_learns_int8_for_every_convolution(
    digits: Digits,
) -> None:
    # Each convolution is followed by BatchNorm, which QAT keeps unfolded while it trains.
    torch.manual_seed(0)
    model = ResidualCNN(channels=16)
    train_inputs, test_inputs = digits[0][:600, None, :], digits[2][:, None, :]
    _train(model, train_inputs, digits[1][:600], steps=150)
    float_accuracy = _accuracy(model, test_inputs, digits[3])

    def finetune(graph: nn.Module) -> None:
        # A fine-tune's small learning rate: the graph starts from calibrated int8 ranges.
        optimizer = torch.optim.Adam(graph.parameters(), lr=3e-4)
        graph.train()
        for _ in range(10):
            optimizer.zero_grad()
            F.cross_entropy(graph(train_inputs), digits[1][:600]).backward()
            optimizer.step()

    learned = quantize_aware(model, calibration_inputs=train_inputs[:256], train=finetune)
    convolutions = [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d)]
    assert set(int8_layer_names(learned)) == {*convolutions, "head"}
    # Run as 2-D convolutions, BatchNorm folded in, as static int8 (see above).
    ops = [str(n.target) for n in learned.graph.nodes if n.op == "call_function"]
    assert sum("conv2d" in op for op in ops) == len(convolutions), ops
    assert not [op for op in ops if "conv1d" in op or "batch_norm" in op], ops
    assert float_accuracy > 0.85
    assert _accuracy(learned, test_inputs, digits[3]) >= float_accuracy - 0.03
    # Training starts from calibrated ranges: with no step taken it ships static int8's
    # accuracy (ranges left to the first training batch gave 16% here).
    untrained = quantize_aware(model, calibration_inputs=train_inputs[:256], train=lambda _: None)
    assert _accuracy(untrained, test_inputs, digits[3]) >= float_accuracy - 0.03


def test_keep_float_ends_leaves_the_first_and_last_layer_float_in_int8() -> None:
    torch.manual_seed(0)
    model = PatchTransformer(width=32, heads=4).eval()
    inputs = torch.randn(64, 1, 40)
    _, shipped, report = compress(
        model,
        threshold=0.0,
        structure="unstructured",
        quantize="int8",
        calibration_inputs=inputs,
        keep_float="ends",
    )
    assert report.float_layers == ("embed", "head")
    assert not set(report.int8_layers) & {"embed", "head"}
    assert "encoder.layers.0.linear1" in report.int8_layers
    # The kept layers' weights stay float: the shipped model is bigger than all-int8.

    _, all_int8, report_all = compress(
        model, threshold=0.0, structure="unstructured", quantize="int8", calibration_inputs=inputs
    )
    assert {"embed", "head"} <= set(report_all.int8_layers)
    assert size_bytes(shipped) > size_bytes(all_int8)


def test_keep_float_on_a_gpu_chooses_among_the_layers_gpu_int8_quantizes() -> None:
    # int8 on CUDA is nn.Linear alone: a token model's embedding table and a CNN's stem stay
    # float there anyway, so keeping them float would keep nothing. Chosen on the CPU: the
    # choice runs the model where it is; only the quantization that follows needs the GPU.
    torch.manual_seed(0)
    tokens = TokenTransformer(width=32, levels=100).eval()
    ids = torch.randint(0, 100, (64, 40))
    assert float_layer_choice(tokens, "ends", ids) == ("embed", "head")
    on_gpu = float_layer_choice(tokens, "ends", ids, linear_only=True)
    assert on_gpu == ("encoder.layers.0.linear1", "head")
    cnn = ResidualCNN(channels=8).eval()
    signals = torch.randn(64, 1, 40)
    assert float_layer_choice(cnn, "ends", signals)[0] == "stem.0"
    assert float_layer_choice(cnn, "ends", signals, linear_only=True) == ("head",)
    assert float_layer_choice(cnn, "sensitive", signals, linear_only=True) == ("head",)


_TRANSFORMERS = [
    (PatchTransformer, lambda: torch.randn(64, 40)),
    (ViT, lambda: torch.randn(64, 1, 40)),
    (TokenTransformer, lambda: torch.randint(0, 16, (64, 40))),
]
_FEED_FORWARD = tuple(f"encoder.layers.{i}.linear{j}" for i in (0, 1) for j in (1, 2))


@pytest.mark.parametrize(
    ("make", "inputs"), _TRANSFORMERS, ids=lambda v: getattr(v, "__name__", "")
)
def test_gpu_int8_quantizes_transformers_leaving_attention_float(make, inputs) -> None:
    # torchao's dynamic int8 is what CUDA trials run; its tensors also run on the CPU, which
    # is how this is checked here. Attention's output projection is handed to a functional
    # call that int8 weights do not implement: quantizing it failed every Transformer.
    torch.manual_seed(0)
    model, x = make(width=64).eval(), inputs()
    quantized = _quantize_linear_dynamic(copy.deepcopy(model).eval())
    layers = int8_layer_names(quantized)
    assert set(_FEED_FORWARD) <= set(layers)
    assert not any("self_attn" in name for name in layers)
    with torch.no_grad():
        agree = (quantized(x).argmax(1) == model(x).argmax(1)).float().mean().item()
    assert agree >= 0.9


def test_float8_off_a_gpu_that_has_it_is_refused_before_any_work() -> None:
    float8 = functools.partial(
        compress, _mlp(), quantize="float8", calibration_inputs=torch.randn(16, 64)
    )
    finetuned: list[nn.Module] = []
    with pytest.raises(
        CompressionError, match=r"float8 runs on a CUDA GPU of compute capability 8\.9"
    ):
        float8(threshold=0.5, structure="structured", finetune=finetuned.append)
    assert finetuned == []
    with pytest.raises(CompressionError, match="ONNX Runtime quantizes to int8 only"):
        float8(threshold=0.0, structure="unstructured", torch_int8=False)


def test_float8_on_an_older_gpu_names_it_and_its_capability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No GPU here: CUDA's answers about the card stand in for an A100's.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(
        CompressionError, match=r"8\.9 or more .* but NVIDIA A100-SXM4-80GB has 8\.0"
    ):
        quantize(_mlp(), mode="float8", device="cuda")


@pytest.mark.parametrize(
    ("make", "inputs"), _TRANSFORMERS, ids=lambda v: getattr(v, "__name__", "")
)
def test_float8_puts_linear_layers_in_float8_and_ships_them_in_a_byte_a_weight(
    make, inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchao's float8 tensors run on the CPU too, where its check for a GPU of compute
    # capability 8.9 (and tuner's) is lifted to run the rest of the path for real.
    import torchao.quantization.quant_api as torchao_api

    import tuner._compression as compression

    monkeypatch.setattr(torchao_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(torchao_api, "is_sm_at_least_89", lambda: True)  # an older GPU here
    monkeypatch.setattr(compression, "check_float8_device", lambda device: None)
    torch.manual_seed(0)
    model, x = make(width=64).eval(), inputs()
    float8 = functools.partial(
        compress, model, threshold=0.5, structure="structured", quantize="float8"
    )
    pruned, shipped, report = float8(calibration_inputs=x)
    # width 64 -> 32 after pruning: the feed-forward layers (32 -> 64 -> 32) have sides that
    # are multiples of 16; the classifier (10 classes) does not and stays float.
    assert report.float8_layers == _FEED_FORWARD
    assert report.int8_layers == ()
    state = deserialize_model_state(serialize_model(shipped))
    stored = {k: v for k, v in state.items() if v.dtype == torch.float8_e4m3fn}
    assert {k.rsplit(".weight", 1)[0] for k in stored} == set(_FEED_FORWARD)
    float_weights = sum(m.weight.numel() for n, m in pruned.named_modules() if n in _FEED_FORWARD)
    assert size_bytes(pruned) - size_bytes(shipped) >= 2.9 * float_weights
    with torch.no_grad():
        agree = (shipped(x).argmax(1) == pruned(x).argmax(1)).float().mean().item()
    assert agree >= 0.9
    # keep_float chooses among the layers float8 takes: the first and the last of them
    # (the embedding and the classifier would stay float anyway).
    *_, ends = float8(calibration_inputs=x, keep_float="ends")
    first, *middle, last = _FEED_FORWARD
    assert ends.float_layers == (first, last)
    assert ends.float8_layers == tuple(middle)


def test_sensitivity_finds_the_layer_that_int8_rounding_hurts_most(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    model = copy.deepcopy(trained_mlp)
    # One hidden unit of the first layer fires 500 times larger (the next layer reads it 500
    # times smaller, so the model computes the same): the second layer's input now has one
    # huge channel, and 8 bits per tensor crush all the others.
    with torch.no_grad():
        model[0].weight[3] *= 500.0
        model[0].bias[3] *= 500.0
        model[2].weight[:, 3] /= 500.0
    inputs = digits[0][:256]
    assert _accuracy(model, digits[2], digits[3]) == pytest.approx(
        _accuracy(trained_mlp, digits[2], digits[3]), abs=0.01
    )
    scores = layer_sensitivity(model, inputs)
    assert list(scores) == ["0", "2", "4"]
    assert max(scores, key=lambda name: scores[name]) == "2", scores
    assert "2" in float_layer_choice(model, "sensitive", inputs)
    assert float_layer_choice(model, "ends", inputs) == ("0", "4")
    assert float_layer_choice(model, "none", inputs) == ()


def test_int8_needs_calibration_inputs_that_fit_the_model(trained_cnn: nn.Sequential) -> None:
    with pytest.raises(CompressionError, match=r"calibration inputs of shape \(4, 64\)"):
        quantize(trained_cnn, mode="int8", calibration_inputs=torch.randn(4, 64))
    with pytest.raises(CompressionError, match="needs example inputs"):
        quantize(trained_cnn, mode="int8")


def test_compress_unstructured_int8_reports_the_sparse_float_model(
    trained_mlp: nn.Sequential, digits: Digits
) -> None:
    pruned, shipped, report = compress(
        trained_mlp,
        threshold=0.8,
        structure="unstructured",
        quantize="int8",
        calibration_inputs=digits[0][:256],
    )
    assert isinstance(report, CompressionReport)
    assert report.sparsity == weight_sparsity(pruned) == pytest.approx(0.8, abs=0.01)
    assert report.int8_layers == ("0", "2", "4")
    assert report.param_count == count_parameters(trained_mlp)
    assert (report.prune_structure, report.prune_threshold, report.quantize) == (
        "unstructured",
        0.8,
        "int8",
    )
    assert report.removed_units == 0
    assert _accuracy(shipped, digits[2], digits[3]) == pytest.approx(
        _accuracy(pruned, digits[2], digits[3]), abs=0.03
    )


def test_compress_structured_int8_residual_cnn() -> None:
    torch.manual_seed(0)
    model = ResidualCNN(channels=16).eval()
    calibration = torch.randn(64, 1, 40)
    pruned, shipped, report = compress(
        model,
        threshold=0.5,
        structure="structured",
        quantize="int8",
        calibration_inputs=calibration,
    )
    assert report.param_count == count_parameters(pruned) < count_parameters(model)
    assert report.removed_units > 0
    assert "stem.0" in report.int8_layers
    assert shipped(calibration[:5]).shape == (5, 10)


def test_count_parameters_counts_weights_and_biases() -> None:
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3, bias=False))
    assert count_parameters(model) == 7 * 5 + 5 + 5 * 3

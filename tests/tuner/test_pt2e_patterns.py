"""torchao's PT2E pattern graphs are captured once per process, and each pass gets a copy."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from tuner._compression import import_torchao


@pytest.fixture
def patterns(monkeypatch: pytest.MonkeyPatch) -> Any:
    """torchao's ``qat_utils`` with the cache installed (and empty), and the real captures."""
    import_torchao()
    from torchao.quantization.pt2e import qat_utils

    captures: list[object] = []
    real_export = torch.export.export

    def counted(*args: Any, **kwargs: Any) -> Any:
        captures.append(args[0])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counted)
    monkeypatch.setattr("tuner._pt2e_patterns._cache", {})
    return SimpleNamespace(
        capture=qat_utils._get_aten_graph_module_for_pattern,
        conv_bn=qat_utils._get_conv_bn_pattern,
        captures=captures,
    )


def _conv_bn_inputs(dims: int) -> tuple[torch.Tensor, ...]:
    return (
        torch.randn(1, 1, *([3] * dims)),
        torch.randn(1, 1, *([1] * dims)),
        torch.randn(1),
        torch.randn(1),
        torch.randn(1),
        torch.randn(1),
        torch.randn(1),
    )


def test_a_pattern_is_captured_once_and_each_caller_gets_its_own_graph(patterns: Any) -> None:
    capture = patterns.capture
    first = capture(patterns.conv_bn(F.conv2d), _conv_bn_inputs(2))
    # A new closure over the same function, and new example tensors of the same shapes.
    second = capture(patterns.conv_bn(F.conv2d), _conv_bn_inputs(2))
    assert len(patterns.captures) == 1
    assert first is not second and str(first.graph) == str(second.graph)
    # A caller rewriting its copy leaves the next caller's graph whole.
    first.graph.erase_node(next(n for n in first.graph.nodes if n.op == "output"))
    third = capture(patterns.conv_bn(F.conv2d), _conv_bn_inputs(2))
    assert str(third.graph) == str(second.graph)
    assert len(patterns.captures) == 1


def test_patterns_that_differ_are_captured_apart(patterns: Any) -> None:
    capture = patterns.capture
    conv2d = capture(patterns.conv_bn(F.conv2d), _conv_bn_inputs(2))
    conv1d = capture(patterns.conv_bn(F.conv1d), _conv_bn_inputs(1))
    assert len(patterns.captures) == 2
    assert "conv2d" in str(conv2d.graph) and "conv1d" in str(conv1d.graph)
    # A closure over a tensor is captured every time: its values could differ.
    scale = torch.ones(1)

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x * scale

    from torchao.quantization.pt2e.export_utils import WrapperModule

    capture(WrapperModule(scaled), (torch.randn(2),))
    capture(WrapperModule(scaled), (torch.randn(2),))
    assert len(patterns.captures) == 4


def test_copies_of_exported_graphs_raise_no_deprecation_warning_and_run_the_same() -> None:
    # Copying the pytree specs of an exported graph built torch's deprecated LeafSpec anew,
    # one FutureWarning per process in every trial's output.
    import warnings

    from tuner._compression import quantize
    from tuner._pt2e_patterns import copy_graph

    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    graph, _ = quantize(model.eval(), mode="int8", calibration_inputs=torch.randn(64, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copied = copy_graph(graph)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    x = torch.randn(8, 16)
    assert torch.equal(copied(x), graph(x))
    assert copied.graph is not graph.graph and copied._in_spec is graph._in_spec


def test_exporting_an_int8_graph_raises_no_deprecation_warning() -> None:
    # A QAT trial's kept graph is exported from a copy without its float weights; that
    # copy printed torch's LeafSpec FutureWarning in every such trial's output.
    import warnings

    from tuner._compression import quantize
    from tuner._formats import exported_program

    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    graph, _ = quantize(model.eval(), mode="int8", calibration_inputs=torch.randn(64, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = exported_program(graph, torch.randn(1, 16))
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    x = torch.randn(8, 16)
    assert torch.equal(program.module()(x), graph(x))

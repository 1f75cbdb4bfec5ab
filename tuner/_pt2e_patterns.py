"""One capture per process of the small graphs torchao's PT2E passes match against.

torchao's quantization-aware training finds convolution + BatchNorm (and BatchNorm alone,
when the graph switches between train and eval mode) by matching the model's graph against
small pattern graphs, and it captures every pattern with ``torch.export`` each time a pass
runs: about a hundred captures in ``convert_pt2e`` of a model with BatchNorm, 30 s of a QAT
trial on a 2-core CPU, the same for every trial. A pattern's graph depends only on the
pattern function's code, the values it closes over, the device, and the shapes and types
of its example inputs, so it is captured once and each pass gets its own copy.
"""

from __future__ import annotations

import copy
import threading
import types
from collections.abc import Callable, Hashable
from typing import Any, cast

import torch
from torch.utils._pytree import TreeSpec

_cache: dict[Hashable, Any] = {}
_lock = threading.Lock()
_copy_lock = threading.Lock()
_installed = False


def _describe(value: Any) -> Hashable:
    """What of an example input the captured graph depends on."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device.type)
    return _constant(value)


def _constant(value: Any) -> Hashable:
    """A value a pattern closes over, compared by value; functions (``F.conv2d``) live as
    long as the process, so they compare by identity. Anything else is not cached."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, types.BuiltinFunctionType | types.FunctionType):
        return value
    raise TypeError(f"not a constant: {type(value).__name__}")


def _key(
    pattern: Any, example_inputs: tuple[Any, ...], is_cuda: bool, kwargs: dict[str, Any]
) -> Hashable | None:
    """The cache key of one capture, or None where a part of it cannot be compared."""
    function = pattern
    if isinstance(pattern, torch.nn.Module):
        # torchao wraps plain functions in a module that only calls them.
        if type(pattern).__name__ != "WrapperModule" or list(pattern.children()):
            return None
        function = getattr(pattern, "fn", None)
    if not isinstance(function, types.FunctionType):
        return None
    try:
        return (
            type(pattern).__qualname__,
            function.__code__,
            tuple(_constant(cell.cell_contents) for cell in function.__closure__ or ()),
            tuple(_constant(value) for value in function.__defaults__ or ()),
            tuple(sorted((k, _constant(v)) for k, v in (function.__kwdefaults__ or {}).items())),
            is_cuda,
            tuple(_describe(value) for value in example_inputs),
            tuple(sorted((name, _describe(value)) for name, value in kwargs.items())),
        )
    except (TypeError, ValueError):
        return None


def copy_graph(graph_module: Any) -> Any:
    """A deep copy of a graph module that shares its pytree specs and code generator.

    An exported graph holds the pytree specs of its inputs and outputs, on the module
    (``_in_spec``, ``_out_spec``) and in the graph's code generator. Copying one builds each
    leaf spec anew, and torch 2.13 warns about that once per process (its own ``LeafSpec``
    class is deprecated; the warning names ``copyreg``). Specs and generator are only read,
    so the copy shares them: the module's through the copy's memo, the generator by copying
    the graph with a plain one in its place (``torch.fx.Graph.__deepcopy__`` copies it
    without the memo) and giving it back.
    """
    if not isinstance(graph_module, torch.fx.GraphModule):
        return copy.deepcopy(graph_module)
    memo: dict[int, Any] = {}
    stack = [value for value in vars(graph_module).values() if isinstance(value, TreeSpec)]
    while stack:
        spec = stack.pop()
        if id(spec) not in memo:
            memo[id(spec)] = spec
            stack.extend(spec.children())
    graph = graph_module.graph
    codegen = graph._codegen
    with _copy_lock:  # the original is without its generator while it is copied
        graph._codegen = torch.fx.graph.CodeGen()
        try:
            copied = copy.deepcopy(graph_module, memo)
        finally:
            graph._codegen = codegen
    copied.graph._codegen = codegen
    copied.recompile()
    return copied


def _cached(capture: Callable[..., Any]) -> Callable[..., Any]:
    def captured_once(
        pattern: Callable[..., Any],
        example_inputs: tuple[Any, ...],
        is_cuda: bool = False,
        **kwargs: Any,
    ) -> Any:
        key = _key(pattern, example_inputs, is_cuda, kwargs)
        if key is None:
            return capture(pattern, example_inputs, is_cuda, **kwargs)
        with _lock:
            graph = _cache.get(key)
        if graph is None:
            graph = capture(pattern, example_inputs, is_cuda, **kwargs)
            with _lock:
                _cache[key] = graph
        # The passes rewrite the graphs they match with; each gets a copy.
        return copy_graph(graph)

    captured_once.__wrapped__ = capture  # type: ignore[attr-defined]
    return captured_once


def capture_patterns_once() -> None:
    """Make torchao's PT2E passes capture each pattern graph once per process.

    Where torchao's layout is not the one this was written for, it is left as it is.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    try:
        from torchao.quantization.pt2e import qat_utils, utils
    except ImportError:
        return
    capture = getattr(utils, "_get_aten_graph_module_for_pattern", None)
    held = getattr(qat_utils, "_get_aten_graph_module_for_pattern", None)
    if capture is None or held is not capture:
        return
    cached = _cached(cast(Callable[..., Any], capture))
    # qat_utils holds its own reference; export_utils imports it from utils at each call.
    utils._get_aten_graph_module_for_pattern = cached
    qat_utils._get_aten_graph_module_for_pattern = cached

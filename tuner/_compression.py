"""Sparsify and quantize PyTorch models the way tuner ships them.

Compression has two knobs, applied in this order by :func:`compress`:

* **Sparsity** (:func:`sparsify`). ``structure="unstructured"`` zeroes the globally
  smallest-magnitude weights of every ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d``; the tensors
  keep their shape, so the model gets smaller on disk (zeros are not stored, see
  ``tuner._measure``) but not faster. ``structure="structured"`` removes whole output
  neurons/channels (smallest L2 norm, per layer) and rebuilds the layers smaller, which is what
  makes dense kernels faster.
* **Quantization** (:func:`quantize`). ``mode="int8"`` makes ``nn.Linear`` layers dynamic int8
  and, for models with convolutions when calibration inputs are given, quantizes statically
  (per-channel int8 weights, calibrated activations) so the convolutions compute in int8 too.

Quantized models run on CPU only: PyTorch's int8 kernels (x86/fbgemm, qnnpack) have no CUDA
implementation.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.ao.nn.quantized as nnq
from torch import nn
from torch.nn.utils import prune

from tuner._exceptions import CompressionError

__all__ = [
    "CompressionReport",
    "compress",
    "count_parameters",
    "is_quantized",
    "quantize",
    "sparsify",
    "weight_sparsity",
]

_log = logging.getLogger(__name__)

STRUCTURES = ("unstructured", "structured")
QUANTIZE_MODES = ("none", "int8")

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
_Layer = nn.Linear | nn.Conv1d | nn.Conv2d
# nnq.dynamic.Linear and the fused int8 modules (LinearReLU, ConvReLU1d, ...) subclass these.
_INT8_WEIGHTED = (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)
_QUANTIZED_MODULE_PREFIXES = (
    "torch.ao.nn.quantized",
    "torch.ao.nn.intrinsic.quantized",
    "torch.nn.quantized",
    "torch.nn.intrinsic.quantized",
)
_PASS_THROUGH = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
_STRUCTURED_HELP = (
    "structured sparsity needs an nn.Sequential (possibly nested) of Linear, Conv1d, Conv2d, "
    "BatchNorm1d/2d, activations, Dropout, Flatten and pooling layers"
)


@dataclass(frozen=True)
class CompressionReport:
    """What compression did to a model, measured on the model that ships.

    Attributes:
        sparsity: Fraction of exactly-zero weights over all Linear/Conv weight tensors.
        param_count: Parameters of the shipped model (int8 weights count one each).
        prune_structure: ``"unstructured"`` or ``"structured"``.
        prune_threshold: Fraction of weights (or units, when structured) pruned per request.
        quantize: ``"none"`` or ``"int8"``.
        int8_layers: Qualified names of the layers that really compute in int8.
        removed_units: Neurons/channels removed by structured pruning; 0 when unstructured.
    """

    sparsity: float
    param_count: int
    prune_structure: str
    prune_threshold: float
    quantize: str
    int8_layers: tuple[str, ...]
    removed_units: int


@contextlib.contextmanager
def _quiet_quantization_warnings() -> Iterator[None]:
    """Silence the deprecation noise ``torch.ao.quantization`` emits on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
            category=UserWarning,
        )
        warnings.filterwarnings(
            "ignore", message=r"Please use quant_min and quant_max", category=UserWarning
        )
        yield


def is_quantized(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` is a quantized (CPU-only) module."""
    return any(
        type(module).__module__.startswith(_QUANTIZED_MODULE_PREFIXES) for module in model.modules()
    )


def _quantized_weight_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    with _quiet_quantization_warnings():
        weight, bias = module._weight_bias()  # type: ignore[operator]
    return weight, bias


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over every Linear/Conv weight tensor of ``model``.

    Int8 layers are read from their int8 weights: a weight is zero when its integer equals the
    zero point (for tuner's symmetric qint8 that is the integer 0).

    Args:
        model: A float or quantized model.

    Returns:
        A value in [0, 1]; 0.0 when the model has no such layer.
    """
    zeros = 0
    total = 0
    for module in model.modules():
        if isinstance(module, _INT8_WEIGHTED):
            weight = _quantized_weight_bias(module)[0].dequantize()
        elif isinstance(module, _PRUNABLE):
            weight = module.weight.detach()
        else:
            continue
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total if total else 0.0


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``, counting the packed weights and biases of int8 layers.

    Args:
        model: A float or quantized model.

    Returns:
        The parameter count.
    """
    total = sum(parameter.numel() for parameter in model.parameters())
    for module in model.modules():
        if isinstance(module, _INT8_WEIGHTED):
            weight, bias = _quantized_weight_bias(module)
            total += weight.numel() + (bias.numel() if bias is not None else 0)
    return total


def _check_threshold(threshold: float) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not 0.0 <= threshold < 1.0
    ):
        raise CompressionError(
            f"prune threshold must be a fraction with 0 <= threshold < 1; got {threshold!r}"
        )


def _check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise CompressionError(
            f"unknown prune structure {structure!r}; expected one of {', '.join(STRUCTURES)}"
        )


def _check_mode(mode: str) -> None:
    if mode not in QUANTIZE_MODES:
        raise CompressionError(
            f"unknown quantize mode {mode!r}; expected one of {', '.join(QUANTIZE_MODES)}"
        )


def sparsify(
    model: nn.Module,
    *,
    threshold: float,
    structure: str = "unstructured",
    finetune: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Prune a copy of ``model``; the caller's model is never changed.

    Args:
        model: A float model.
        threshold: Fraction pruned, 0 <= threshold < 1. Unstructured: fraction of all
            Linear/Conv weights zeroed by global magnitude. Structured: fraction of the
            output units of each hidden Linear/Conv layer removed (L2 norm, at least 1 kept).
        structure: ``"unstructured"`` or ``"structured"`` (needs an ``nn.Sequential``).
        finetune: Called with the pruned copy whenever given (also at threshold 0, so every
            trial gets the same training budget). Unstructured: the pruning masks are still
            attached, so pruned weights stay zero while it trains. Structured: it gets the
            rebuilt, smaller model.

    Returns:
        The pruned copy.

    Raises:
        CompressionError: The threshold or structure is invalid, or the model cannot be
            pruned that way.
    """
    return _sparsify(model, threshold=threshold, structure=structure, finetune=finetune)[0]


def _sparsify(
    model: nn.Module,
    *,
    threshold: float,
    structure: str,
    finetune: Callable[[nn.Module], None] | None,
) -> tuple[nn.Module, int]:
    _check_threshold(threshold)
    _check_structure(structure)
    if structure == "structured":
        return _prune_structured(model, float(threshold), finetune)
    return _prune_unstructured(model, float(threshold), finetune), 0


def _prune_unstructured(
    model: nn.Module, threshold: float, finetune: Callable[[nn.Module], None] | None
) -> nn.Module:
    pruned = copy.deepcopy(model)
    targets = [(module, "weight") for module in pruned.modules() if isinstance(module, _PRUNABLE)]
    if not targets:
        if threshold > 0:
            raise CompressionError(
                f"{type(model).__name__} has no nn.Linear, nn.Conv1d or nn.Conv2d layer to prune"
            )
        if finetune is not None:
            finetune(pruned)
        return pruned
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=threshold)
    if finetune is not None:
        finetune(pruned)
    for module, name in targets:
        prune.remove(module, name)
    return pruned


def _is_sequential(module: nn.Module) -> bool:
    # A Sequential subclass with its own forward may not run its children in order.
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _is_activation(module: nn.Module) -> bool:
    if type(module).__module__ != nn.modules.activation.__name__:
        return False
    if isinstance(module, (nn.MultiheadAttention, nn.GLU)):
        return False
    if isinstance(module, nn.PReLU):
        return module.num_parameters == 1
    return next(module.parameters(recurse=False), None) is None


def _is_structured_leaf(module: nn.Module) -> bool:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return module.groups == 1
    return isinstance(
        module, (nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, *_PASS_THROUGH)
    ) or _is_activation(module)


def _describe(module: nn.Module) -> str:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups != 1:
        return f"{type(module).__name__} with groups={module.groups}"
    return type(module).__name__


def _sequential_leaves(
    sequential: nn.Module, prefix: str = ""
) -> list[tuple[nn.Sequential, int, str, nn.Module]]:
    """Flatten nested Sequentials into (parent, index, qualified name, leaf) in run order."""
    if not _is_sequential(sequential):
        where = f" at {prefix!r}" if prefix else ""
        raise CompressionError(
            f"{_STRUCTURED_HELP}; got {_describe(sequential)}{where}; "
            "use prune_structure: unstructured"
        )
    leaves: list[tuple[nn.Sequential, int, str, nn.Module]] = []
    for index, (name, child) in enumerate(sequential.named_children()):
        qualified = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            leaves.extend(_sequential_leaves(child, qualified))
        elif _is_structured_leaf(child):
            leaves.append((sequential, index, qualified, child))  # type: ignore[arg-type]
        else:
            raise CompressionError(
                f"{_STRUCTURED_HELP}; got {_describe(child)} at {qualified!r}; "
                "use prune_structure: unstructured"
            )
    return leaves


@dataclass(frozen=True)
class _Kept:
    """Output units a pruned layer kept, as seen by the layers after it."""

    layer: str
    is_conv: bool
    units: int
    indices: torch.Tensor
    flattened: bool = False


def _units_to_keep(module: _Layer, threshold: float) -> torch.Tensor:
    """Indices (sorted) of the output units that L2 structured pruning keeps."""
    original = module.weight.detach().clone()
    prune.ln_structured(module, "weight", amount=threshold, n=2, dim=0)
    mask = module.get_buffer("weight_mask")
    alive = mask.flatten(1).any(dim=1)
    prune.remove(module, "weight")
    with torch.no_grad():
        # The layer is rebuilt from the kept rows, so restore them untouched.
        module.weight.copy_(original)
    kept = alive.nonzero().flatten()
    if kept.numel() == 0:
        kept = original.flatten(1).norm(dim=1).argmax().reshape(1)
    return kept


def _input_indices(kept: _Kept, consumer: _Layer, name: str) -> torch.Tensor:
    """Columns (Linear) or input channels (Conv) of ``consumer`` that survive ``kept``."""
    if isinstance(consumer, nn.Linear):
        if kept.is_conv:
            if not kept.flattened:
                raise CompressionError(
                    f"cannot prune {kept.layer!r} structurally: it feeds Linear {name!r} "
                    "without an nn.Flatten in between; use prune_structure: unstructured"
                )
            if consumer.in_features % kept.units:
                raise CompressionError(
                    f"cannot prune {kept.layer!r} structurally: Linear {name!r} has "
                    f"{consumer.in_features} inputs, not a multiple of {kept.units} channels"
                )
            block = consumer.in_features // kept.units
            # Flatten lays a [N, C, ...] tensor out channel by channel.
            offsets = torch.arange(block, device=kept.indices.device)
            return (kept.indices[:, None] * block + offsets).flatten()
        if consumer.in_features != kept.units:
            raise CompressionError(
                f"cannot prune {kept.layer!r} structurally: Linear {name!r} expects "
                f"{consumer.in_features} inputs, not its {kept.units} outputs"
            )
        return kept.indices
    if not kept.is_conv or kept.flattened or consumer.in_channels != kept.units:
        raise CompressionError(
            f"cannot prune {kept.layer!r} structurally: its {kept.units} outputs do not map "
            f"onto the input channels of {name!r}; use prune_structure: unstructured"
        )
    return kept.indices


def _rebuild(module: _Layer, inputs: torch.Tensor | None, outputs: torch.Tensor | None) -> _Layer:
    """A dense layer holding only the given input and output units of ``module``."""
    weight = module.weight.detach()
    bias = module.bias.detach() if module.bias is not None else None
    if outputs is not None:
        weight = weight[outputs]
        bias = bias[outputs] if bias is not None else None
    if inputs is not None:
        weight = weight[:, inputs]
    device, dtype = weight.device, weight.dtype
    rebuilt: _Layer
    if isinstance(module, nn.Linear):
        rebuilt = nn.Linear(
            weight.shape[1], weight.shape[0], bias=bias is not None, device=device, dtype=dtype
        )
    else:
        conv_type = nn.Conv1d if isinstance(module, nn.Conv1d) else nn.Conv2d
        rebuilt = conv_type(
            weight.shape[1],
            weight.shape[0],
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            bias=bias is not None,
            padding_mode=module.padding_mode,  # type: ignore[arg-type]
            device=device,
            dtype=dtype,
        )
    with torch.no_grad():
        rebuilt.weight.copy_(weight)
        if bias is not None and rebuilt.bias is not None:
            rebuilt.bias.copy_(bias)
    rebuilt.train(module.training)
    return rebuilt


def _slice_batch_norm(norm: nn.BatchNorm1d | nn.BatchNorm2d, kept: _Kept, name: str) -> None:
    if kept.flattened or norm.num_features != kept.units:
        raise CompressionError(
            f"cannot prune {kept.layer!r} structurally: {type(norm).__name__} {name!r} has "
            f"{norm.num_features} features, not its {kept.units} outputs"
        )
    indices = kept.indices
    with torch.no_grad():
        for attribute in ("weight", "bias"):
            tensor = getattr(norm, attribute)
            if tensor is not None:
                setattr(norm, attribute, nn.Parameter(tensor.detach()[indices].clone()))
        for attribute in ("running_mean", "running_var"):
            tensor = getattr(norm, attribute)
            if tensor is not None:
                setattr(norm, attribute, tensor[indices].clone())
    norm.num_features = int(indices.numel())


def _prune_structured(
    model: nn.Module, threshold: float, finetune: Callable[[nn.Module], None] | None
) -> tuple[nn.Module, int]:
    pruned = copy.deepcopy(model)
    leaves = _sequential_leaves(pruned)
    layers = [
        (position, module)
        for position, (_, _, _, module) in enumerate(leaves)
        if isinstance(module, _PRUNABLE)
    ]
    if not layers:
        raise CompressionError(
            f"{type(model).__name__} has no nn.Linear, nn.Conv1d or nn.Conv2d layer to prune"
        )
    keep: dict[int, torch.Tensor] = {}
    if threshold > 0:
        # The last layer produces the model's outputs (classes), so it keeps all its units.
        for position, layer in layers[:-1]:
            kept = _units_to_keep(layer, threshold)
            if kept.numel() < layer.weight.shape[0]:
                keep[position] = kept

    removed = 0
    incoming: _Kept | None = None
    for position, (parent, index, name, module) in enumerate(leaves):
        if isinstance(module, _PRUNABLE):
            inputs = _input_indices(incoming, module, name) if incoming is not None else None
            outputs = keep.get(position)
            if inputs is not None or outputs is not None:
                parent[index] = _rebuild(module, inputs, outputs)
            incoming = None
            if outputs is not None:
                units = module.weight.shape[0]
                removed += units - int(outputs.numel())
                incoming = _Kept(name, not isinstance(module, nn.Linear), units, outputs)
        elif incoming is None:
            continue
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _slice_batch_norm(module, incoming, name)
        elif isinstance(module, nn.Flatten) and incoming.is_conv:
            if module.start_dim != 1 or module.end_dim != -1:
                raise CompressionError(
                    f"cannot prune {incoming.layer!r} structurally: Flatten {name!r} must "
                    "flatten dims 1..-1; use prune_structure: unstructured"
                )
            incoming = _Kept(incoming.layer, True, incoming.units, incoming.indices, True)

    if finetune is not None:
        finetune(pruned)
    return pruned, removed


def quantize(
    model: nn.Module, *, mode: str, calibration_inputs: torch.Tensor | None = None
) -> tuple[nn.Module, tuple[str, ...]]:
    """Quantize a copy of ``model`` for CPU inference.

    ``mode="int8"`` quantizes every ``nn.Linear`` dynamically (int8 weights per channel,
    activations quantized on the fly). When the model has Conv1d/Conv2d layers and
    ``calibration_inputs`` are given, it is quantized statically instead (FX graph mode, x86
    engine, per-channel symmetric int8 weights, activation ranges calibrated on the inputs), so
    the convolutions compute in int8 too; if the model cannot be traced or quantized that way,
    it falls back to dynamic int8 for the Linear layers only. The result runs on CPU only, on
    the quantized engine it was packed for: x86 (or fbgemm), which this function activates in
    ``torch.backends.quantized.engine`` when another one is active.

    Args:
        model: A float model (on any device; the quantized copy lives on CPU).
        mode: ``"none"`` (returns ``model`` itself) or ``"int8"``.
        calibration_inputs: A batch of typical inputs, needed to quantize convolutions.

    Returns:
        The quantized model and the qualified names of its layers that compute in int8,
        read from the module types of the result.

    Raises:
        CompressionError: Unknown mode, or no quantized CPU engine in this PyTorch build.
    """
    _check_mode(mode)
    if mode == "none":
        return model, ()
    engine = _select_engine()
    float_model = copy.deepcopy(model).cpu().eval()
    quantized: nn.Module | None = None
    has_conv = any(isinstance(module, (nn.Conv1d, nn.Conv2d)) for module in float_model.modules())
    if has_conv and calibration_inputs is not None:
        quantized = _quantize_static(float_model, calibration_inputs, engine)
    if quantized is None:
        quantized = _quantize_dynamic(float_model, engine)
    return quantized, _int8_layers(quantized)


def _select_engine() -> str:
    """Pick (and activate) the quantized CPU engine: packed weights only run on their engine."""
    supported = torch.backends.quantized.supported_engines
    current = torch.backends.quantized.engine
    if current in ("x86", "fbgemm"):
        return current
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in supported:
            torch.backends.quantized.engine = engine
            return engine
    raise CompressionError(
        f"this PyTorch build has no quantized CPU engine (supported: {supported}); "
        "use quantize: none"
    )


def _quantize_dynamic(model: nn.Module, engine: str) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    # qnnpack has no per-channel dynamic Linear; it gets per-tensor symmetric weights.
    qconfig = default_dynamic_qconfig if engine == "qnnpack" else per_channel_dynamic_qconfig
    with _quiet_quantization_warnings():
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )


def _quantize_static(
    model: nn.Module, calibration_inputs: torch.Tensor, engine: str
) -> nn.Module | None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    inputs = calibration_inputs.detach().cpu()
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise CompressionError(
            f"calibration_inputs must be a non-empty batch; got shape {tuple(inputs.shape)}"
        )
    try:
        with torch.no_grad():
            model(inputs[:1])
    except (RuntimeError, ValueError, TypeError) as error:
        raise CompressionError(
            f"calibration_inputs of shape {tuple(inputs.shape)} do not fit the model: {error}"
        ) from error
    try:
        with _quiet_quantization_warnings(), torch.no_grad():
            prepared = prepare_fx(
                copy.deepcopy(model),
                get_default_qconfig_mapping(engine),
                example_inputs=(inputs[:1],),
            )
            for batch in inputs.split(256):
                prepared(batch)
            converted = convert_fx(prepared)
            converted(inputs[:1])
    except Exception as error:  # FX could not trace or convert it
        _log.info("static int8 not possible (%s); using dynamic int8 for Linear layers", error)
        return None
    return converted


def _int8_layers(model: nn.Module) -> tuple[str, ...]:
    return tuple(
        name for name, module in model.named_modules() if isinstance(module, _INT8_WEIGHTED)
    )


def compress(
    model: nn.Module,
    *,
    threshold: float,
    structure: str,
    quantize: str,
    calibration_inputs: torch.Tensor | None,
    finetune: Callable[[nn.Module], None] | None = None,
) -> tuple[nn.Module, CompressionReport]:
    """Sparsify, then quantize, a copy of ``model``; report what ships.

    Args:
        model: A trained float model; never changed.
        threshold: Fraction pruned (see :func:`sparsify`).
        structure: ``"unstructured"`` or ``"structured"``.
        quantize: ``"none"`` or ``"int8"`` (see :func:`quantize`).
        calibration_inputs: Typical inputs, to quantize convolutions statically.
        finetune: Trains the pruned model before quantization (see :func:`sparsify`).

    Returns:
        The shipped model and a report measured on it.

    Raises:
        CompressionError: An argument is invalid or the model cannot be compressed as asked.
    """
    _check_threshold(threshold)
    _check_structure(structure)
    _check_mode(quantize)
    pruned, removed = _sparsify(model, threshold=threshold, structure=structure, finetune=finetune)
    shipped, int8_layers = _quantize(pruned, mode=quantize, calibration_inputs=calibration_inputs)
    report = CompressionReport(
        sparsity=weight_sparsity(shipped),
        param_count=count_parameters(shipped),
        prune_structure=structure,
        prune_threshold=float(threshold),
        quantize=quantize,
        int8_layers=int8_layers,
        removed_units=removed,
    )
    return shipped, report


# compress() takes a parameter named ``quantize``, which shadows the function inside it.
_quantize = quantize

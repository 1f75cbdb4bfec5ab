"""Sparsify and quantize PyTorch models of any architecture, on maintained libraries.

Compression has two knobs, applied in this order by :func:`compress`:

* **Sparsity** (:func:`sparsify`).

  - ``structure="unstructured"`` zeroes the globally smallest-magnitude weights of every
    Linear, convolution, Embedding and attention input projection, and the gate weights of
    recurrent layers; the tensors keep their shape, so the model gets smaller on disk (zeros
    are not stored, see ``tuner._measure``) but not faster.
  - ``structure="structured"`` removes whole channels with torch-pruning's dependency graph:
    the output neurons of Linear layers, the channels of convolutions, the embedding dimension
    of attention, Embedding and LayerNorm, with everything coupled to them (a residual
    connection couples the channels of every layer that adds into it; BatchNorm and LayerNorm
    follow their layer). In each coupled group the fraction ``threshold`` of channels with the
    smallest L2 norm is removed: the fraction is per group (local), never global. Attention
    keeps its head count and each head gets narrower, so a group that includes attention keeps
    a multiple of the head count. The layer whose output is the model's output keeps its
    units (the classes). LSTMs stay whole (their input narrows with the layer feeding it);
    a model with GRU or plain RNN layers, or with nothing left to narrow, is refused. A
    plain integer attribute holding a pruned width (``VisionTransformer.hidden_dim``) follows
    it where the model needs that to run (:func:`_follow_width`).
  - ``steps > 1`` reaches the threshold gradually: each step removes more (on the cubic
    schedule of Zhu & Gupta, 2017: most at the first step, while the model has most to
    spare, less as it nears the target) and the fine-tune's budget is shared out between the
    steps, so what is left is re-ranked after it has adapted. Same budget, same final size.

* **Quantization** (:func:`quantize`), ``mode="int8"``, on the trial's device:

  - on the CPU, PT2E static quantization (``torch.export``, torchao's ``X86InductorQuantizer``
    calibrated on typical inputs, ``convert_pt2e``): int8 weights per channel, calibrated int8
    activations, for every convolution and linear op, attention's projections included (see
    ``_keep_float_quantizer``), and embedding tables in 8 bits per row (weight-only). Its
    kernels are fused by ``torch.compile`` (see ``tuner._measure.compile_for_inference``);
    1-D convolutions run as 2-D ones of height 1, BatchNorm folded in, so that they get
    those kernels too (:func:`_as_2d_convolutions`);
  - on CUDA, torchao's ``quantize_`` with dynamic int8 activations and int8 weights for every
    ``nn.Linear`` but attention's output projection (see :func:`_torchao_linear`).

  ``mode="float8"`` is for GPUs of compute capability 8.9 and up (L4, H100): torchao's
  dynamic float8 activations and float8 weights for every ``nn.Linear`` whose sides are
  multiples of 16. int4 weight-only is not offered: torchao's CUDA int4 layout pads each
  layer's input side to a multiple of 1024, which makes the layers of models this size
  larger than in float32, not smaller.

  ``keep_float`` leaves chosen layers in float (per-layer precision): the first and last
  layer, or the ones whose int8 rounding moves the outputs most (:func:`float_layer_choice`;
  int8 rounding stands for float8's too). The layers that really compute in int8 or float8
  are read from the result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from tuner._exceptions import CompressionError, first_line
from tuner._logs import logs_below
from tuner._pt2e_patterns import capture_patterns_once
from tuner._spec import KEEP_FLOAT_MODES, QUANTIZE_MODES
from tuner._tracing import tracing

__all__ = [
    "FLOAT8_CAPABILITY",
    "KEEP_FLOAT_MODES",
    "CompressionReport",
    "Finetune",
    "check_float8_device",
    "compress",
    "count_parameters",
    "float_layer_choice",
    "float8_layer_names",
    "int8_layer_names",
    "layer_sensitivity",
    "quantize",
    "quantize_aware",
    "sparsify",
    "weight_sparsity",
]

_log = logging.getLogger(__name__)

STRUCTURES = ("unstructured", "structured")

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)


class Finetune(Protocol):
    """Trains a pruned model in place.

    ``part=(k, n)``: train on the k-th of n equal shares of the budget (gradual sparsity
    fine-tunes between its steps). A one-argument callable serves when ``steps`` is 1.
    """

    def __call__(self, model: nn.Module, part: tuple[int, int] = (0, 1)) -> None: ...


def gradual_schedule(threshold: float, steps: int) -> list[float]:
    """The fraction pruned after each of ``steps`` steps (cubic; the first entry is 0)."""
    return [threshold * (1.0 - (1.0 - i / steps) ** 3) for i in range(steps + 1)]


@dataclass(frozen=True)
class CompressionReport:
    """What compression did to a model.

    Attributes:
        sparsity: Fraction of exactly-zero weights over the weights :func:`weight_sparsity` counts.
        param_count: Parameters of the shipped model (int8 weights count one each).
        prune_structure: ``"unstructured"`` or ``"structured"``.
        prune_threshold: Fraction of weights (or channels, when structured) pruned per request.
        quantize: ``"none"``, ``"int8"`` or ``"float8"``.
        int8_layers: Qualified names of the layers that really compute in int8.
        removed_units: Channels removed by structured pruning, over all groups; 0 when
            unstructured.
        float_layers: Layers kept in float by choice (``keep_float``) in a quantized model.
        qat: The int8 model was learned by quantization-aware training.
        float8_layers: Qualified names of the layers that really compute in float8.
    """

    sparsity: float
    param_count: int
    prune_structure: str
    prune_threshold: float
    quantize: str
    int8_layers: tuple[str, ...]
    removed_units: int
    float_layers: tuple[str, ...] = ()
    qat: bool = False
    float8_layers: tuple[str, ...] = ()


def _weights(model: nn.Module) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            yield module, "weight", module.weight
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            yield module, "in_proj_weight", module.in_proj_weight
        elif isinstance(module, nn.RNNBase):  # LSTM, GRU, RNN: every layer's gate weights
            for name in module._flat_weights_names:
                if name.startswith("weight_"):
                    yield module, name, getattr(module, name)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over every weight :func:`sparsify` prunes.

    Those are the weights of Linear, convolution and Embedding layers, the input projection
    of ``nn.MultiheadAttention`` and the gate weights of recurrent layers (LSTM, GRU, RNN).

    Args:
        model: A float model.

    Returns:
        A value in [0, 1]; 0.0 when the model has no such weight.
    """
    zeros = 0
    total = 0
    for _, _, weight in _weights(model):
        zeros += int((weight.detach() == 0).sum())
        total += weight.numel()
    return zeros / total if total else 0.0


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``.

    Args:
        model: A float model.

    Returns:
        The parameter count.
    """
    return sum(parameter.numel() for parameter in model.parameters())


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


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CompressionError(f"prune steps must be an integer >= 1; got {steps!r}")


def _check_mode(mode: str) -> None:
    if mode not in QUANTIZE_MODES:
        raise CompressionError(
            f"unknown quantize mode {mode!r}; expected one of {', '.join(QUANTIZE_MODES)}"
        )


def _example_batch(inputs: torch.Tensor | None, what: str) -> torch.Tensor:
    if inputs is None:
        raise CompressionError(f"{what} needs example inputs; the workload gave no train_data")
    inputs = inputs.detach().cpu()
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise CompressionError(
            f"example inputs must be a non-empty batch; got shape {tuple(inputs.shape)}"
        )
    return inputs


def sparsify(
    model: nn.Module,
    *,
    threshold: float,
    structure: str = "unstructured",
    finetune: Finetune | Callable[[nn.Module], None] | None = None,
    example_inputs: torch.Tensor | None = None,
    steps: int = 1,
) -> nn.Module:
    """Prune a copy of ``model``; the caller's model is never changed.

    Args:
        model: A float model of any architecture.
        threshold: Fraction pruned, 0 <= threshold < 1. Unstructured: fraction of all prunable
            weights zeroed by global magnitude. Structured: fraction of the channels of each
            coupled group removed (L2 norm, see the module docstring).
        structure: ``"unstructured"`` or ``"structured"``.
        finetune: Called with the pruned copy whenever given (also at threshold 0, so every
            trial gets the same training budget). Unstructured: the pruning masks are still
            attached, so pruned weights stay zero while it trains. Structured: it gets the
            smaller model.
        example_inputs: A batch of typical inputs; structured pruning traces the model on it.
        steps: Reach ``threshold`` in this many steps (see the module docstring), calling
            ``finetune`` after each with its share of the budget (``part=(k, steps)``).

    Returns:
        The pruned copy.

    Raises:
        CompressionError: The threshold, structure or steps are invalid, or the model cannot
            be pruned that way (the message names the layer).
    """
    return _sparsify(
        model,
        threshold=threshold,
        structure=structure,
        finetune=finetune,
        example_inputs=example_inputs,
        steps=steps,
    )[0]


def _recover(
    finetune: Finetune | Callable[[nn.Module], None] | None,
    model: nn.Module,
    step: int,
    steps: int,
) -> None:
    if finetune is None:
        return
    if steps == 1:
        cast(Callable[[nn.Module], None], finetune)(model)
    else:
        cast(Finetune, finetune)(model, (step, steps))


def _sparsify(
    model: nn.Module,
    *,
    threshold: float,
    structure: str,
    finetune: Finetune | Callable[[nn.Module], None] | None,
    example_inputs: torch.Tensor | None,
    steps: int = 1,
) -> tuple[nn.Module, int]:
    _check_threshold(threshold)
    _check_structure(structure)
    _check_steps(steps)
    if threshold == 0:
        steps = 1
    if structure == "structured":
        return _prune_structured(model, float(threshold), example_inputs, steps, finetune)
    return _prune_unstructured(model, float(threshold), finetune, steps), 0


def _prune_unstructured(
    model: nn.Module,
    threshold: float,
    finetune: Finetune | Callable[[nn.Module], None] | None,
    steps: int = 1,
) -> nn.Module:
    pruned = copy.deepcopy(model)
    targets = [(module, name) for module, name, _ in _weights(pruned)]
    if not targets:
        if threshold > 0:
            raise CompressionError(
                f"{type(model).__name__} has no Linear, convolution, Embedding, attention or "
                "recurrent layer to prune"
            )
        _recover(finetune, pruned, 0, 1)
        return pruned
    schedule = gradual_schedule(threshold, steps)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    for step in range(steps):
        # A repeated global_unstructured prunes among the weights still unpruned, so each
        # step asks for the share of those that brings the total to the schedule's fraction.
        amount = 1.0 - (1.0 - schedule[step + 1]) / (1.0 - schedule[step])
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        if step == 0:
            handles = _mask_attention_output(pruned)
        _recover(finetune, pruned, step, steps)
    for handle in handles:
        handle.remove()
    for module, name in targets:
        prune.remove(module, name)
    return pruned


def _mask_attention_output(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Re-apply the output projection's mask whenever an attention layer runs.

    ``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``, so the
    pruning mask's own hook (on ``out_proj``) never runs while it fine-tunes.
    """

    def remask(module: nn.Module, _inputs: object) -> None:
        projection = cast(nn.Module, module.out_proj)
        for hook in list(projection._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(projection, ())

    return [
        module.register_forward_pre_hook(remask)
        for module in model.modules()
        if isinstance(module, nn.MultiheadAttention)
    ]


@contextlib.contextmanager
def _watching_layers(
    model: nn.Module, hook: Callable[..., None], *, int8: bool = False
) -> Iterator[None]:
    """``hook`` runs after every Linear and convolution layer of ``model`` in the block, and
    with ``int8`` after every other layer int8 quantizes as one (``nn.MultiheadAttention``,
    ``nn.Embedding``) too."""
    kinds: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
    if int8:
        kinds += (nn.MultiheadAttention, nn.Embedding)
    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(module, kinds)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The weighted layers whose output is the model's output: they keep their units.

    An output that is a layer's output, or a view of it (reshaped, flattened), comes from
    that layer; one computed further (pooled, say) from the last layer that ran.
    """
    # Each output is held until the end: a freed tensor's memory, and its id, can be given
    # to a later tensor (the model's output, say), which would then pass for that layer's.
    produced: list[tuple[nn.Module, torch.Tensor]] = []

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            produced.append((module, output))

    try:
        with _watching_layers(model, hook), torch.no_grad():
            output = model(example)
    except Exception as error:
        raise CompressionError(
            f"example inputs of shape {tuple(example.shape)} do not run "
            f"{type(model).__name__}: {error}"
        ) from error

    def memory(tensor: torch.Tensor) -> int:
        # Only dense tensors have one storage a view shares; others match by identity.
        return int(tensor.untyped_storage().data_ptr()) if tensor.layout == torch.strided else 0

    def source(tensor: torch.Tensor) -> nn.Module | None:
        where = memory(tensor)
        for module, out in reversed(produced):
            if out is tensor or (where and memory(out) == where):
                return module
        return None

    outputs = output if isinstance(output, (tuple, list)) else (output,)
    found = [m for t in outputs if isinstance(t, torch.Tensor) and (m := source(t)) is not None]
    if found:
        return found
    return [produced[-1][0]] if produced else []


def _recurrent(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.RNNBase)]


def _heads_multiple(model: nn.Module) -> int:
    multiple = 1
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            multiple = math.lcm(multiple, int(module.num_heads))
    return multiple


def _out_channels(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.out_channels)
    if isinstance(module, nn.MultiheadAttention):
        return int(module.embed_dim)
    if isinstance(module, nn.Embedding):
        return int(module.embedding_dim)
    return None


def _capped_ratios(
    model: nn.Module, threshold: float, multiple: int, output_layers: list[nn.Module]
) -> dict[nn.Module, float]:
    """Each layer's fraction, capped so that it keeps at least ``multiple`` channels."""
    ratios: dict[nn.Module, float] = {}
    for module in model.modules():
        channels = _out_channels(module)
        if channels is None or module in output_layers or channels <= multiple:
            continue
        # Half a channel below the cap, so the pruner's rounding down keeps ``multiple``.
        ratios[module] = min(threshold, (channels - multiple - 0.5) / channels)
    return ratios


def _group_layer(group: object) -> str:
    """The name of the layer a torch-pruning group is rooted at."""
    try:
        target = group[0].dep.target  # type: ignore[index]
        return str(getattr(target, "name", None) or type(target.module).__name__)
    except Exception:  # a group of an unexpected shape still gets a message
        return ""


def _prune_structured(
    model: nn.Module,
    threshold: float,
    example_inputs: torch.Tensor | None,
    steps: int = 1,
    finetune: Finetune | Callable[[nn.Module], None] | None = None,
) -> tuple[nn.Module, int]:
    import torch_pruning as tp

    example = _example_batch(example_inputs, "structured sparsity")[:2]
    pruned = copy.deepcopy(model).cpu()
    training = pruned.training
    pruned.eval()
    output_layers = _output_layers(pruned, example)
    if not any(
        isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention))
        for m in pruned.modules()
    ):
        raise CompressionError(
            f"{type(model).__name__} has no Linear, convolution or attention layer to prune"
        )
    if threshold == 0:
        pruned.train(training)
        _recover(finetune, pruned, 0, 1)
        return pruned, 0
    with torch.no_grad():
        reference = pruned(example)
    multiple = _heads_multiple(pruned)
    names = {m: f"{n} ({type(m).__name__})" for n, m in pruned.named_modules()}
    untraced = [names[m] for m in _recurrent(pruned) if not isinstance(m, nn.LSTM)]
    if untraced:
        # torch-pruning's graph breaks on them (it handles LSTM only).
        raise CompressionError(
            f"cannot prune {type(model).__name__} structurally: torch-pruning follows no "
            f"recurrent layer but LSTM ({', '.join(untraced)}); use prune_structure: unstructured"
        )
    ratios = _capped_ratios(pruned, threshold, multiple, output_layers)
    if not ratios:
        whole = [names[m] for m in _recurrent(pruned)]
        kept = [names[m] for m in output_layers]
        reasons = [f"the output layer {', '.join(kept)} keeps its classes"] if kept else []
        if whole:
            reasons.insert(0, f"torch-pruning cannot narrow recurrent layers ({', '.join(whole)})")
        raise CompressionError(
            f"structured sparsity has no layer of {type(model).__name__} to narrow: "
            f"{' and '.join(reasons) or 'every layer is at its fewest channels'}; "
            "use prune_structure: unstructured"
        )
    try:
        with warnings.catch_warnings(), tracing():
            # torch-pruning notes each raw nn.Parameter it finds (a position embedding, say);
            # it prunes their last dimension, which is what such parameters need.
            warnings.filterwarnings("ignore", message=r"Unwrapped parameters detected")
            # Its shape inference gives up on graphs it cannot follow (Swin's shifted
            # windows), and the graph build then grew until the kernel killed the process.
            warnings.filterwarnings("error", message=r"Maximum recursive depth reached")
            pruner = tp.pruner.MetaPruner(
                pruned,
                example,
                importance=tp.importance.MagnitudeImportance(p=2),
                pruning_ratio=threshold,
                pruning_ratio_dict=ratios,
                # torch-pruning cannot narrow recurrent layers; they stay whole.
                ignored_layers=output_layers + _recurrent(pruned),
                root_module_types=[
                    nn.modules.conv._ConvNd,
                    nn.Linear,
                    nn.Embedding,
                    nn.MultiheadAttention,
                ],
                round_to=multiple,
                global_pruning=False,
                iterative_steps=steps,
                iterative_pruning_ratio_scheduler=gradual_schedule,
            )
    except CompressionError:
        raise
    except Exception as error:
        raise CompressionError(
            f"cannot trace {type(model).__name__} for structured sparsity ({error}); "
            "use prune_structure: unstructured"
        ) from error
    removed = 0
    for step in range(steps):
        pruned.eval()
        removed += _structured_step(pruner, pruned, example, type(model).__name__)
        _recover(finetune, pruned, step, steps)
    pruned.eval()
    with torch.no_grad():
        after = pruned(example)
    if _shapes(after) != _shapes(reference):
        raise CompressionError(
            f"structured sparsity changed the output of {type(model).__name__} from "
            f"{_shapes(reference)} to {_shapes(after)}; use prune_structure: unstructured"
        )
    pruned.train(training)
    return pruned, removed


def _shapes(output: object) -> object:
    """The shape of a model's output, or of each tensor in a tuple or list of outputs."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return tuple(_shapes(item) for item in output)
    return None


def _structured_step(pruner: Any, pruned: nn.Module, example: torch.Tensor, name: str) -> int:
    """One step of ``pruner`` on ``pruned``; the channels it removed."""
    removed = 0
    layer = ""
    try:
        for group in pruner.step(interactive=True):
            layer = _group_layer(group)
            width = _group_width(group)
            count = len(group[0].idxs)
            removed += count
            group.prune()
            # A layer whose channels the graph cannot follow (sliced, reshaped by hand) breaks
            # the model here; naming it tells the user which layer to leave dense.
            try:
                with torch.no_grad():
                    pruned(example)
            except Exception:
                if width is None or not _follow_width(pruned, example, width, width - count):
                    raise
    except Exception as error:
        message = first_line(error)
        where = f"layer {layer!r} of " if layer else ""
        broken = _failing_module(error, pruned)
        if broken:
            message = f"without those channels {broken} fails: {message}"
        raise CompressionError(
            f"cannot prune {where}{name} structurally: {message}; use prune_structure: unstructured"
        ) from error
    return removed


def _group_width(group: object) -> int | None:
    """How many channels the root layer of a torch-pruning group has before it is pruned."""
    try:
        target = group[0].dep.target.module  # type: ignore[index]
    except Exception:
        return None
    if isinstance(target, nn.Parameter):
        return int(target.shape[-1]) if target.dim() else None
    return _out_channels(target)


# Modules whose widths torch-pruning keeps in step with their weights.
_SHAPED_BY_PRUNER = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.MultiheadAttention,
    nn.PReLU,
    nn.LSTM,
)


def _follow_width(model: nn.Module, example: torch.Tensor, width: int, narrower: int) -> bool:
    """Set a plain integer attribute that holds the pruned ``width`` to ``narrower``, where
    that is what makes ``model`` run again; ``False`` (and nothing changed) where none does.

    Models that reshape by a width they keep as an attribute (torchvision's
    ``VisionTransformer.hidden_dim``, read when it cuts the image into tokens) break when
    that width is pruned; torch-pruning updates only the layers it knows. Each candidate is
    tried alone, then all together, and kept only if the model then runs.
    """
    names = {id(module): name or type(module).__name__ for name, module in model.named_modules()}
    candidates = [
        (module, attribute)
        for module in model.modules()
        if not isinstance(module, _SHAPED_BY_PRUNER)
        for attribute, value in vars(module).items()
        if type(value) is int and value == width and not attribute.startswith("_")
    ]
    trials = [[candidate] for candidate in candidates]
    if len(candidates) > 1:
        trials.append(candidates)
    for trial in trials:
        for module, attribute in trial:
            setattr(module, attribute, narrower)
        try:
            with torch.no_grad():
                model(example)
        except Exception:
            for module, attribute in trial:
                setattr(module, attribute, width)
            continue
        for module, attribute in trial:
            _log.info(
                "structured sparsity: %s.%s follows the pruned width (%d -> %d)",
                names[id(module)],
                attribute,
                width,
                narrower,
            )
        return True
    return False


def _failing_module(error: BaseException, model: nn.Module) -> str | None:
    """Where in ``model`` ``error`` was raised: the innermost module whose method raised it,
    as ``name (Type)``, or ``Type.method`` for the model itself.

    A model that computes shapes by hand (attention written as one Linear reshaped into
    heads, say) breaks there, not in the layer whose channels were removed.
    """
    names = {id(module): name for name, module in model.named_modules()}
    found = None
    trace = error.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        owner = trace.tb_frame.f_locals.get("self")
        if id(owner) in names and code.co_name not in _MODULE_PLUMBING:
            name = names[id(owner)]
            kind = type(owner).__name__
            found = f"{name} ({kind})" if name else f"{kind}.{code.co_name}"
        trace = trace.tb_next
    return found


# nn.Module's own frames around every forward call.
_MODULE_PLUMBING = frozenset({"__call__", "_call_impl", "_wrapped_call_impl"})


# --- int8 ----------------------------------------------------------------------------------


# How many layers ``keep_float: sensitive`` keeps in float.
SENSITIVE_LAYERS = 2


def _check_keep_float(keep_float: str) -> None:
    if keep_float not in KEEP_FLOAT_MODES:
        raise CompressionError(
            f"keep_float: got {keep_float!r}; expected one of {', '.join(KEEP_FLOAT_MODES)}"
        )


def _layers_in_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Qualified names of the Linear, convolution, attention and embedding layers, in the
    order they run.

    Attention is one layer: it computes its input and output projections from their weights
    directly, so its output projection never runs as a module; the quantizers treat both as
    part of attention.
    """
    names = {id(m): n for n, m in model.named_modules()}
    order: list[str] = []

    def hook(module: nn.Module, _inputs: object, _output: object) -> None:
        name = names[id(module)]
        if name not in order:
            order.append(name)

    with _watching_layers(model, hook, int8=True), torch.no_grad(), tracing():
        model(example)
    return order


def _int8_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weights that int8 quantizes in ``module``: attention's projections, or its own."""
    if isinstance(module, nn.MultiheadAttention):
        weights: list[torch.Tensor | None] = [
            module.in_proj_weight,
            module.q_proj_weight,
            module.k_proj_weight,
            module.v_proj_weight,
            module.out_proj.weight,
        ]
        return [weight for weight in weights if weight is not None]
    return [cast(torch.Tensor, module.weight)]


def _fake_int8(tensor: torch.Tensor, *, per_channel: bool) -> torch.Tensor:
    """``tensor`` rounded to int8 and back: per output channel (weights) or per tensor."""
    if per_channel:
        scale = tensor.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-8) / 127.0
        shape = (-1,) + (1,) * (tensor.dim() - 1)
        return (tensor / scale.view(shape)).round().clamp(-128, 127) * scale.view(shape)
    low = min(float(tensor.min()), 0.0)
    high = max(float(tensor.max()), 0.0)
    step = max(high - low, 1e-8) / 255.0
    zero = round(-low / step)
    return ((tensor / step).round() + zero).clamp(0, 255).sub(zero) * step


def layer_sensitivity(model: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """How much the model's outputs move when one layer alone computes in int8.

    Each Linear, convolution, attention or embedding layer in turn gets its weights rounded
    to int8
    per output channel and its input activations to 8 bits per tensor (as static int8
    would); the score is the KL divergence of the model's outputs from the float model's on
    ``inputs``.
    """
    model = model.eval()
    layers = _layers_in_order(model, inputs[:2])
    modules = dict(model.named_modules())
    with torch.no_grad(), tracing():
        reference = F.log_softmax(model(inputs), dim=-1)
        scores: dict[str, float] = {}
        for name in layers:
            module = modules[name]
            weights = _int8_weights(module)
            originals = [weight.detach().clone() for weight in weights]
            for weight, original in zip(weights, originals):
                weight.copy_(_fake_int8(original, per_channel=True))
            # The inputs int8 would round: attention's query, key and value, else the input.
            inputs_count = 3 if isinstance(module, nn.MultiheadAttention) else 1
            handle = module.register_forward_pre_hook(
                lambda _m, args, n=inputs_count: tuple(
                    _fake_int8(a, per_channel=False)
                    if i < n and isinstance(a, torch.Tensor) and a.is_floating_point()
                    else a
                    for i, a in enumerate(args)
                )
            )
            try:
                moved = F.log_softmax(model(inputs), dim=-1)
            finally:
                handle.remove()
                for weight, original in zip(weights, originals):
                    weight.copy_(original)
            scores[name] = float(F.kl_div(moved, reference, log_target=True, reduction="batchmean"))
    return scores


def float_layer_choice(
    model: nn.Module,
    keep_float: str,
    calibration_inputs: torch.Tensor | None,
    *,
    linear_only: bool = False,
    float8: bool = False,
) -> tuple[str, ...]:
    """The layers ``keep_float`` leaves in float when the rest goes to int8 (or float8).

    * ``none``: none.
    * ``ends``: the first and the last layer that run (the input embedding or stem, and the
      classifier), where int8 error hurts most often.
    * ``sensitive``: the :data:`SENSITIVE_LAYERS` layers whose int8 rounding alone moves the
      outputs most on the calibration inputs (:func:`layer_sensitivity`).

    With ``linear_only`` (int8 on CUDA, which quantizes ``nn.Linear`` alone) the choice is
    made among the layers it takes: a convolution, an embedding or attention stays float
    there anyway. With ``float8``, among the layers float8 takes (see
    :func:`_torchao_linear`): a 10-class classifier is float there anyway.
    """
    _check_keep_float(keep_float)
    if keep_float == "none":
        return ()
    inputs = _example_batch(calibration_inputs, f"keep_float: {keep_float}")
    modules = dict(model.named_modules())

    gpu_layer = _torchao_linear((), float8=float8)

    def candidate(name: str) -> bool:
        return not (linear_only or float8) or gpu_layer(modules[name], name)

    if keep_float == "ends":
        order = [name for name in _layers_in_order(model, inputs[:2]) if candidate(name)]
        return tuple(dict.fromkeys(order[:1] + order[-1:]))
    scores = {
        name: score
        for name, score in layer_sensitivity(model, inputs[:256]).items()
        if candidate(name)
    }
    ranked = sorted(scores, key=lambda name: -scores[name])[:SENSITIVE_LAYERS]
    return tuple(name for name in scores if name in ranked)


def quantize(
    model: nn.Module,
    *,
    mode: str,
    calibration_inputs: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    keep_float: tuple[str, ...] = (),
) -> tuple[nn.Module, tuple[str, ...]]:
    """Quantize a copy of ``model`` for inference on ``device``.

    On the CPU, ``mode="int8"`` quantizes statically with PT2E (see the module docstring):
    activation ranges are calibrated on ``calibration_inputs``. On CUDA, every ``nn.Linear``
    gets torchao's dynamic int8 activations and int8 weights.

    ``mode="float8"`` is CUDA alone, on a GPU of compute capability 8.9 or more (L4, H100):
    every ``nn.Linear`` whose sides are multiples of 16 (what the float8 matrix product
    takes) gets torchao's dynamic float8 activations and float8 weights (e4m3, one scale per
    tensor, so the model stays in float32 around them); the other layers stay float.

    Args:
        model: A float model (on any device).
        mode: ``"none"`` (returns ``model`` itself), ``"int8"`` or ``"float8"``.
        calibration_inputs: A batch of typical inputs (a few hundred rows).
        device: Where the quantized model will run.
        keep_float: Qualified names of layers that stay in float.

    Returns:
        The quantized model and the qualified names of its layers that compute in ``mode``.

    Raises:
        CompressionError: Unknown mode, float8 off a GPU that has it, or the model cannot be
            quantized (one line naming why).
    """
    _check_mode(mode)
    if mode == "none":
        return model, ()
    target = torch.device(device)
    if mode == "float8":
        check_float8_device(target)
        quantized = _quantize_linear_float8(copy.deepcopy(model).to(target).eval(), keep_float)
        return quantized, float8_layer_names(quantized)
    float_model = copy.deepcopy(model).to(target).eval()
    if target.type == "cuda":
        quantized = _quantize_linear_dynamic(float_model, keep_float)
    else:
        quantized = _quantize_pt2e(float_model, calibration_inputs, keep_float)
    return quantized, int8_layer_names(quantized)


# The smallest CUDA compute capability with float8 matrix products (Ada Lovelace, Hopper).
FLOAT8_CAPABILITY = (8, 9)


def check_float8_device(device: torch.device) -> None:
    """One line saying why float8 cannot run on ``device``, raised; nothing where it can."""
    least = ".".join(map(str, FLOAT8_CAPABILITY))
    if device.type != "cuda":
        raise CompressionError(
            f"quantize float8 runs on a CUDA GPU of compute capability {least} or more "
            f"(torchao's float8 kernels), but this trial runs on {device.type}; expected a GPU "
            "trial (resources.gpus > 0 on a machine with such a GPU), or quantize none or int8"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FLOAT8_CAPABILITY:
        raise CompressionError(
            f"quantize float8 needs a GPU of compute capability {least} or more (e.g. L4, "
            "H100), but "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}; "
            "expected quantize none or int8 on this GPU"
        )


def _quantize_linear_float8(model: nn.Module, keep_float: tuple[str, ...] = ()) -> nn.Module:
    import_torchao()
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        PerTensor,
        quantize_,
    )

    # One scale per tensor: per-row scales need bfloat16 weights and activations, and the
    # models tuner trains are float32.
    config = Float8DynamicActivationFloat8WeightConfig(
        granularity=PerTensor(), set_inductor_config=False
    )
    try:
        quantize_(model, config, filter_fn=_torchao_linear(keep_float, float8=True))
    except Exception as error:
        raise CompressionError(
            f"torchao cannot quantize {type(model).__name__} to float8: {first_line(error)}"
        ) from error
    return model


def import_torchao() -> None:
    """Import torchao once, without its notes that CUDA-only kernels are absent on this host.

    On a CPU-only install torchao logs a warning per optional CUDA extension it cannot load;
    they say nothing about the int8 paths used here.
    """
    with logs_below(logging.ERROR, "torchao"):
        import torchao  # noqa: F401
    capture_patterns_once()


def _torchao_linear(
    keep_float: tuple[str, ...], *, float8: bool = False
) -> Callable[[nn.Module, str], bool]:
    """Which modules torchao's ``quantize_`` takes on the GPU: every ``nn.Linear`` not kept
    float, but for attention's output projection; for ``float8``, only those whose sides
    are both multiples of 16 (what the float8 matrix product takes: torchao leaves the
    others float).

    ``nn.MultiheadAttention`` hands its output projection's weight to a functional call
    that torchao's quantized weights do not implement (``aten.t`` for int8, ``aten.addmm``
    for float8), so every Transformer failed; PyTorch marks that layer as not to be
    quantized dynamically (``NonDynamicallyQuantizableLinear``). Attention's input
    projection is a bare parameter, not a layer, and stays float too.
    """
    skipped = nn.modules.linear.NonDynamicallyQuantizableLinear

    def chosen(module: nn.Module, name: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and not isinstance(module, skipped)
            and name not in keep_float
            and (not float8 or (module.in_features % 16 == 0 and module.out_features % 16 == 0))
        )

    return chosen


def _quantize_linear_dynamic(model: nn.Module, keep_float: tuple[str, ...] = ()) -> nn.Module:
    import_torchao()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    try:
        quantize_(
            model, Int8DynamicActivationInt8WeightConfig(), filter_fn=_torchao_linear(keep_float)
        )
    except Exception as error:
        raise CompressionError(
            f"torchao cannot quantize {type(model).__name__} to int8: {error}"
        ) from error
    return model


def _keep_float_quantizer(x86: Any, keep_float: tuple[str, ...]) -> Any:
    """torchao's x86 quantizer, for every convolution and linear op, leaving ``keep_float`` float.

    Its own ``set_module_name_qconfig(name, None)`` skips a fusion pattern only when every
    node of it comes from that module, so a convolution fused with the BatchNorm and ReLU
    that follow it (other modules) would still be quantized. Marking the layer's own
    operator as handled first makes every pattern that contains it stay float, which is
    what a ``None`` config does inside the quantizer.

    The quantizer finds its ops by the module or function that called them, so it leaves
    out ops it supports when they come from elsewhere: attention's projections
    (``F.linear`` called inside ``MultiheadAttention``), and a convolution followed by
    ``torch.relu`` or by nothing (only ``nn.Conv1d`` then ``nn.ReLU`` is matched). Those
    get the same int8 annotation, from the quantizer's own per-op helpers, after its
    patterns have had their turn. A convolution still followed by BatchNorm (during
    quantization-aware training, before the two are folded; the quantizer matches only 2-D
    ones) is annotated as the quantizer annotates its own: int8 input and weights on the
    convolution, the quantized output after the BatchNorm, so that ``prepare_qat_pt2e``
    folds the pair for training with the weights' fake quantization in between.
    """
    kept = set(keep_float)

    def batch_norm_after(node: torch.fx.Node) -> torch.fx.Node | None:
        users = list(node.users)
        if len(users) == 1 and users[0].target == torch.ops.aten.batch_norm.default:
            return users[0]
        return None

    class KeepFloat(x86.X86InductorQuantizer):  # type: ignore[misc, name-defined]
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                if node.op == "call_function" and _owner(node) in kept:
                    node.meta[x86.QUANT_ANNOTATION_KEY] = x86._X86InductorQuantizationAnnotation(
                        _annotated=True
                    )
            return super().annotate(model)

        def _annotate_conv2d_fusion_pattern(
            self, model: torch.fx.GraphModule, config: Any, filter_fn: Any = None
        ) -> None:
            super()._annotate_conv2d_fusion_pattern(model, config, filter_fn)
            for node in _left_out(model, _CONV_OPS, filter_fn):
                norm = batch_norm_after(node)
                if norm is None:
                    self._annotate_conv_node_helper(node, True, config)
                elif not x86._is_any_annotated([norm]):
                    self._annotate_conv_node_helper(node, False, config)
                    norm.meta[x86.QUANT_ANNOTATION_KEY] = x86._X86InductorQuantizationAnnotation(
                        output_qspec=x86.get_output_act_qspec(config),
                        _annotated=True,
                        _is_output_of_quantized_pattern=True,
                    )

        def _annotate_linear_fusion_pattern(
            self, model: torch.fx.GraphModule, config: Any, filter_fn: Any = None
        ) -> None:
            super()._annotate_linear_fusion_pattern(model, config, filter_fn)
            for node in _left_out(model, (torch.ops.aten.linear.default,), filter_fn):
                self._annotate_linear_node_helper(node, True, config)

    def _left_out(model: torch.fx.GraphModule, ops: tuple[Any, ...], filter_fn: Any) -> list[Any]:
        return [
            node
            for node in model.graph.nodes
            if node.op == "call_function"
            and node.target in ops
            and isinstance(node.args[1], torch.fx.Node)
            and node.args[1].op == "get_attr"  # a parameter, not a computed tensor
            and not x86._skip_annotate([node], filter_fn)
        ]

    return KeepFloat()


_CONV_OPS = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default)


def _capture(model: nn.Module, example: torch.Tensor, purpose: str) -> nn.Module:
    """``model`` as a ``torch.export`` graph with a dynamic batch, for PT2E quantization."""
    try:
        with tracing():
            return torch.export.export(
                model, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), strict=True
            ).module()
    except Exception as error:
        raise CompressionError(
            f"torch.export cannot capture {type(model).__name__} for {purpose}: {first_line(error)}"
        ) from error


# Learned int8 weights use 7 bits (-64..63). The file ships as is to ONNX Runtime, whose
# x86 kernels without VNNI multiply uint8 activations by int8 weights and add each pair of
# products in 16 bits: 2 x 255 x 128 overflows, 2 x 255 x 64 does not. With full-range
# weights the same file gave different answers on CPUs with and without VNNI.
_QAT_WEIGHT_RANGE = (-64, 63)


def _x86_quantizer(keep_float: tuple[str, ...], *, is_qat: bool) -> Any:
    """torchao's x86 quantizer (through :func:`_keep_float_quantizer`), composed with its
    embedding quantizer: embedding tables are stored in 8 bits per row (weight-only; the
    lookup reads a row and dequantizes it)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantizer.composable_quantizer import ComposableQuantizer
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import (
        EmbeddingQuantizer,
        get_embedding_operators_config,
    )
    from torchao.quantization.pt2e.quantizer.quantizer import QuantizationAnnotation

    quantizer = _keep_float_quantizer(x86, keep_float)
    config = x86.get_default_x86_inductor_quantization_config(is_qat=is_qat)
    if is_qat:
        low, high = _QAT_WEIGHT_RANGE
        weight = dataclasses.replace(config.weight, quant_min=low, quant_max=high)
        config = dataclasses.replace(config, weight=weight)
    quantizer.set_global(config)

    class EmbeddingTables(EmbeddingQuantizer):  # type: ignore[misc]
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            weight = get_embedding_operators_config().config.weight
            for node in model.graph.nodes:
                if (
                    node.target == torch.ops.aten.embedding.default
                    and _embedding_table(node.args[0])
                    and _owner(node) not in keep_float
                ):
                    node.meta[x86.QUANT_ANNOTATION_KEY] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: weight}
                    )
            return model

    return ComposableQuantizer([quantizer, EmbeddingTables()])


def _embedding_table(weight: object) -> bool:
    """Whether an embedding op's weight is a layer's own table (``embed.weight``); a lookup
    in another stored tensor (``F.embedding`` over a bias table) stays float, as it does in
    ONNX Runtime."""
    return (
        isinstance(weight, torch.fx.Node)
        and weight.op == "get_attr"
        and str(weight.target).endswith(".weight")
    )


def _owner(node: torch.fx.Node) -> str | None:
    """The qualified name of the module that called ``node`` in an exported graph."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(next(reversed(stack.values()))[0]) if stack else None


def _convert(prepared: nn.Module, example: torch.Tensor) -> nn.Module:
    """The int8 graph of a calibrated or trained PT2E graph, in eval mode."""
    from torchao.quantization.pt2e import (
        allow_exported_model_train_eval,
        move_exported_model_to_eval,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with torch.no_grad():
        converted = convert_pt2e(prepared)
        # Callers switch models to eval mode; an exported graph needs to be told how.
        move_exported_model_to_eval(converted)
        allow_exported_model_train_eval(converted)
        converted(example)
    return converted


def _quantize_pt2e(
    model: nn.Module, calibration_inputs: torch.Tensor | None, keep_float: tuple[str, ...] = ()
) -> nn.Module:
    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    inputs = _example_batch(calibration_inputs, "int8")
    example = inputs[:2]
    try:
        with torch.no_grad():
            model(example)
    except Exception as error:
        raise CompressionError(
            f"calibration inputs of shape {tuple(inputs.shape)} do not fit the model: {error}"
        ) from error
    exported = _capture_as_2d(model, example, "int8")
    try:
        prepared = prepare_pt2e(exported, _x86_quantizer(keep_float, is_qat=False))
        with torch.no_grad():
            for batch in inputs.split(128):
                prepared(batch)
        return _convert(prepared, example)
    except Exception as error:
        raise CompressionError(f"PT2E int8 failed for {type(model).__name__}: {error}") from error


class _Conv1dAs2d(nn.Conv2d):
    """A ``nn.Conv1d`` run as a ``nn.Conv2d`` of height 1 (same weights, same answers).

    Inductor's freezing, which turns an int8 graph's convolutions into oneDNN's int8
    kernels with packed weights, fails on 1-D ones in torch 2.13 (a wrong output length)
    and works on 2-D ones: the residual CNN of ``bench/compression.py`` in int8 at batch 32
    ran 1.02x faster than float as 1-D convolutions (not frozen), 2.59x as 2-D ones.
    With ``flat=False`` the output keeps its height of 1, for a :class:`_BatchNorm1dAs2d`.
    """

    flat: bool = True

    @classmethod
    def of(cls, conv: nn.Conv1d, *, flat: bool = True) -> _Conv1dAs2d:
        wide = cls(
            conv.in_channels,
            conv.out_channels,
            (1, conv.kernel_size[0]),
            stride=(1, conv.stride[0]),
            padding=(0, cast(tuple[int, ...], conv.padding)[0]),
            dilation=(1, conv.dilation[0]),
            groups=conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            wide.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None and wide.bias is not None:
                wide.bias.copy_(conv.bias)
        wide.flat = flat
        return wide.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x.unsqueeze(-2))
        return out.squeeze(-2) if self.flat else out


class _BatchNorm1dAs2d(nn.BatchNorm2d):
    """A ``nn.BatchNorm1d`` after a :class:`_Conv1dAs2d` of ``flat=False``: the two stay
    adjacent in the graph, so quantization-aware training folds them as a pair."""

    @classmethod
    def of(cls, norm: nn.BatchNorm1d) -> _BatchNorm1dAs2d:
        wide = cls(
            norm.num_features,
            eps=norm.eps,
            momentum=norm.momentum,
            affine=norm.affine,
            track_running_stats=norm.track_running_stats,
            device=norm.running_mean.device if norm.running_mean is not None else None,
            dtype=norm.running_mean.dtype if norm.running_mean is not None else None,
        )
        wide.load_state_dict(norm.state_dict())
        return wide.train(norm.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(-2)


def _capture_as_2d(model: nn.Module, example: torch.Tensor, purpose: str) -> nn.Module:
    """:func:`_capture` of ``model`` with its 1-D convolutions run as 2-D ones
    (:func:`_as_2d_convolutions`), or of ``model`` as it is where that cannot be done."""
    wide = _as_2d_convolutions(model, example, purpose)
    if wide is not model:
        try:
            with logs_below(logging.CRITICAL, "torch"):
                return _capture(wide, example, purpose)
        except CompressionError:
            pass
    return _capture(model, example, purpose)


def _as_2d_convolutions(model: nn.Module, example: torch.Tensor, purpose: str) -> nn.Module:
    """A copy of ``model`` with its ``nn.Conv1d`` layers run as 2-D ones, for int8, or
    ``model`` itself where it has none or the copy does not answer as it does.

    A BatchNorm that alone reads a convolution's output goes with it. In eval mode it is
    folded into the convolution first, as PT2E would fold it
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``); in training mode (quantization-aware
    training, which folds the pair itself) it becomes a 2-D BatchNorm right after the 2-D
    convolution. Between a 2-D convolution and a 1-D BatchNorm the graph would otherwise
    hold a reshape, and the two would not be folded. Layers keep their names, so
    ``keep_float`` and the int8 layer names read the same. Convolutions padded other than
    with zeros or by number (``padding="same"``), and layers called more than once, stay
    as they are. A model that reads its layers' settings (``self.conv.padding[0]`` to trim
    a causal convolution's output) may not run as 2-D: then it stays as it is.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = dict(model.named_modules())
    convs = {
        name
        for name, m in modules.items()
        if type(m) is nn.Conv1d
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
        and name
    }
    if not convs:
        return model
    graph = cast(torch.fx.GraphModule, _capture(model, example, purpose))
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_function" and (owner := _owner(node)) is not None:
            calls[owner] = calls.get(owner, 0) + (
                node.target in _CONV_OPS or node.target in _NORM_OPS
            )
    convs = {name for name in convs if calls.get(name) == 1}
    if not convs:
        return model
    wide = copy.deepcopy(model)
    modules = dict(wide.named_modules())
    paired: set[str] = set()
    for node in graph.graph.nodes:
        users = list(node.users)
        if node.target not in _CONV_OPS or len(users) != 1 or users[0].target not in _NORM_OPS:
            continue
        conv, norm = _owner(node), _owner(users[0])
        if conv is None or conv not in convs or norm is None or calls.get(norm) != 1:
            continue
        batch_norm = modules[norm]
        if type(batch_norm) is not nn.BatchNorm1d or batch_norm.running_mean is None:
            continue
        if wide.training:
            _set_module(wide, norm, _BatchNorm1dAs2d.of(batch_norm))
            paired.add(conv)
        else:
            folded = fuse_conv_bn_eval(cast(nn.Conv1d, modules[conv]), batch_norm)
            _set_module(wide, conv, folded)
            _set_module(wide, norm, nn.Identity())
    modules = dict(wide.named_modules())
    for name in convs:
        narrow = cast(nn.Conv1d, modules[name])
        _set_module(wide, name, _Conv1dAs2d.of(narrow, flat=name not in paired))
    return wide if _answers_as(wide, model, example) else model


def _answers_as(model: nn.Module, reference: nn.Module, example: torch.Tensor) -> bool:
    """Whether ``model`` runs on ``example`` and answers as ``reference`` does (in eval mode,
    so that no BatchNorm statistics move), within float rounding."""
    from tuner._measure import _same_output

    training = reference.training
    try:
        with torch.no_grad():
            got, expected = model.eval()(example), reference.eval()(example)
    except Exception:  # noqa: BLE001 - any failure means: keep the model as it is
        return False
    finally:
        model.train(training)
        reference.train(training)
    return _same_output(got, expected, relative=1e-4, absolute=1e-4)


_NORM_OPS = (
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit_no_training.default,
)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_aware(
    model: nn.Module,
    *,
    calibration_inputs: torch.Tensor | None,
    train: Callable[[nn.Module], None],
    keep_float: tuple[str, ...] = (),
) -> nn.Module:
    """int8 learned by quantization-aware training (PT2E QAT), for the CPU.

    The float ``model`` is captured with ``torch.export`` in training mode, torchao's x86
    quantizer inserts fake quantization (int8 weights per channel, calibrated int8
    activations) with ``prepare_qat_pt2e``, the activation ranges are calibrated on
    ``calibration_inputs`` (in eval mode: BatchNorm's statistics stay as trained), ``train``
    fine-tunes that graph so the weights learn to live with the rounding, and
    ``convert_pt2e`` makes the int8 graph. The scales
    it learned are what ships: in PyTorch, and in ONNX as QuantizeLinear/DequantizeLinear.

    Returns:
        The int8 graph (a copy; ``model`` is never changed), in eval mode.
    """
    import_torchao()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    inputs = _example_batch(calibration_inputs, "quantization-aware training")
    example = inputs[:2]
    source = copy.deepcopy(model).to("cpu").train()
    exported = _capture_as_2d(source, example, "int8 training")
    try:
        prepared = prepare_qat_pt2e(exported, _x86_quantizer(keep_float, is_qat=True))
        # The trainer switches train/eval mode; an exported graph needs to be told how.
        allow_exported_model_train_eval(prepared)
    except Exception as error:
        raise CompressionError(f"PT2E QAT failed for {type(model).__name__}: {error}") from error
    # Training starts from calibrated activation ranges, as static int8 would ship, not
    # from its first batch's: a short fine-tune then only improves on post-training int8.
    prepared.eval()
    with torch.no_grad():
        prepared(inputs)
    prepared.train()
    train(prepared)
    prepared.to("cpu")
    try:
        return _convert(prepared, example)
    except Exception as error:
        raise CompressionError(f"PT2E QAT failed for {type(model).__name__}: {error}") from error


_INT8_WEIGHT_OPS = ("dequantize_per_channel", "dequantize_per_tensor")


def int8_layer_names(model: nn.Module) -> tuple[str, ...]:
    """Qualified names of the layers of a quantized model that compute in int8, in order.

    Reads a PT2E graph (convolution, linear and embedding ops whose weight is dequantized from
    8 bits) or
    torchao's quantized tensor subclasses (weights that are not plain tensors).
    """
    if isinstance(model, torch.fx.GraphModule):
        names: list[str] = []
        for node in model.graph.nodes:
            if node.op != "call_function" or not node.args:
                continue
            target = str(node.target)
            if "embedding" in target:
                weight = node.args[0]  # embedding(weight, indices)
            elif any(op in target for op in ("conv", "linear", "matmul", "addmm")):
                weight = node.args[1] if len(node.args) > 1 else None
            else:
                continue
            if not isinstance(weight, torch.fx.Node) or not any(
                op in str(weight.target) for op in _INT8_WEIGHT_OPS
            ):
                continue
            name = _owner(node) or node.name
            if name not in names:
                names.append(name)
        return tuple(names)
    return tuple(name for name, weight in _subclass_weights(model) if not _holds_float8(weight))


def float8_layer_names(model: nn.Module) -> tuple[str, ...]:
    """Qualified names of the layers of a quantized model that compute in float8, in order
    (their weights are torchao tensor subclasses holding float8 data)."""
    return tuple(name for name, weight in _subclass_weights(model) if _holds_float8(weight))


def _subclass_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and type(weight) not in (torch.Tensor, nn.Parameter):
            yield name, weight


_FLOAT8_DTYPES = {
    getattr(torch, name)
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, name)
}


def _holds_float8(tensor: torch.Tensor) -> bool:
    if tensor.dtype in _FLOAT8_DTYPES:
        return True
    if not hasattr(tensor, "__tensor_flatten__") or type(tensor) in (torch.Tensor, nn.Parameter):
        return False
    names, _ = tensor.__tensor_flatten__()
    return any(
        isinstance(inner, torch.Tensor) and _holds_float8(inner)
        for inner in (getattr(tensor, name) for name in names)
    )


def compress(
    model: nn.Module,
    *,
    threshold: float,
    structure: str,
    quantize: str,
    calibration_inputs: torch.Tensor | None,
    finetune: Finetune | Callable[[nn.Module], None] | None = None,
    device: str | torch.device = "cpu",
    keep_float: str = "none",
    torch_int8: bool = True,
    qat: Callable[[nn.Module], None] | None = None,
    steps: int = 1,
) -> tuple[nn.Module, nn.Module, CompressionReport]:
    """Sparsify, then quantize, a copy of ``model``.

    Args:
        model: A trained float model; never changed.
        threshold: Fraction pruned (see :func:`sparsify`).
        structure: ``"unstructured"`` or ``"structured"``.
        quantize: ``"none"``, ``"int8"`` or ``"float8"`` (see :func:`quantize`).
        calibration_inputs: Typical inputs: structured pruning traces on them, int8 calibrates.
        finetune: Trains the pruned model before quantization (see :func:`sparsify`).
        device: Where the shipped model runs (int8 and float8 are made for it).
        keep_float: Which layers stay float in a quantized model (see
            :func:`float_layer_choice`).
        torch_int8: Make the int8 PyTorch model; ``False`` when another runtime quantizes
            (the shipped model is then the float one and ``int8_layers`` is empty).
        qat: With ``quantize="int8"``, trains the fake-quantized model
            (:func:`quantize_aware`) instead of calibrating int8 after the fact; the
            shipped model is then that int8 graph, whatever the runtime.
        steps: Reach the sparsity in this many steps, fine-tuning between them (see
            :func:`sparsify`).

    Returns:
        The float model after sparsity, the shipped model (the same object when not
        quantized) and a report on them.

    Raises:
        CompressionError: An argument is invalid or the model cannot be compressed as asked.
    """
    _check_threshold(threshold)
    _check_structure(structure)
    _check_mode(quantize)
    _check_keep_float(keep_float)
    if quantize == "float8" and not torch_int8:
        raise CompressionError(
            "quantize float8 runs in the torch runtime on the GPU; ONNX Runtime quantizes to "
            "int8 only"
        )
    if quantize == "float8":
        check_float8_device(torch.device(device))
    pruned, removed = _sparsify(
        model,
        threshold=threshold,
        structure=structure,
        finetune=finetune,
        example_inputs=calibration_inputs,
        steps=steps,
    )
    pruned = pruned.eval()
    # On CUDA, torch's int8 and float8 are nn.Linear alone (see quantize); ONNX Runtime and
    # QAT are CPU.
    linear_only = torch.device(device).type == "cuda" and torch_int8 and qat is None
    float_layers = (
        float_layer_choice(
            pruned,
            keep_float,
            calibration_inputs,
            linear_only=linear_only,
            float8=quantize == "float8",
        )
        if quantize != "none"
        else ()
    )
    if quantize == "int8" and qat is not None:
        shipped = quantize_aware(
            pruned, calibration_inputs=calibration_inputs, train=qat, keep_float=float_layers
        )
        int8_layers = int8_layer_names(shipped)
    else:
        shipped, int8_layers = _quantize(
            pruned,
            mode=quantize if torch_int8 else "none",
            calibration_inputs=calibration_inputs,
            device=device,
            keep_float=float_layers,
        )
    float8_layers = int8_layers if quantize == "float8" else ()
    if float8_layers:
        int8_layers = ()
    report = CompressionReport(
        sparsity=weight_sparsity(pruned),
        param_count=count_parameters(pruned),
        prune_structure=structure,
        prune_threshold=float(threshold),
        quantize=quantize,
        int8_layers=int8_layers,
        removed_units=removed,
        float_layers=float_layers,
        qat=quantize == "int8" and qat is not None,
        float8_layers=float8_layers,
    )
    shipped.eval()
    return pruned, shipped, report


# compress() takes a parameter named ``quantize``, which shadows the function inside it.
_quantize = quantize

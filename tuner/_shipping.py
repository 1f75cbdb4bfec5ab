"""The one shipping path: compress a trained model as sampled, and measure what would ship.

The objective, early stopping's rungs and ``tuner export --retrain`` all call :func:`ship`
and :func:`measure`, so ``accuracy``, ``sparsity``, ``size_bytes`` and ``latency_ms`` mean the
same thing wherever they are read.

* ``measure.runtime: torch``: the shipped PyTorch model runs on the trial's device.
  ``measure.compile: auto`` compiles the models whose fast kernels exist only once
  ``torch.compile`` fuses them (``always`` compiles every model): an int8 PT2E graph on the
  CPU, with inductor's freezing where that is faster at the batch size (``compiled_frozen``,
  ``compiled_frozen_batch``; see :func:`tuner._measure.compile_for_inference`), and a
  float8 model on the GPU, whose activations are scaled by a few small kernels per layer
  until they are fused. Compile time is recorded as ``compile_time_s``, never in the
  latency.
* ``measure.runtime: onnxruntime``: the float model after sparsity is exported to ONNX, int8
  is applied by ONNX Runtime's quantizer, and that file is what is sized, timed and scored.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._artifacts import TrialModel
from ._compression import CompressionReport, Finetune, compress, count_parameters
from ._formats import OnnxRunner, exported_program, onnx_int8_nodes, onnx_shipped
from ._measure import (
    accuracy,
    machine_name,
    measure_latency,
    reference_ms,
    size_bytes,
    try_freezing,
)
from ._settings import Settings, settings_from_params
from ._workloads import fit

if TYPE_CHECKING:
    from ._spec import MeasureSpec

__all__ = ["Shipped", "finetuner", "measure", "settings_from_params", "ship", "trial_model"]


# Quantization-aware training runs at this fraction of the fine-tune rate: the weights only
# have to settle into the int8 rounding (at the full rate it cost mnist1d-cnn 3.5 points).
QAT_LR_SCALE = 0.1


def finetuner(
    settings: Settings,
    params: Mapping[str, Any],
    train: tuple[torch.Tensor, torch.Tensor],
    *,
    teacher: nn.Module | None,
    device: torch.device,
    seed: int,
    epochs: float | None = None,
    lr_scale: float = 1.0,
) -> Finetune:
    """The fine-tune that recovers a pruned copy: ``settings.finetune_epochs`` epochs on
    ``train`` (or ``epochs``; a fraction trains on that fraction of the rows once), at
    ``finetune_lr`` when the trial samples one, else at the training ``lr``, times
    ``lr_scale``. Called with ``part=(k, n)`` it trains the k-th of n shares of that budget
    (gradual sparsity fine-tunes between its steps).

    With ``distill: kd`` the trained float ``teacher`` guides it (temperature-scaled KL to
    its outputs, mixed with the label loss by ``distill_alpha``). Zeros stay zero (the
    pruning masks stay on during the fine-tune) and removed channels stay removed.
    """

    count = settings.finetune_epochs if epochs is None else epochs
    # A fine-tune of a few epochs runs at one rate, whatever schedule the training used.
    params = {**params, "lr_schedule": "constant"}
    if "finetune_lr" in params:
        # A pruned copy recovers faster at a higher rate than the one it was trained at.
        params = {**params, "lr": float(params["finetune_lr"])}
    if lr_scale != 1.0:
        params = {**params, "lr": float(params.get("lr", 1e-3)) * lr_scale}
    x, y = train
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    guide = None
    if settings.distill == "kd":
        if teacher is None:
            raise ValueError("distill: kd needs the trained model as teacher")
        guide = copy.deepcopy(teacher).eval()
        for parameter in guide.parameters():
            parameter.requires_grad_(False)

    def finetune(model: nn.Module, part: tuple[int, int] = (0, 1)) -> None:
        step, steps = part
        rows: tuple[torch.Tensor, torch.Tensor] = (x, y)
        if float(count).is_integer() and count >= steps:
            # Whole epochs, shared out so the parts add up to the budget.
            whole = int(count)
            passes = whole * (step + 1) // steps - whole * step // steps
        elif count / steps >= 1:
            passes = int(count / steps)
        else:
            # Less than a pass each: every part trains once on its own slice of the rows.
            size = max(1, int(len(x) * count / steps))
            chosen = order[(torch.arange(size) + step * size) % len(x)]
            rows, passes = (x[chosen], y[chosen]), 1
        fit(
            model,
            rows,
            params,
            epochs=max(1, passes),
            device=device,
            seed=seed + 1 + step,
            teacher=guide,
            temperature=settings.distill_temperature,
            alpha=settings.distill_alpha,
        )
        model.to("cpu")

    return finetune


@dataclass
class Shipped:
    """A compressed model as it would ship.

    Attributes:
        pruned: the float model after sparsity (what is kept and exported).
        model: the model the torch runtime runs (int8 where the trial asked for it).
        report: what compression did.
        settings: the sampled compression.
        trained_params: parameters of the trained model before compression.
        calibration: the inputs int8 was calibrated on (structured pruning traced on them).
        device: where the shipped model runs in the torch runtime.
    """

    pruned: nn.Module
    model: nn.Module
    report: CompressionReport
    settings: Settings
    trained_params: int
    calibration: torch.Tensor | None
    device: torch.device

    @functools.cached_property
    def qat_program(self) -> bytes | None:
        """The int8 graph quantization-aware training learned, saved with ``torch.export``.

        It cannot be redone from the float model without training again, so trials keep it
        (and the ONNX file is exported from it). Made once per shipped model.
        """
        if not self.report.qat or self.calibration is None:
            return None
        import io

        buffer = io.BytesIO()
        torch.export.save(exported_program(self.model, self.calibration), buffer)
        return buffer.getvalue()

    @property
    def sparsity(self) -> float:
        """Zeroed and removed weights together, as a fraction of the trained model's.

        Structured and unstructured sparsity read the same way: a model with half its
        channels removed and one with half its weights zeroed both count their losses.
        """
        kept = self.report.param_count * (1.0 - self.report.sparsity)
        return 1.0 - kept / max(1, self.trained_params)


def ship(
    model: nn.Module,
    settings: Settings,
    *,
    calibration: torch.Tensor | None,
    device: torch.device,
    finetune: Finetune | Callable[[nn.Module], None] | None = None,
    runtime: str = "torch",
    qat: Callable[[nn.Module], None] | None = None,
) -> Shipped:
    """Compress a copy of the trained ``model`` as ``settings`` ask.

    Args:
        model: the trained float model; never changed.
        settings: the sampled compression.
        calibration: typical inputs (a few hundred rows): structured pruning traces on them
            and int8 is calibrated on them.
        device: the trial's device; int8 is made for it.
        finetune: trains the pruned copy before quantization.
        runtime: the runtime it will be measured in; for ``onnxruntime`` no int8 PyTorch
            model is made (ONNX Runtime quantizes the exported float model).
        qat: trains the fake-quantized model when ``settings.qat`` (quantization-aware
            training); its int8 graph then ships in both runtimes.
    """
    source = model.to("cpu").eval()
    trained_params = count_parameters(source)
    pruned, shipped, report = compress(
        source,
        threshold=settings.threshold,
        structure=settings.structure,
        quantize=settings.quantize,
        calibration_inputs=calibration,
        finetune=finetune,
        device=device,
        keep_float=settings.keep_float,
        torch_int8=runtime != "onnxruntime",
        qat=qat if settings.qat else None,
        steps=settings.prune_steps,
    )
    return Shipped(
        pruned=pruned,
        model=shipped,
        report=report,
        settings=settings,
        trained_params=trained_params,
        calibration=calibration,
        device=device,
    )


def trial_model(
    shipped: Shipped,
    *,
    test_data: tuple[torch.Tensor, torch.Tensor],
    measure: MeasureSpec,
    threads: int,
) -> TrialModel:
    """What a trial keeps to rebuild, export and re-measure the model it shipped."""

    return TrialModel(
        qat_program=shipped.qat_program,
        model=shipped.pruned.eval(),
        quantize=shipped.settings.quantize,
        prune_threshold=shipped.settings.threshold,
        prune_structure=shipped.settings.structure,
        calibration=shipped.calibration,
        test_data=test_data,
        measure={
            "batch_size": measure.batch_size,
            "warmup": measure.warmup,
            "repeats": measure.repeats,
            "threads": threads,
            "runtime": measure.runtime,
            "compile": measure.compile,
        },
        int8_layers=list(shipped.report.int8_layers),
        float_layers=list(shipped.report.float_layers),
    )


def compiles(shipped: Shipped, mode: str) -> bool:
    """Whether the torch runtime runs ``shipped`` through ``torch.compile``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    # A PT2E int8 graph computes in float between quantize/dequantize ops until inductor
    # fuses them into int8 kernels; float8's dynamic scaling of activations (the absolute
    # maximum, the scale, the cast) is several kernels per layer until inductor fuses them.
    if shipped.report.float8_layers:
        return True
    return bool(shipped.report.int8_layers) and isinstance(shipped.model, torch.fx.GraphModule)


def measure(
    shipped: Shipped,
    *,
    settings: MeasureSpec,
    threads: int,
    example: torch.Tensor,
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    model_metrics: bool = True,
    warmup: int | None = None,
    repeats: int | None = None,
) -> dict[str, Any]:
    """Accuracy, size and latency of ``shipped`` in the spec's runtime.

    Args:
        shipped: from :func:`ship`.
        settings: the spec's ``measure`` section.
        threads: CPU threads for inference.
        example: one input row; latency repeats it to batch 1 and ``settings.batch_size``.
        val_data: scored as ``accuracy`` when given.
        test_data: scored as ``test_accuracy`` when given.
        model_metrics: also size and time the model (``size_bytes``, ``latency_ms*``).
        warmup: warm-up passes (default ``settings.warmup``).
        repeats: timed passes (default ``settings.repeats``).

    Returns:
        The figures, keyed by the names trials record them under.
    """
    warmup = settings.warmup if warmup is None else warmup
    repeats = settings.repeats if repeats is None else repeats
    out: dict[str, Any] = {
        "param_count": shipped.report.param_count,
        "sparsity": shipped.sparsity,
        "zero_fraction": shipped.report.sparsity,
        "prune_structure": shipped.settings.structure,
        "quantize": shipped.settings.quantize,
        "int8_layers": list(shipped.report.int8_layers),
        "float8_layers": list(shipped.report.float8_layers),
        "float_layers": list(shipped.report.float_layers),
        "removed_units": shipped.report.removed_units,
    }
    if settings.runtime == "onnxruntime":
        out.update(
            _measure_onnx(
                shipped,
                threads=threads,
                example=example,
                val_data=val_data,
                test_data=test_data,
                model_metrics=model_metrics,
                settings=settings,
                warmup=warmup,
                repeats=repeats,
            )
        )
        return out

    device = str(shipped.device)
    if val_data is not None:
        out["accuracy"] = accuracy(shipped.model, *val_data, device=device)
    if test_data is not None:
        out["test_accuracy"] = accuracy(shipped.model, *test_data, device=device)
    if not model_metrics:
        return out
    out["size_bytes"] = size_bytes(shipped.model)
    timing = functools.partial(
        time_torch,
        device=device,
        threads=threads,
        batch_size=settings.batch_size,
        warmup=warmup,
        repeats=repeats,
        compile_model=compiles(shipped, settings.compile),
    )
    # A target rebuilds the model from what the trial keeps, as retime does (an int8 graph
    # does not pickle).
    there = functools.partial(_kept, shipped, example, settings, threads)
    out.update(_timed(settings.target, timing, shipped.model, there, example))
    return out


def _kept(
    shipped: Shipped, example: torch.Tensor, settings: MeasureSpec, threads: int
) -> TrialModel:
    """What the trial keeps of ``shipped``, without its test data (exporting and rebuilding
    the model need none)."""
    return trial_model(
        shipped,
        test_data=(example[:1], torch.zeros(1, dtype=torch.long)),
        measure=settings,
        threads=threads,
    )


def _timed(
    target: str | None,
    timing: Callable[[Any, torch.Tensor], dict[str, Any]],
    here: Any,
    there: Callable[[], Any],
    example: torch.Tensor,
) -> dict[str, Any]:
    """``timing`` of the model: ``here`` on this machine, or what ``there()`` makes of it
    on the ``measure.target`` node."""
    if not target:
        return timing(here, example)
    from ._target import time_on_target

    return time_on_target(target, timing, there(), example)


def time_torch(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str,
    threads: int,
    batch_size: int,
    warmup: int,
    repeats: int,
    compile_model: bool,
) -> dict[str, Any]:
    """Latency of a shipped PyTorch model at batch 1 and ``batch_size``, with the yardstick
    timed before and after, under the names trials record it."""
    out: dict[str, Any] = {}
    compile_s = 0.0
    # The batch size first: whether freezing was kept there decides whether batch 1 tries it.
    frozen_at_batch: bool | None = None
    reference_before = reference_ms(device, threads=threads)
    for suffix, batch, passes in (
        ("_batch", batch_size, (max(1, warmup // 2), max(3, repeats // 2))),
        ("", 1, (warmup, repeats)),
    ):
        stats = measure_latency(
            model,
            example,
            batch_size=batch,
            device=device,
            warmup=passes[0],
            repeats=passes[1],
            threads=threads,
            compile=compile_model,
            freezing=try_freezing(batch, frozen_at_batch),
        )
        if suffix:
            frozen_at_batch = stats.frozen
        out[f"latency_ms{suffix}"] = stats.p50_ms
        out[f"latency_ms{suffix}_p90"] = stats.p90_ms
        compile_s += stats.compile_s
        if compile_model:
            out[f"compiled_frozen{suffix}"] = stats.frozen
        if suffix:
            out["latency_batch_size"] = stats.batch_size
        else:
            out["latency_device"] = stats.device
            out["latency_machine"] = machine_name(stats.device)
            out["latency_threads"] = stats.threads
    out["latency_reference_ms"] = (reference_before + reference_ms(device, threads=threads)) / 2
    out["latency_runtime"] = "torch"
    out["compiled"] = compile_model
    out["compile_time_s"] = compile_s
    return out


def _measure_onnx(
    shipped: Shipped,
    *,
    threads: int,
    example: torch.Tensor,
    val_data: tuple[torch.Tensor, torch.Tensor] | None,
    test_data: tuple[torch.Tensor, torch.Tensor] | None,
    model_metrics: bool,
    settings: MeasureSpec,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    proto, int8_layers = onnx_shipped(_kept(shipped, example, settings, threads))
    data = proto.SerializeToString()
    runner = OnnxRunner(data, threads=threads)
    out: dict[str, Any] = {
        "onnx_int8_nodes": onnx_int8_nodes(proto),
        "int8_layers": list(int8_layers),
    }
    if val_data is not None:
        out["accuracy"] = runner.accuracy(*val_data)
    if test_data is not None:
        out["test_accuracy"] = runner.accuracy(*test_data)
    if not model_metrics:
        return out
    out["size_bytes"] = len(data)
    out["size_format"] = "onnx"
    timing = functools.partial(
        time_onnx,
        threads=runner.threads,
        batch_size=settings.batch_size,
        warmup=warmup,
        repeats=repeats,
    )
    out.update(_timed(settings.target, timing, runner, lambda: data, example))
    return out


def time_onnx(
    model: OnnxRunner | bytes,
    example: torch.Tensor,
    *,
    threads: int,
    batch_size: int,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Latency of an ONNX file (or a session on it) at batch 1 and ``batch_size``, with the
    yardstick timed before and after, under the names trials record it."""
    runner = model if isinstance(model, OnnxRunner) else OnnxRunner(model, threads=threads)
    reference_before = reference_ms("cpu", threads=runner.threads)
    p50, p90 = runner.latency(example, batch_size=1, warmup=warmup, repeats=repeats)
    b50, b90 = runner.latency(
        example,
        batch_size=batch_size,
        warmup=max(1, warmup // 2),
        repeats=max(3, repeats // 2),
    )
    reference_after = reference_ms("cpu", threads=runner.threads)
    return {
        "latency_ms": p50,
        "latency_ms_p90": p90,
        "latency_ms_batch": b50,
        "latency_ms_batch_p90": b90,
        "latency_batch_size": batch_size,
        "latency_runtime": "onnxruntime",
        "latency_device": "cpu",
        "latency_machine": machine_name("cpu"),
        "latency_reference_ms": (reference_before + reference_after) / 2,
        "latency_threads": runner.threads,
    }

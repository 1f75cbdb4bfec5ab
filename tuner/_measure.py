"""Measure the model tuner would ship: its file size, its latency and its accuracy.

Shipping encoding (format version 2)
------------------------------------

The size tuner reports is the length of a real file, written by :func:`serialize_model` and
read back by :func:`deserialize_model_state`. It holds the model's state (its weights and
buffers; the architecture is code and is not stored)::

    magic     4 bytes   b"TUNR"
    version   2 bytes   unsigned little-endian, 2
    length    4 bytes   unsigned little-endian, size of the index in bytes
    index     zlib-compressed JSON (UTF-8, sorted keys, no spaces): {"tensors": [entry, ...]}
    lengths   4 bytes per tensor, unsigned little-endian: each block's length, in index order
    payload   the tensor blocks, one after the other, in index order

Version 1 stored the index uncompressed, with each tensor's non-zero count, offset and
length in it; on a small model it was a fifth of the file (1.7 KB of 8 KB for the int8
MNIST-1D CNN; 0.3 KB now). The compressed index holds only the tensors' layout, so models
of one architecture and the same total of stored elements have files of the same size,
however their zeros are spread over the layers. Both versions are read.

Each index entry has ``name`` (the state-dict key), ``dtype`` (the stored element type, e.g.
``float32``, ``int64``, ``int8``), ``shape``, ``encoding`` (``dense`` or ``sparse``),
in version 1 ``offset`` and ``length`` (the block's place in the payload), and,
for int8 tensors, ``quant``: ``{"dtype": "qint8", "scheme": "per_channel" | "per_tensor",
"axis": a, "channels": c}``. A block is laid out as:

* for int8 tensors first the quantization parameters: ``c`` float32 scales, then ``c`` int32
  zero points (``c = 1`` when per tensor);
* ``dense``: every element, little-endian, in row-major order;
* ``sparse``: a bitmask of one bit per element (row-major, least significant bit first,
  padded to whole bytes; 1 = non-zero), then only the non-zero elements.

Every tensor is written in whichever of the two encodings is smaller, so zeros left by pruning
cost one bit each. Float tensors keep their own dtype (float32 usually; float8 weights, which
torchao makes on GPUs, one byte each, stored as their bytes). Int8 layers store
their weights as 1 byte per element plus their per-channel scales and zero points; tuner
quantizes weights symmetrically, so a pruned (zero) weight is the integer 0 and stays sparse.
Biases and buffers (BatchNorm statistics, activation scales) are stored like any tensor. The
same model always gives the same bytes.

The int8 models tuner makes hold their weights as plain int8 tensors with their scales and
zero points in tensors beside them (a PT2E graph's constants, or the inner tensors of
torchao's quantized tensor subclasses); each of those is stored as above. The ``quant``
entry is for PyTorch quantized tensors, which a user's own model may still carry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import platform
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any

import numpy as np
import torch
from torch import nn

from tuner._logs import logs_below
from tuner._pt2e_patterns import copy_graph
from tuner._tracing import tracing

__all__ = [
    "Compiled",
    "LatencyStats",
    "accuracy",
    "compile_for_inference",
    "deserialize_model_state",
    "measure_latency",
    "serialize_model",
    "size_bytes",
]

MAGIC = b"TUNR"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_PREAMBLE = struct.Struct("<4sHI")
# Stored element type -> little-endian numpy type; bfloat16 travels as its raw 16 bits.
_NUMPY_TYPES = {
    "float64": "<f8",
    "float32": "<f4",
    "float16": "<f2",
    "bfloat16": "<i2",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
    # float8 (torchao's GPU weights) is stored as its bytes.
    "float8_e4m3fn": "u1",
    "float8_e5m2": "u1",
}
# Element types NumPy has no type for, stored as raw integers of their width.
_VIEWED_AS = {"bfloat16": torch.int16, "float8_e4m3fn": torch.uint8, "float8_e5m2": torch.uint8}


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one forward pass over a batch.

    Attributes:
        p50_ms: Median, in milliseconds.
        p90_ms: 90th percentile, in milliseconds.
        batch_size: Rows per forward pass.
        device: Where it was really measured (``"cpu"``, ``"cuda:0"``, ...).
        threads: CPU threads torch was allowed to use.
        compile_s: Seconds ``torch.compile`` took (its first call), 0.0 when not compiled;
            never part of the latency.
        frozen: Compiled with inductor's freezing (see :func:`compile_for_inference`).
    """

    p50_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int
    compile_s: float = 0.0
    frozen: bool = False


def _shipping_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a shipped model needs.

    A graph (an int8 model from PT2E) ships the constants its graph reads, not the float
    weights it was made from. A quantized tensor subclass (torchao) ships its inner tensors
    (int8 data, scales), each under ``name.inner``.
    """
    if isinstance(model, torch.fx.GraphModule):
        raw: dict[str, torch.Tensor] = {}
        for node in model.graph.nodes:
            if node.op == "get_attr":
                value = _attribute(model, str(node.target))
                if isinstance(value, torch.Tensor):
                    raw[str(node.target)] = value
    else:
        raw = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        _flatten_tensor(key, value.detach(), state)
    return state


def _attribute(model: nn.Module, path: str) -> object:
    value: object = model
    for part in path.split("."):
        value = getattr(value, part, None)
    return value


def _flatten_tensor(key: str, tensor: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
    if type(tensor) in (torch.Tensor, nn.Parameter) or not hasattr(tensor, "__tensor_flatten__"):
        state[key] = tensor
        return
    names, _ = tensor.__tensor_flatten__()
    for name in names:
        inner = getattr(tensor, name)
        if isinstance(inner, torch.Tensor):
            _flatten_tensor(f"{key}.{name}", inner, state)


def _numpy_values(tensor: torch.Tensor) -> tuple[str, np.ndarray]:
    tensor = tensor.detach().cpu().contiguous()
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype in _VIEWED_AS:
        tensor = tensor.view(_VIEWED_AS[dtype])
    if dtype not in _NUMPY_TYPES:
        raise ValueError(f"cannot serialize a tensor of dtype {tensor.dtype}")
    return dtype, tensor.numpy().reshape(-1).astype(_NUMPY_TYPES[dtype], copy=False)


def _encode_values(values: np.ndarray) -> tuple[str, int, bytes]:
    nonzero = values != 0
    nnz = int(nonzero.sum())
    dense = values.tobytes()
    sparse_length = (values.size + 7) // 8 + nnz * values.itemsize
    if sparse_length < len(dense):
        mask = np.packbits(nonzero, bitorder="little").tobytes()
        return "sparse", nnz, mask + values[nonzero].tobytes()
    return "dense", nnz, dense


def _encode_tensor(name: str, tensor: torch.Tensor) -> tuple[dict[str, object], bytes]:
    quant_block = b""
    quant: dict[str, object] | None = None
    if tensor.is_quantized:
        tensor = tensor.cpu()
        scheme = tensor.qscheme()
        if scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales = tensor.q_per_channel_scales()
            zero_points = tensor.q_per_channel_zero_points()
            quant = {"scheme": "per_channel", "axis": int(tensor.q_per_channel_axis())}
        elif scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            scales = torch.tensor([tensor.q_scale()])
            zero_points = torch.tensor([tensor.q_zero_point()])
            quant = {"scheme": "per_tensor"}
        else:
            raise ValueError(f"cannot serialize {name!r}: unsupported qscheme {scheme}")
        quant["dtype"] = str(tensor.dtype).removeprefix("torch.")
        quant["channels"] = int(scales.numel())
        quant_block = (
            scales.to(torch.float32).numpy().astype("<f4").tobytes()
            + zero_points.to(torch.int32).numpy().astype("<i4").tobytes()
        )
        tensor = tensor.int_repr()
    dtype, values = _numpy_values(tensor)
    encoding, _, block = _encode_values(values)
    entry: dict[str, object] = {
        "name": name,
        "dtype": dtype,
        "shape": list(tensor.shape),
        "encoding": encoding,
    }
    if quant is not None:
        entry["quant"] = quant
    return entry, quant_block + block


def serialize_model(model: nn.Module) -> bytes:
    """Encode ``model``'s state in tuner's shipping format (see the module docstring).

    Args:
        model: A float, pruned or quantized model.

    Returns:
        The file's bytes; the same model always gives the same bytes.
    """
    entries: list[dict[str, object]] = []
    blocks: list[bytes] = []
    for name, tensor in _shipping_state(model).items():
        entry, block = _encode_tensor(name, tensor)
        entries.append(entry)
        blocks.append(block)
    index = json.dumps({"tensors": entries}, sort_keys=True, separators=(",", ":")).encode()
    index = zlib.compress(index, 9)
    lengths = struct.pack(f"<{len(blocks)}I", *(len(b) for b in blocks))
    return _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(index)) + index + lengths + b"".join(blocks)


def size_bytes(model: nn.Module) -> int:
    """Size in bytes of ``model`` as shipped: ``len(serialize_model(model))``."""
    return len(serialize_model(model))


def _decode_values(entry: dict[str, object], block: bytes) -> torch.Tensor:
    dtype = str(entry["dtype"])
    shape = [int(size) for size in entry["shape"]]  # type: ignore[attr-defined]
    numpy_type = np.dtype(_NUMPY_TYPES[dtype])
    count = math.prod(shape)
    if entry["encoding"] == "sparse":
        mask_length = (count + 7) // 8
        mask = np.unpackbits(
            np.frombuffer(block[:mask_length], dtype=np.uint8), count=count, bitorder="little"
        ).astype(bool)
        values = np.zeros(count, dtype=numpy_type)
        values[mask] = np.frombuffer(block[mask_length:], dtype=numpy_type)
    elif entry["encoding"] == "dense":
        values = np.frombuffer(block, dtype=numpy_type, count=count)
    else:
        raise ValueError(f"unknown encoding {entry['encoding']!r} for {entry['name']!r}")
    tensor = torch.from_numpy(values.astype(numpy_type.newbyteorder("="))).reshape(shape)
    return tensor.view(getattr(torch, dtype)) if dtype in _VIEWED_AS else tensor


def deserialize_model_state(data: bytes) -> dict[str, torch.Tensor]:
    """Decode a file written by :func:`serialize_model` into dense tensors.

    Args:
        data: The file's bytes.

    Returns:
        The state in file order. Float and integer tensors come back with their dtype. An int8
        tensor ``name`` comes back as its integers (``int8``) plus ``name + ".scale"``
        (float32, one per channel) and ``name + ".zero_point"`` (int32, one per channel).

    Raises:
        ValueError: ``data`` is not a tuner shipping file of a known version.
    """
    if len(data) < _PREAMBLE.size:
        raise ValueError("not a tuner model file: too short")
    magic, version, index_length = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a tuner model file: magic {magic!r}, expected {MAGIC!r}")
    if version not in _READABLE_VERSIONS:
        raise ValueError(f"tuner model file version {version} is not supported")
    start = _PREAMBLE.size + index_length
    raw_index = data[_PREAMBLE.size : start]
    try:
        index = json.loads((zlib.decompress(raw_index) if version >= 2 else raw_index).decode())
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a readable tuner model file: its index is damaged ({exc})") from None
    entries = index["tensors"]
    if version >= 2:
        # The blocks' lengths follow the index; each block starts where the last one ended.
        table = struct.Struct(f"<{len(entries)}I")
        if len(data) < start + table.size:
            raise ValueError("not a readable tuner model file: it ends inside its lengths table")
        lengths = table.unpack_from(data, start)
        start += 4 * len(entries)
        offsets = accumulate(lengths, initial=0)
        entries = [{**e, "offset": o, "length": n} for e, o, n in zip(entries, offsets, lengths)]
    state: dict[str, torch.Tensor] = {}
    for entry in entries:
        block = data[start + entry["offset"] : start + entry["offset"] + entry["length"]]
        name = entry["name"]
        quant = entry.get("quant")
        if quant is not None:
            channels = int(quant["channels"])
            scales = np.frombuffer(block, dtype="<f4", count=channels)
            zero_points = np.frombuffer(block, dtype="<i4", count=channels, offset=4 * channels)
            state[name + ".scale"] = torch.from_numpy(scales.astype(np.float32))
            state[name + ".zero_point"] = torch.from_numpy(zero_points.astype(np.int32))
            block = block[8 * channels :]
        state[name] = _decode_values(entry, block)
    return state


def machine_name(device: str) -> str:
    """What a latency measured on ``device`` was measured on, as people name it: the GPU's
    name for CUDA (``NVIDIA H100 80GB HBM3``), else the CPU's model (``AMD EPYC 9R14``).

    Latencies from machines of different kinds do not compare; trials record this so that
    a front that mixes them says so.
    """
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    return _cpu_model()


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            return _cpu_name(cpuinfo.read()) or platform.machine() or "unknown CPU"
    except OSError:  # not Linux
        return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_name(cpuinfo: str) -> str | None:
    """The first processor's model name in ``/proc/cpuinfo``'s text. A name without a number
    (a VM may show a whole product line, ``AMD EPYC``, for CPUs generations apart) gets its
    family and model numbers: ``AMD EPYC (family 25, model 17)``. Arm Linux shows no model
    name, only the core's implementer and part numbers, which tell cores apart:
    ``Arm CPU (implementer 0x41, part 0xd0c)`` (a Neoverse N1)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block ends
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), " ".join(value.split()))
    name = fields.get("model name")
    if not name:
        implementer, part = fields.get("CPU implementer"), fields.get("CPU part")
        return f"Arm CPU (implementer {implementer}, part {part})" if implementer and part else None
    if any(c.isdigit() for c in name) or "cpu family" not in fields:
        return name
    return f"{name} (family {fields['cpu family']}, model {fields.get('model', '?')})"


# The yardstick timed beside each trial's latency: a float32 matrix product of this many
# rows, inputs and outputs (a fraction of a millisecond on one CPU thread). On a GPU the
# product is larger, so that it times the GPU's arithmetic rather than a kernel launch.
REFERENCE_SHAPE = (128, 256, 256)
REFERENCE_SHAPE_CUDA = (2048, 2048, 2048)


def reference_ms(device: str = "cpu", *, threads: int = 1, repeats: int = 15) -> float:
    """Median milliseconds of one fixed computation on ``device`` with ``threads``: how fast
    the machine runs at this moment.

    The same computation every time, so its timings differ only as the machine's speed
    does: a VM's CPU share, other work on the host, clock speed. Timed beside a trial's
    latency, it says how far latencies timed at different moments compare.
    """
    target = _resolve_device(device)
    rows, inner, outer = REFERENCE_SHAPE_CUDA if target.type == "cuda" else REFERENCE_SHAPE
    # Made where they are used: on a GPU, 2048-wide inputs made on the CPU and copied over
    # would cost more than the timing.
    generator = torch.Generator(device=target).manual_seed(0)
    a = torch.randn(rows, inner, generator=generator, device=target)
    b = torch.randn(inner, outer, generator=generator, device=target)
    product = LatencyTimer(functools.partial(torch.mm, mat2=b), a, threads, 0.0, frozen=False)
    return product.time(warmup=3, repeats=repeats)[0]


def _resolve_device(device: str | torch.device) -> torch.device:
    target = torch.device(device)
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available")
        if target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
    return target


def to_eval(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, also when it was loaded from a ``torch.export`` program.

    Such a module runs its graph as it was exported (in eval mode) and refuses ``eval()``;
    only its flags are set, so nothing that reads them (an exporter) takes it for training.
    """
    try:
        model.eval()
    except NotImplementedError:
        for module in model.modules():
            module.training = False
    return model


@contextlib.contextmanager
def _evaluating(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` in eval mode on ``device``, leaving the caller's model as it was."""
    tensors = chain(model.parameters(), model.buffers())
    if all(tensor.device == device for tensor in tensors):
        modes = [(module, module.training) for module in model.modules()]
        to_eval(model)
        try:
            yield model
        finally:
            for module, training in modes:
                module.training = training
    else:
        moved = copy_graph(model).to(device)
        to_eval(moved)
        yield moved


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_batch(example_input: torch.Tensor, batch_size: int) -> torch.Tensor:
    sample = example_input.detach()
    if sample.ndim == 0 or sample.shape[0] != 1:
        sample = sample.unsqueeze(0)
    return sample.expand(batch_size, *sample.shape[1:]).contiguous()


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _compile(
    model: nn.Module, batch: torch.Tensor, *, freezing: bool, quiet: bool = False
) -> tuple[Any, Any]:
    """``model`` compiled for ``batch``'s shape, and its output: the first call compiles.

    A compile that would run past torch's recompile limit raises instead of falling back to
    running the model uncompiled. With ``quiet`` torch's compiler logs no errors (for a
    compile that is allowed to fail).
    """
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    # Compiling traces the model: one capture at a time (see tuner._tracing).
    with (
        tracing(plain_attention=False),
        logs_below(logging.CRITICAL, *_COMPILER_LOGGERS) if quiet else contextlib.nullcontext(),
        inductor_config.patch(freezing=freezing),
        dynamo_config.patch(fail_on_recompile_limit_hit=True),
    ):
        runnable = torch.compile(model, dynamic=False)
        output = runnable(batch)
    _synchronize(batch.device)
    return runnable, output


def _same_output(
    output: Any, reference: Any, *, relative: float = 0.05, absolute: float = 1e-3
) -> bool:
    """Whether two outputs hold the same tensors: each within ``relative`` of the largest
    value plus ``absolute`` (by default int8 kernels' rounding)."""
    got, got_spec = torch.utils._pytree.tree_flatten(output)
    expected, expected_spec = torch.utils._pytree.tree_flatten(reference)
    if got_spec != expected_spec:
        return False
    for a, b in zip(got, expected):
        if not isinstance(b, torch.Tensor):
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            return False
        if b.numel() and not bool((a - b).abs().max() <= relative * b.abs().max() + absolute):
            return False
    return True


def _faster(
    candidate: Callable[[torch.Tensor], Any], baseline: Callable[[torch.Tensor], Any], batch: Any
) -> bool:
    """Whether ``candidate`` is clearly faster than ``baseline`` on ``batch``, taking turns."""
    timings: tuple[list[float], list[float]] = ([], [])
    for index in range(_CHOICE_PASSES + 2):
        for runnable, kept in zip((candidate, baseline), timings):
            start = time.perf_counter()
            runnable(batch)
            if index >= 2:
                kept.append(time.perf_counter() - start)
    return bool(np.median(timings[0]) < _CHOICE_MARGIN * np.median(timings[1]))


_CHOICE_PASSES = 10
_CHOICE_MARGIN = 0.95


# A failed freezing compile logs its stack at ERROR level before it raises; the caller
# handles the error, so the log would only alarm whoever reads a trial's output. Muted with
# the capture lock held (see _compile), so no other compile is.
_COMPILER_LOGGERS = ("torch._subclasses.fake_tensor", "torch._dynamo", "torch._inductor")


def try_freezing(batch_size: int, kept_at_larger: bool | None) -> bool:
    """Whether to try freezing at ``batch_size``, given whether it was kept at a larger batch
    size timed first (``None``: none was).

    Freezing's packed int8 kernels cost more per call and pay back over rows, so where they
    were not faster at the larger batch size they are not tried at batch 1 (one compile
    fewer; no model timed was faster frozen at batch 1 and not at 32).
    """
    return batch_size > 1 or kept_at_larger is None or kept_at_larger


@dataclass(frozen=True)
class Compiled:
    """A model compiled for one input shape (see :func:`compile_for_inference`)."""

    run: Callable[[torch.Tensor], Any]
    compile_s: float
    frozen: bool


def compile_for_inference(
    model: nn.Module, batch: torch.Tensor, *, freezing: bool = True
) -> Compiled:
    """``torch.compile`` ``model`` for inference on ``batch``'s shape, as a deployment would.

    Call in inference mode, with ``model`` in eval mode and on ``batch``'s device. A graph
    (a PT2E int8 model, or a ``torch.export`` program) on the CPU is compiled twice, with
    and without inductor's freezing, and freezing is kept where it is at least 5% faster on
    ``batch`` (the two take turns); ``freezing=False`` skips the compile with it (see
    :func:`try_freezing`). Freezing folds the weights in as constants, which lets inductor
    turn the int8 graph's quantize/dequantize pairs into oneDNN's int8 kernels with packed
    weights: the Transformer of ``bench/compression.py`` in int8 at batch 32 ran 1.9x
    faster than float with it, 1.0x without. Those kernels cost more per call, so at batch
    1, and for layers as small as an MLP's, the compile without freezing was faster (0.07 ms
    against 0.15 on the MLP). Freezing is not kept where it fails, as it does for int8 1-D
    convolutions in torch 2.13 (a wrong output length; tuner's int8 graphs run them as 2-D
    ones, see ``tuner._compression``), or where its answers differ. Other
    models, and every model on a GPU, are compiled once, without it.

    Returns:
        The compiled model, the seconds its compiles took (their first calls, never part of
        any latency), and whether it was compiled with freezing.
    """
    started = time.perf_counter()
    try:
        runnable, reference = _compile(model, batch, freezing=False)
    except torch._dynamo.exc.FailOnRecompileLimitHit:
        # A long-lived worker has compiled models of this class for many shapes: past
        # torch's limit it would run this one uncompiled. Start torch's cache afresh.
        torch._dynamo.reset()
        runnable, reference = _compile(model, batch, freezing=False)
    compile_s = time.perf_counter() - started
    if not freezing or batch.device.type != "cpu" or not isinstance(model, torch.fx.GraphModule):
        return Compiled(runnable, compile_s, frozen=False)
    started = time.perf_counter()
    try:
        # A copy of a graph is a new class with its own code, so torch's cache cannot hand
        # back the graph compiled above.
        frozen, output = _compile(copy_graph(model), batch, freezing=True, quiet=True)
    except Exception:  # noqa: BLE001 - freezing is an optimization; keep the plain compile
        return Compiled(runnable, compile_s + time.perf_counter() - started, frozen=False)
    compile_s += time.perf_counter() - started
    if _same_output(output, reference) and _faster(frozen, runnable, batch):
        return Compiled(frozen, compile_s, frozen=True)
    return Compiled(runnable, compile_s, frozen=False)


def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    batch_size: int = 1,
    device: str = "cpu",
    warmup: int = 10,
    repeats: int = 50,
    threads: int = 1,
    compile: bool = False,
    freezing: bool = True,
) -> LatencyStats:
    """Time forward passes of ``model`` in eval mode under ``torch.inference_mode``.

    Args:
        model: The model to time; its device and train/eval mode are left as they were.
        example_input: One sample, with (``[1, ...]``) or without (``[...]``) a batch
            dimension; a tensor whose first dimension is not 1 is taken to lack it.
        batch_size: The sample is repeated to this many rows.
        device: Where to run (an int8 model runs where it was quantized for).
        warmup: Untimed passes first.
        repeats: Timed passes.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards).
        compile: Run the model through ``torch.compile`` (for the shape timed); its first
            call, which compiles, is timed apart as ``compile_s``.
        freezing: With ``compile``, also try inductor's freezing (see
            :func:`compile_for_inference`).

    Returns:
        Median and 90th percentile latency of one pass.

    Raises:
        ValueError: A count is not a positive integer, or CUDA was asked for but is missing.
    """
    _check_count("batch_size", batch_size, 1)
    _check_count("warmup", warmup, 0)
    _check_count("repeats", repeats, 1)
    _check_count("threads", threads, 1)
    target = _resolve_device(device)
    with _evaluating(model, target) as evaluated:
        ready = latency_timer(
            evaluated,
            example_input,
            batch_size=batch_size,
            device=target,
            threads=threads,
            compile=compile,
            freezing=freezing,
        )
        p50_ms, p90_ms = ready.time(warmup=warmup, repeats=repeats)
    return LatencyStats(
        p50_ms=p50_ms,
        p90_ms=p90_ms,
        batch_size=batch_size,
        device=str(target),
        threads=threads,
        compile_s=ready.compile_s,
        frozen=ready.frozen,
    )


@dataclass(frozen=True)
class LatencyTimer:
    """A model made ready to time at one batch size: compiled once where asked, then timed
    as often as wanted (see :func:`latency_timer`)."""

    run: Callable[[torch.Tensor], Any]
    batch: torch.Tensor
    threads: int
    compile_s: float
    frozen: bool

    def time(self, *, warmup: int, repeats: int) -> tuple[float, float]:
        """Median and 90th percentile milliseconds of one pass, after ``warmup`` passes."""
        _check_count("warmup", warmup, 0)
        _check_count("repeats", repeats, 1)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        timings_ms: list[float] = []
        try:
            with torch.inference_mode():
                for _ in range(warmup):
                    self.run(self.batch)
                for _ in range(repeats):
                    _synchronize(self.batch.device)
                    start = time.perf_counter()
                    self.run(self.batch)
                    _synchronize(self.batch.device)
                    timings_ms.append((time.perf_counter() - start) * 1000.0)
        finally:
            torch.set_num_threads(previous_threads)
        return float(np.percentile(timings_ms, 50)), float(np.percentile(timings_ms, 90))


def latency_timer(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    threads: int = 1,
    compile: bool = False,
    freezing: bool = True,
) -> LatencyTimer:
    """``model`` ready to time at ``batch_size`` on ``device`` with ``threads``.

    ``model`` must be in eval mode on ``device`` already; it is run as it is, not copied, so
    it must not change while the timer is used. With ``compile`` it is compiled here, once
    (see :func:`compile_for_inference`, and ``freezing`` there), and the timer runs what was
    compiled. Arguments as for :func:`measure_latency`.
    """
    _check_count("batch_size", batch_size, 1)
    _check_count("threads", threads, 1)
    batch = _one_batch(example_input, batch_size).to(_resolve_device(device))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            if not compile:
                return LatencyTimer(model, batch, threads, compile_s=0.0, frozen=False)
            compiled = compile_for_inference(model, batch, freezing=freezing)
    finally:
        torch.set_num_threads(previous_threads)
    return LatencyTimer(compiled.run, batch, threads, compiled.compile_s, compiled.frozen)


def accuracy(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: str = "cpu",
    batch_size: int = 512,
) -> float:
    """Fraction of ``labels`` matched by the argmax of ``model``'s logits over dim 1.

    Args:
        model: A classifier; evaluated in eval mode without gradients, left as it was.
        inputs: All inputs, batch first.
        labels: Class indices, one per input row.
        device: Where to run (an int8 model runs where it was quantized for).
        batch_size: Rows per forward pass.

    Returns:
        The accuracy, in [0, 1].

    Raises:
        ValueError: Empty or mismatched inputs/labels, or a bad batch size.
    """
    _check_count("batch_size", batch_size, 1)
    if inputs.shape[0] == 0 or inputs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"need as many labels as inputs (at least one); got {inputs.shape[0]} inputs "
            f"and {labels.shape[0]} labels"
        )
    target = _resolve_device(device)
    correct = 0
    with _evaluating(model, target) as runnable, torch.inference_mode():
        for batch, batch_labels in zip(
            inputs.split(batch_size), labels.split(batch_size), strict=True
        ):
            predictions = runnable(batch.to(target)).argmax(dim=1)
            correct += int((predictions == batch_labels.to(target)).sum())
    return correct / labels.numel()

"""The model as it ships, in each format, and the ONNX Runtime session that runs it.

* ``onnx``: the float model after sparsity is exported by the dynamo-based
  ``torch.onnx.export`` (``torch.export`` underneath, so Transformers export too); a trial
  that used int8 is then quantized by ONNX Runtime: ``quantize_static`` with the trial's
  calibration inputs for convolutions, ``quantize_dynamic`` for MatMul/Gemm. Weights with enough
  zeros are stored as a bitmask of non-zeros plus the non-zero values and expanded by a
  small function in the graph, which ONNX Runtime folds into a dense constant when the
  session loads: the file is small and inference runs at dense speed.
* ``pt2``: the PyTorch model as shipped (int8 where the trial used it) as a ``torch.export``
  program (``torch.export.load(path).module()`` runs it).
* ``state_dict``: the shipped model's ``state_dict`` (``torch.load(..., weights_only=True)``).

The shipping path measures these bytes; ``tuner export`` writes them.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._artifacts import TrialModel
from ._exceptions import ExportError, SpecError, first_line
from ._logs import logs_below
from ._pt2e_patterns import copy_graph
from ._tracing import tracing

FORMATS = ("onnx", "pt2", "state_dict")
OPSET = 20
INPUT = "input"
OUTPUT = "logits"
# Nodes that compute in int8 in an ONNX graph.
INT8_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)
DECODE_DOMAIN = "tuner.sparse"
_DECODE_OP = "Decode"
# Smaller tensors are not worth the decoding nodes.
_MIN_SPARSE_ELEMENTS = 64


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs onnx and onnxruntime: pip install 'tuner[export]'"
        ) from exc


# --- ONNX ----------------------------------------------------------------------------


def _quiet_exporter() -> contextlib.AbstractContextManager[None]:
    """Keep the exporter's and quantizer's progress lines out of trial logs.

    The dynamo exporter logs which optional operator libraries are missing (torchvision)
    and ONNX Runtime's quantizer logs advice to pre-process; both go through ``logging``
    and say nothing about the model. Warnings are left alone.
    """
    return logs_below(logging.ERROR, "", "torch.onnx")


def _two_rows(example: torch.Tensor) -> torch.Tensor:
    """Two copies of the first row: batch 1 would let ``torch.export`` specialise the batch
    dimension away."""
    row = example.detach().cpu()[:1]
    return row.expand(2, *row.shape[1:]).contiguous()


def _float_onnx(model: nn.Module, example: torch.Tensor) -> Any:
    """The float model as ONNX, from ``torch.export`` (the dynamo-based exporter).

    The batch dimension is dynamic. Attention is exported as its Linear projections and
    matrix products, which ONNX Runtime's quantizer can then see.
    """
    from ._measure import to_eval

    model = to_eval(model.cpu())
    sample = _two_rows(example)
    try:
        with _quiet_exporter(), tracing(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (sample,),
                None,
                dynamo=True,
                verbose=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception as exc:
        first = first_line(exc)
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {first}") from exc
    if program is None:  # pragma: no cover - only when a file target is given
        raise ExportError(f"torch.onnx.export returned no program for {type(model).__name__}")
    proto = program.model_proto
    # Shapes recorded by the exporter go stale once the quantizer rewrites the graph.
    del proto.graph.value_info[:]
    return proto


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over a batch of inputs."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self._batches = iter([{INPUT: b.numpy()} for b in inputs.cpu().split(64)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


_QUANTIZABLE = ("Conv", "MatMul", "Gemm")


def _attention_names(model: nn.Module) -> frozenset[str]:
    return frozenset(n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention))


def _node_modules(proto: Any, attention: frozenset[str] = frozenset()) -> dict[str, str]:
    """For each Conv/MatMul/Gemm node, and each Gather from an embedding's table, of an
    exported graph, the module it came from.

    A node whose weight is a named parameter (``blocks.0.conv1.weight``) belongs to that
    layer; otherwise the exporter's record of the module scopes it ran in names it. The
    output projection of an attention layer named in ``attention`` belongs to the attention,
    as its input projection does: PyTorch's quantizers and tuner's layer names treat the two
    as one layer.
    """
    inits = {i.name for i in proto.graph.initializer}
    int8_tables = _dequantized(proto, stored=True)
    modules: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type == "Gather":
            table = _embedding_table(node, inits)
            if table is not None:
                modules[node.name] = table[: -len(".weight")]
            if table is not None or node.input[0] not in int8_tables:
                continue
            # A table stored in int8 and dequantized first: named by its module scope below.
        elif node.op_type not in _QUANTIZABLE:
            continue
        weight = next((n for n in node.input[1:] if n in inits and n.endswith(".weight")), None)
        if weight is not None:
            layer = weight[: -len(".weight")]
            owner = layer.rpartition(".")[0]
            modules[node.name] = owner if owner in attention else layer
            continue
        meta = {entry.key: entry.value for entry in node.metadata_props}
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            scopes = []
        if len(scopes) >= 2 and scopes[-2]:
            modules[node.name] = str(scopes[-2])
    return modules


def _embedding_table(node: Any, inits: set[str]) -> str | None:
    """The stored weight a Gather node looks rows up in (an embedding's table), if it is one."""
    table = node.input[0] if node.input else ""
    return table if table in inits and table.endswith(".weight") else None


def _int8_modules(proto: Any, modules: dict[str, str]) -> tuple[str, ...]:
    """The modules whose nodes compute in int8 in a quantized graph, in graph order.

    The quantizer names each int8 node after the node it replaced.
    """
    names: list[str] = []
    originals = sorted(modules, key=len, reverse=True)
    tables = _int8_tables(proto)
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.name in modules and node.input[0] in tables:
            if modules[node.name] not in names:  # it keeps its name
                names.append(modules[node.name])
            continue
        if node.op_type not in INT8_OPS:
            continue
        source = next((o for o in originals if node.name.startswith(o + "_")), None)
        if source is not None and modules[source] not in names:
            names.append(modules[source])
    return tuple(names)


def _int8_tables(proto: Any) -> set[str]:
    """Initializers stored in 8 bits (what a quantized Gather reads its rows from)."""
    import onnx

    kinds = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return {i.name for i in proto.graph.initializer if i.data_type in kinds}


def _dequantized(proto: Any, *, stored: bool = False) -> set[str]:
    """Tensors that are int8 weights dequantized, possibly transposed or reshaped after.

    With ``stored``, only those dequantized from a tensor the file stores (an initializer,
    a constant, one decoded from its sparse form, or one of these quantized in the graph),
    never from an activation.
    """
    kept = {i.name for i in proto.graph.initializer}
    out: set[str] = set()
    for node in proto.graph.node:  # in topological order
        if node.op_type in ("Constant", _DECODE_OP) or (
            node.op_type in ("QuantizeLinear", "Cast") and node.input[0] in kept
        ):
            kept.update(node.output)
        if (node.op_type == "DequantizeLinear" and (not stored or node.input[0] in kept)) or (
            node.op_type in ("Transpose", "Reshape", "Identity")
            and node.input
            and node.input[0] in out
        ):
            out.update(node.output)
    return out


def _qdq_weighted(proto: Any) -> list[Any]:
    """Conv/MatMul/Gemm nodes whose weight, and Gathers whose table, comes out of a
    DequantizeLinear (QDQ int8)."""
    dequantized, tables = _dequantized(proto), _dequantized(proto, stored=True)
    return [n for n in proto.graph.node if _qdq_op(n, dequantized, tables) is not None]


def _qdq_op(node: Any, dequantized: set[str], tables: set[str]) -> str | None:
    """``QDQ<OpType>`` for a node that reads its weight (or its stored table, for a Gather)
    in int8 through a DequantizeLinear, else ``None``."""
    if node.op_type in _QUANTIZABLE and len(node.input) > 1 and node.input[1] in dequantized:
        return f"QDQ{node.op_type}"
    if node.op_type == "Gather" and node.input and node.input[0] in tables:
        return "QDQGather"
    return None


def _qdq_modules(proto: Any, attention: frozenset[str] = frozenset()) -> tuple[str, ...]:
    modules = _node_modules(proto, attention)
    names: list[str] = []
    for node in _qdq_weighted(proto):
        module = modules.get(node.name)
        if module is not None and module not in names:
            names.append(module)
    return tuple(names)


def _int8_onnx(
    proto: Any,
    calibration: torch.Tensor | None,
    keep_float: tuple[str, ...] = (),
    attention: frozenset[str] = frozenset(),
) -> Any:
    """int8 by ONNX Runtime's quantizer.

    Convolutions are quantized statically (activation ranges calibrated on the trial's
    inputs, weights per output channel): ONNX Runtime has no dynamic int8 convolution.
    MatMul and Gemm (Linear layers, attention projections) are quantized dynamically,
    activation ranges read per batch at run time; embedding tables (a Gather from a weight)
    are stored in 8 bits and dequantized after the lookup. Nodes of the layers in ``keep_float``
    stay float. Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX
    Runtime adds pairs of uint8 x int8 products in 16 bits, which full-range weights
    overflow, so the same file would answer differently there.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    inits = {i.name for i in proto.graph.initializer}
    excluded = [
        node for node, module in _node_modules(proto, attention).items() if module in keep_float
    ]
    # Only embedding tables: a Gather from another stored tensor (a position or bias table
    # indexed at run time) stays float, as it does in the torch runtime.
    excluded += [
        n.name
        for n in proto.graph.node
        if n.op_type == "Gather" and n.input[0] in inits and _embedding_table(n, inits) is None
    ]
    ops = {n.op_type for n in proto.graph.node}
    with tempfile.TemporaryDirectory(prefix="tuner-onnx-") as tmp, _quiet_exporter():
        source = Path(tmp) / "float.onnx"
        onnx.save(proto, str(source))
        if "Conv" in ops:
            if calibration is None:
                raise ExportError(
                    "int8 convolutions in ONNX need calibration inputs; the trial kept none"
                )
            static = Path(tmp) / "static.onnx"
            quantize_static(
                str(source),
                str(static),
                _Calibration(calibration),
                quant_format=QuantFormat.QOperator,
                op_types_to_quantize=["Conv"],
                nodes_to_exclude=excluded,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
            )
            source = static
        if ops & {"MatMul", "Gemm", "Gather"}:
            # The dynamic pass first rewrites each Gemm as a MatMul named after it.
            excluded += [f"{name}_MatMul" for name in excluded]
            dynamic = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(
                str(source),
                str(dynamic),
                # Gather: embedding tables in 8 bits; Gathers of computed tensors stay float.
                op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                nodes_to_exclude=excluded,
                weight_type=QuantType.QInt8,
                reduce_range=True,
                extra_options={"MatMulConstBOnly": True},
            )
            source = dynamic
        return onnx.load(str(source))


def _decode_function() -> Any:
    """``Decode(mask, values, shape)``: a dense tensor from its non-zeros.

    ``mask`` holds one bit per element (little-endian bit order), ``values`` a leading zero
    then the non-zero values in order. Names are one letter: they are stored in the file.
    """
    from onnx import TensorProto, helper

    def const(name: str, array: np.ndarray) -> Any:
        tensor = helper.make_tensor(
            name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, array.reshape(-1)
        )
        return helper.make_node("Constant", [], [name], value=tensor)

    nodes = [
        const("a", np.arange(8, dtype=np.uint8)),
        const("b", np.array(1, dtype=np.uint8)),
        const("c", np.array([-1], dtype=np.int64)),
        const("d", np.array([0], dtype=np.int64)),
        const("e", np.array(0, dtype=np.int64)),
        helper.make_node("ReduceProd", ["s"], ["f"], keepdims=1),
        helper.make_node("Unsqueeze", ["m", "c"], ["g"]),
        helper.make_node("BitShift", ["g", "a"], ["h"], direction="RIGHT"),
        helper.make_node("BitwiseAnd", ["h", "b"], ["i"]),
        helper.make_node("Reshape", ["i", "c"], ["j"]),
        helper.make_node("Slice", ["j", "d", "f"], ["k"]),
        helper.make_node("Cast", ["k"], ["l"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["k"], ["n"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["n", "e"], ["o"]),
        helper.make_node("Where", ["l", "o", "e"], ["p"]),
        helper.make_node("Gather", ["v", "p"], ["q"], axis=0),
        helper.make_node("Reshape", ["q", "s"], ["w"]),
    ]
    return helper.make_function(
        DECODE_DOMAIN,
        _DECODE_OP,
        ["m", "v", "s"],
        ["w"],
        nodes,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )


def _sparse_encode(proto: Any) -> Any:
    """Store weights with many zeros as bitmask + non-zeros, decoded in the graph."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    kept: list[Any] = []
    decode: list[Any] = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.size < _MIN_SPARSE_ELEMENTS or array.dtype not in (np.float32, np.int8):
            kept.append(init)
            continue
        flat = array.reshape(-1)
        present = flat != 0
        nnz = int(present.sum())
        encoded = (array.size + 7) // 8 + (nnz + 1) * array.itemsize + 60
        if encoded >= array.nbytes:
            kept.append(init)
            continue
        name = init.name
        kept += [
            numpy_helper.from_array(np.packbits(present, bitorder="little"), f"{name}_m"),
            numpy_helper.from_array(
                np.concatenate([np.zeros(1, dtype=array.dtype), flat[present]]), f"{name}_v"
            ),
            numpy_helper.from_array(np.array(array.shape, dtype=np.int64), f"{name}_s"),
        ]
        decode.append(
            helper.make_node(
                _DECODE_OP, [f"{name}_m", f"{name}_v", f"{name}_s"], [name], domain=DECODE_DOMAIN
            )
        )
    if decode:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(decode + nodes)
        proto.functions.append(_decode_function())
        proto.opset_import.append(helper.make_opsetid(DECODE_DOMAIN, 1))
    return proto


def _short_name(index: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    name = ""
    while True:
        index, rest = divmod(index, 36)
        name = digits[rest] + name
        if index == 0:
            return "t" + name


def _strip(proto: Any) -> Any:
    """Drop what only describes the graph and give inner tensors short names.

    Node names, doc strings, inferred shapes and long tensor names ("/0/Gemm_output_0")
    are a large part of a small model's file.
    """
    graph = proto.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = _short_name(len(names))
        return names[name]

    for init in graph.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        del node.metadata_props[:]
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    proto.doc_string = ""
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < OPSET:
            opset.version = OPSET
    return proto


def onnx_model(tm: TrialModel) -> Any:
    """The ONNX model that ships for a trial (``onnx.ModelProto``), checked."""
    return onnx_shipped(tm)[0]


def onnx_shipped(tm: TrialModel) -> tuple[Any, tuple[str, ...]]:
    """The ONNX model that ships for a trial, checked, and the layers it runs in int8."""
    _need_onnx()
    import onnx

    int8_layers: tuple[str, ...] = ()
    attention = _attention_names(tm.model)
    if tm.qat_program is not None:
        # int8 learned in training: the graph's own quantize/dequantize pairs carry the
        # scales into the file, and ONNX Runtime fuses them into int8 kernels.
        proto = _float_onnx(tm.shipped_torch(), tm.example)
        int8_layers = _qdq_modules(proto, attention)
    else:
        proto = _float_onnx(tm.model, tm.example)
        if tm.quantize == "int8":
            modules = _node_modules(proto, attention)
            proto = _int8_onnx(proto, tm.calibration, tuple(tm.float_layers), attention)
            int8_layers = _int8_modules(proto, modules)
    proto = _sparse_encode(_strip(proto))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model does not pass onnx.checker: {exc}") from exc
    return proto, int8_layers


def onnx_bytes(tm: TrialModel) -> bytes:
    """The bytes of the ONNX file that ships for a trial."""
    return onnx_model(tm).SerializeToString()


def onnx_int8_nodes(proto: Any) -> list[str]:
    """The nodes of an ONNX graph that compute in int8, as ``OpType`` names in order.

    A Conv/MatMul/Gemm fed int8 weights through DequantizeLinear (QDQ, as quantization-aware
    training exports) is listed as ``QDQ<OpType>``: ONNX Runtime runs it as an int8 kernel.
    A Gather whose table is stored in 8 bits (an embedding) is listed as ``Gather``, or
    ``QDQGather`` when the table is dequantized first.
    """
    dequantized, stored = _dequantized(proto), _dequantized(proto, stored=True)
    tables = _int8_tables(proto)
    names = []
    for node in proto.graph.node:
        if node.op_type in INT8_OPS or (node.op_type == "Gather" and node.input[0] in tables):
            names.append(node.op_type)
        elif (qdq := _qdq_op(node, dequantized, stored)) is not None:
            names.append(qdq)
    return names


def _numpy_type(onnx_type: str) -> np.dtype[Any]:
    """The numpy type of an ONNX Runtime input type such as ``tensor(int64)``."""
    name = onnx_type.removeprefix("tensor(").removesuffix(")")
    try:
        return np.dtype({"float": "float32", "double": "float64"}.get(name, name))
    except TypeError as exc:
        raise ExportError(
            f"the ONNX model's input is {onnx_type}, which tuner cannot feed"
        ) from exc


class OnnxRunner:
    """An ONNX Runtime session on CPU with a fixed thread count."""

    def __init__(self, model: bytes | str | Path, *, threads: int = 1) -> None:
        _need_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"ONNX Runtime cannot load the model: {exc}") from exc
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        # Token ids feed an embedding as int64, images may come as uint8: as the file asks.
        self.input_dtype = _numpy_type(model_input.type)
        self.threads = max(1, int(threads))

    def _feed(self, inputs: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        array = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs
        return {self.input_name: array.astype(self.input_dtype, copy=False)}

    def __call__(self, inputs: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.session.run(None, self._feed(inputs))[0]

    def accuracy(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
        correct = 0
        for x, y in zip(inputs.split(batch_size), labels.split(batch_size)):
            correct += int((self(x).argmax(axis=1) == y.numpy()).sum())
        return correct / max(1, labels.numel())

    def latency(
        self, example: torch.Tensor, *, batch_size: int, warmup: int, repeats: int
    ) -> tuple[float, float]:
        """Median and 90th percentile milliseconds of one run at ``batch_size``."""
        sample = example.detach().cpu()[:1]
        feed = self._feed(sample.expand(batch_size, *sample.shape[1:]).contiguous())
        for _ in range(warmup):
            self.session.run(None, feed)
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.session.run(None, feed)
            timings.append((time.perf_counter() - start) * 1000.0)
        return float(np.percentile(timings, 50)), float(np.percentile(timings, 90))


# --- export --------------------------------------------------------------------------


def check_format(fmt: str) -> None:
    if fmt == "torchscript":
        raise SpecError(
            "format: got 'torchscript'; TorchScript is deprecated in PyTorch, use pt2 "
            "(torch.export) instead"
        )
    if fmt not in FORMATS:
        raise SpecError(f"format: got {fmt!r}; expected one of {', '.join(FORMATS)}")


def _graph_weights_only(model: nn.Module) -> nn.Module:
    """``model`` without the tensors its graph never reads.

    A PT2E int8 graph keeps the float weights it was quantized from as parameters, though
    it reads their int8 copies: exported as they are, they would be written into the file
    (a width-96 Transformer's pt2 file held 614 KB of float weights next to 149 KB of int8
    ones). A copy without them is returned; other models as they are.
    """
    if not isinstance(model, torch.fx.GraphModule):
        return model
    read = {str(n.target) for n in model.graph.nodes if n.op in ("get_attr", "call_module")}

    def unread(name: str) -> bool:
        return not any(name == r or name.startswith(r + ".") for r in read)

    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    dropped = [n for n in names if unread(n)]
    if not dropped:
        return model
    slim = copy_graph(model)
    for name in dropped:
        owner_path, _, leaf = name.rpartition(".")
        owner = slim.get_submodule(owner_path) if owner_path else slim
        delattr(owner, leaf)
    return slim


def exported_program(model: nn.Module, example: torch.Tensor) -> Any:
    """``model`` as a ``torch.export`` program with a dynamic batch (``ExportedProgram``),
    holding only the tensors it reads."""

    try:
        with tracing(), torch.no_grad():
            return torch.export.export(
                _graph_weights_only(model),
                (_two_rows(example),),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception as exc:
        first = first_line(exc)
        raise ExportError(f"torch.export failed for {type(model).__name__}: {first}") from exc


def check_exportable(quantize: str) -> None:
    """Raise :class:`ExportError` (one line) for a trial whose model cannot be exported.

    float8 is made by torchao for the GPU a trial ran on; tuner exports on the CPU.
    """
    if quantize == "float8":
        raise ExportError(
            "the trial shipped float8, which torchao makes for the GPU it ran on; tuner exports "
            "on the CPU, which has no float8 kernels: expected a trial with quantize none or int8"
        )


def export_trial_model(tm: TrialModel, fmt: str) -> bytes:
    """The exported file's bytes for ``fmt`` (one of :data:`FORMATS`).

    Raises:
        ExportError: the model could not be rebuilt or written as ``fmt``, in one line.
    """
    check_format(fmt)
    check_exportable(tm.quantize)
    try:
        if fmt == "onnx":
            return onnx_bytes(tm)
        buffer = io.BytesIO()
        if fmt == "state_dict":
            torch.save(tm.shipped_torch().state_dict(), buffer)
            return buffer.getvalue()
        torch.export.save(exported_program(tm.shipped_torch(), tm.example), buffer)
        return buffer.getvalue()
    except (ExportError, SpecError):
        raise
    except Exception as exc:
        raise ExportError(
            f"the trial's model cannot be written as {fmt}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc

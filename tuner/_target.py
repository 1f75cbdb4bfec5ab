"""Latency timed on the machine a model ships to: ``measure.target``.

Trials train where Ray places them; with ``measure.target: NAME`` each shipped model is
sent to a Ray node that offers the custom resource ``NAME`` (``ray start --resources
'{"NAME": 1}'`` on a machine like the one the model ships to) and timed there, while its
accuracy and size are measured where it was trained. The task holds one unit of the
resource while it times, so a node that offers one unit times one model at a time and no
trial's timing runs beside another's. It takes no CPU from Ray's count: the node's CPUs
are the target's, not trial slots.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._artifacts import TrialModel
from ._exceptions import DispatchError, first_line

# Ray reserves these resource names for itself.
RESERVED = ("CPU", "GPU", "memory", "object_store_memory")
# How long a trial waits for the target to time its model: models queue there one at a
# time behind every other worker's, and a compiled int8 model takes a minute to compile.
WAIT_S = 1800.0

Timing = Callable[[Any, torch.Tensor], dict[str, Any]]


def check_target(name: Any) -> str | None:
    """Why ``name`` cannot be a Ray custom resource naming the target, or None."""
    if not isinstance(name, str) or not name.strip():
        return "the name of a Ray custom resource (a non-empty string)"
    if name in RESERVED or name.startswith(("node:", "accelerator_type:")):
        return f"a custom resource of your own; {name!r} is one Ray keeps for itself"
    if any(c.isspace() or c in "{}\"'," for c in name):
        return "a Ray resource name without spaces, quotes, braces or commas"
    return None


def offered(ray: Any, target: str) -> float:
    """Units of ``target`` the cluster's live nodes offer in all."""
    return float(ray.cluster_resources().get(target, 0.0))


def missing_target(target: str, where: str) -> str:
    """The line that says no node of the cluster at ``where`` offers ``target``."""
    head = where.split("://", 1)[-1].rsplit(":", 1)[0] if where else "HEAD"
    return (
        f"measure.target: no node of the Ray cluster{f' at {where}' if where else ''} offers "
        f"the resource {target!r}; on a machine like the one the model ships to, run: ray "
        f"start --address {head}:6379 --resources '{{\"{target}\": 1}}'"
    )


def time_on_target(
    target: str, timing: Timing, model: TrialModel | bytes, example: torch.Tensor
) -> dict[str, Any]:
    """Run ``timing(model, example)`` on a node offering ``target``; its figures, with the
    node that timed them (``latency_target``, ``latency_node``, ``latency_node_id``).

    ``model`` is an ONNX file's bytes, or what a trial keeps of a PyTorch model: the
    node rebuilds the model that runs from it (as ``tuner retime`` does; an int8 graph
    does not pickle), importing the classes it is made of from the folders they were
    imported from here.

    Raises:
        DispatchError: not inside a Ray worker, no live node offers ``target``, the
            timing failed there, or it did not end within ``WAIT_S``.
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - measure.target is checked against Ray first
        raise DispatchError("measure.target needs Ray: pip install 'tuner[ray]'") from exc
    if not ray.is_initialized():
        raise DispatchError(
            f"measure.target: {target!r} is a Ray node's resource; run the study with "
            "--backend ray (and --address to join the cluster that has it)"
        )
    if offered(ray, target) <= 0:
        raise DispatchError(missing_target(target, ""))
    if isinstance(model, bytes):
        payload, kind, paths = model, "onnx", []
    else:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        payload, kind, paths = buffer.getvalue(), "torch", _import_roots(model.model)
    task = ray.remote(_time_here).options(
        num_cpus=0, resources={target: 1}, max_retries=0, name=f"tuner-time-on-{target}"
    )
    ref = task.remote(timing, payload, kind, example.detach().cpu(), paths)
    try:
        figures: dict[str, Any] = ray.get(ref, timeout=WAIT_S)
    except ray.exceptions.GetTimeoutError as exc:
        ray.cancel(ref, force=True)
        raise DispatchError(
            f"measure.target {target!r}: the model was not timed within {WAIT_S:g} s (is the "
            "node offering it still up, and timing other trials' models?)"
        ) from exc
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None) or exc
        raise DispatchError(
            f"measure.target {target!r}: timing on the target failed: {first_line(cause)}"
        ) from exc
    figures["latency_target"] = target
    return figures


def _time_here(
    timing: Timing, payload: bytes, kind: str, example: torch.Tensor, paths: list[str]
) -> dict[str, Any]:
    """The Ray task on the target: load the model as it shipped and time it."""
    for path in paths:
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)
    model: Any = payload  # an ONNX file's bytes
    if kind == "torch":
        from ._compression import import_torchao
        from ._measure import to_eval

        import_torchao()  # an int8 graph calls torchao's quantize ops
        kept = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
        model = to_eval(kept.shipped_torch())
    figures = timing(model, example)
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    figures["latency_node"] = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    figures["latency_node_id"] = node_id
    return figures


def _import_roots(model: nn.Module) -> list[str]:
    """Folders from which the node imports the classes ``model`` is made of: for each
    module's top package, the folder that holds it (a user workload's, typically)."""
    roots: list[str] = []
    for part in model.modules():
        name = type(part).__module__
        top = name.split(".", 1)[0]
        if top in ("torch", "torchao", "tuner", "builtins") or top in sys.builtin_module_names:
            continue
        try:
            source = inspect.getsourcefile(importlib.import_module(top))
        except (ImportError, TypeError):
            continue
        if not source:
            continue
        folder = Path(source).parent
        if Path(source).name == "__init__.py":  # a package: its parent holds it
            folder = folder.parent
        if str(folder) not in roots:
            roots.append(str(folder))
    return roots

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
from typing import TYPE_CHECKING, Any

from ._exceptions import DispatchError, first_line

if TYPE_CHECKING:  # torch is loaded where a model is timed, not where a spec is checked
    import torch
    from torch import nn

    from ._artifacts import TrialModel

# Ray reserves these resource names for itself.
RESERVED = ("CPU", "GPU", "memory", "object_store_memory")
# How long a trial waits for the target to time its model: models queue there one at a
# time behind every other worker's, and a compiled int8 model takes a minute to compile.
WAIT_S = 3600.0
# How often a waiting trial checks that a node still offers the target.
CHECK_S = 10.0

Timing = Callable[[Any, "torch.Tensor"], dict[str, Any]]


def check_target(name: Any) -> str | None:
    """Why ``name`` cannot be a Ray custom resource naming the target, or None."""
    if not isinstance(name, str) or not name.strip():
        return "the name of a Ray custom resource (a non-empty string)"
    if name in RESERVED or name.startswith(("node:", "accelerator_type:")):
        return f"a custom resource of your own; {name!r} is one Ray keeps for itself"
    if any(c.isspace() or c in "{}\"'," for c in name):
        return "a Ray resource name without spaces, quotes, braces or commas"
    return None


def serving(ray: Any, target: str) -> int:
    """Live nodes of the cluster that offer a whole unit of ``target`` (what a timing holds)."""
    return sum(
        1
        for node in ray.nodes()
        if node.get("Alive") and float(node.get("Resources", {}).get(target, 0.0)) >= 1.0
    )


def missing_target(ray: Any, target: str) -> str:
    """The line that says no node of the connected cluster offers ``target``."""
    try:
        head = str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - the hint only
        head = "HEAD:6379"
    return (
        f"measure.target: no live node of the Ray cluster at {head} offers a unit of the "
        f"resource {target!r}; on a machine like the one the model ships to, run: ray start "
        f"--address {head} --resources '{{\"{target}\": 1}}' --num-cpus 0"
    )


def connected_target(target: str) -> Any:
    """Ray, connected to a cluster where a live node offers a unit of ``target``.

    Raises:
        DispatchError: not inside a Ray worker, or no live node offers ``target``.
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
    if not serving(ray, target):
        raise DispatchError(missing_target(ray, target))
    return ray


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

    ray = connected_target(target)
    if isinstance(model, bytes):
        payload, kind, paths = model, "onnx", []
    else:
        payload, roots = pack(model)
        kind, paths = "torch", roots
    figures: dict[str, Any] = run_on_target(
        ray,
        target,
        _time_here,
        timing,
        payload,
        kind,
        example.detach().cpu(),
        paths,
        what="the model",
    )
    figures["latency_target"] = target
    return figures


def run_on_target(
    ray: Any,
    target: str,
    fn: Callable[..., Any],
    *args: Any,
    what: str,
    wait_s: float = WAIT_S,
    say: Callable[[str], None] | None = None,
) -> Any:
    """``fn(*args)`` run as a Ray task on a node offering ``target`` (holding one unit of
    it), while that node stays; ``what`` names what it times, for the errors. With
    ``say``, ``fn`` is called with ``say=`` too, and each line it says there is said here
    as it comes, not when the task ends.

    Raises:
        DispatchError: the task failed there, the target went away, or it did not end
            within ``wait_s``.
    """
    import time

    options = {
        "num_cpus": 0,
        "resources": {target: 1},
        "max_retries": 0,
        "name": f"tuner-time-on-{target}",
    }
    if say is None:
        pending: Any = ray.remote(fn).options(**options).remote(*args)
    else:
        pending = ray.remote(_streamed).options(**options).remote(fn, *args)
    started = time.monotonic()
    result: Any = None
    while True:
        # Queued behind other trials' timings, or on a node that went away: a task Ray
        # cannot place stays pending, so the target is looked for again while it waits.
        if not ray.wait([pending], timeout=CHECK_S)[0]:
            gone = not serving(ray, target)
            if gone or time.monotonic() - started >= wait_s:
                ray.cancel(pending, force=True)
                raise DispatchError(
                    f"measure.target {target!r}: "
                    + (
                        f"no live node offers it any more; {what}: not timed"
                        if gone
                        else f"{what}: not timed within {wait_s:g} s (timings queue behind "
                        "the other trials' models; offer more units, or more target nodes)"
                    )
                )
            continue
        try:
            if say is None:
                return ray.get(pending)
            try:
                kind, value = ray.get(next(pending))
            except StopIteration:
                return result
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise DispatchError(
                f"measure.target {target!r}: timing on the target failed: {first_line(cause)}"
            ) from exc
        if kind == "line":
            say(value)
        else:
            result = value


def _streamed(fn: Callable[..., Any], *args: Any) -> Any:
    """The Ray generator task behind ``run_on_target(say=...)``: ``fn`` runs in a thread,
    and each line it says is yielded as ``("line", text)`` at once, its result last as
    ``("result", value)``."""
    import queue
    import threading

    lines: queue.Queue[str | None] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = fn(*args, say=lines.put)
        except BaseException as exc:  # noqa: BLE001 - raised again in the task, below
            outcome["error"] = exc
        finally:
            lines.put(None)

    threading.Thread(target=work, name="tuner-on-target", daemon=True).start()
    while (line := lines.get()) is not None:
        yield ("line", line)
    if "error" in outcome:
        raise outcome["error"]
    yield ("result", outcome["value"])


def pack(model: TrialModel) -> tuple[bytes, list[str]]:
    """What a trial keeps of a PyTorch model, as bytes to send to a node, and the folders
    the node imports its classes from (see :func:`unpack`)."""
    import torch

    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue(), import_roots(model.model)


def unpack(payload: bytes, paths: list[str]) -> TrialModel:
    """The model :func:`pack` sent, read on this node (``paths`` already on its path)."""
    import torch

    from ._compression import import_torchao

    import_torchao()  # an int8 model is rebuilt with torchao's quantize ops
    try:
        model: TrialModel = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        absent = [p for p in paths if not os.path.isdir(p)]
        if not absent:
            raise
        raise ModuleNotFoundError(
            f"{exc}; the model's classes were imported from {', '.join(absent)}, which "
            "this node lacks: give it the same folder (a shared disk), or move that code "
            "into the folder shipped to the cluster (where tuner run --address runs, or "
            "tuner submit's --working-dir)"
        ) from exc
    return model


def on_path(paths: list[str]) -> None:
    """Put the folders a model's classes were imported from on this process's path."""
    for path in paths:
        if os.path.isdir(path) and path not in sys.path:
            sys.path.insert(0, path)


def _time_here(
    timing: Timing, payload: bytes, kind: str, example: torch.Tensor, paths: list[str]
) -> dict[str, Any]:
    """The Ray task on the target: load the model as it shipped and time it."""
    model: Any = payload  # an ONNX file's bytes
    if kind == "torch":
        from ._measure import to_eval

        on_path(paths)
        model = to_eval(unpack(payload, paths).shipped_torch())
    figures = timing(model, example)
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    figures["latency_node"] = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    figures["latency_node_id"] = node_id
    return figures


def import_roots(model: nn.Module) -> list[str]:
    """Folders from which the node imports the classes ``model`` is made of: for each
    module's top package, the folder that holds it (a user workload's, typically), where
    that is not an installed package's (the node has its own environment)."""
    import site
    import sysconfig

    installed = {
        str(Path(p).resolve())
        for p in (*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_path("stdlib"))
    }
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
        folder = Path(source).resolve().parent
        if Path(source).name == "__init__.py":  # a package: its parent holds it
            folder = folder.parent
        if str(folder) in installed:
            continue
        if str(folder) not in roots:
            roots.append(str(folder))
    return roots

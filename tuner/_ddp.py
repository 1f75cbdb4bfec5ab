"""Data-parallel training inside one trial: ``resources: {workers_per_trial: N}``.

The trial's worker (the process that runs the objective) starts N ranks that train the
workload together with PyTorch DistributedDataParallel: gloo on CPUs, NCCL on GPUs.
The ranks are started by an existing engine, never by a launcher of ours:

- locally, torch's own multiprocessing launcher (``torch.multiprocessing.start_processes``);
- on the Ray backend, Ray Train's ``TorchTrainer``, whose placement group schedules the
  trial's N workers together (``tuner._ray_train``).

Rank 0 is the trial's voice. After each epoch its ``ctx.report`` goes to the trial's
worker, which records the curve and asks early stopping, exactly as for a one-process
trial (with the model rank 0 watches, so early stopping can judge it as it would ship);
the answer is broadcast to every rank, so a stop ends all of them at the same epoch.
When training ends, rank 0 sends its trained model back; compression and measurement
then happen once, in the trial's worker. A rank that dies, or raises, fails the trial;
a dead rank's trial is queued again with the same parameters (``tuner.RankDied``).
"""

from __future__ import annotations

import io
import os
import queue
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._cv import Folds
from ._exceptions import RankDied, WorkloadError
from ._workloads import TrainedModel, TrialContext, TrialStopped

POLL_S = 0.2
JOIN_S = 30.0
DEAD_RANK_WAIT_S = 3.0


@dataclass(frozen=True)
class RankJob:
    """What every rank needs to train its share of one trial (plain, picklable data)."""

    workload: str  # the spec's workload, found again in each rank (not pickled)
    params: dict[str, Any]
    world_size: int
    use_cuda: bool
    max_epochs: int
    seed: int
    trial_number: int
    folds: Folds | None = None
    master_port: int = 0


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _loads(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- inside a rank --------------------------------------------------------------------


def run_rank(job: RankJob, rank: int, up: Any, down: Any) -> None:
    """Train rank ``rank``'s share of the trial; rank 0 talks to the trial's worker.

    ``up`` carries messages to the worker, ``down`` its answers to rank 0 (queues with
    ``put`` and ``get``). The process group is the engine's (Ray Train) or made here.
    """
    import torch.distributed as dist

    own_group = not dist.is_initialized()
    if own_group:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(job.master_port)
        dist.init_process_group(
            "nccl" if job.use_cuda else "gloo", rank=rank, world_size=job.world_size
        )
    rank = dist.get_rank()
    if job.use_cuda:
        local = int(os.environ.get("LOCAL_RANK", rank)) % max(1, torch.cuda.device_count())
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    torch.set_num_threads(1)
    ctx = TrialContext(
        device=device,
        max_epochs=job.max_epochs,
        seed=job.seed,
        trial_number=job.trial_number,
        folds=job.folds,
        rank=rank,
        world_size=job.world_size,
    )
    if rank == 0:
        ctx.on_report = _asker(ctx, up, down)
    try:
        from ._builtin_workloads import resolve_workload

        trained = resolve_workload(job.workload).fn(job.params, ctx)
        if rank == 0:
            if not isinstance(trained, TrainedModel):
                raise WorkloadError(
                    f"the workload returned {type(trained).__name__}; expected tuner.TrainedModel"
                )
            trained.model = unwrap(trained.model).to("cpu")
            up.put(("done", _dumps(trained), ctx.split_taken))
    except TrialStopped as stop:
        if rank == 0:
            up.put(("stopped", str(stop)))
    except BaseException as exc:
        up.put(("error", rank, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"))
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _asker(ctx: TrialContext, up: Any, down: Any) -> Callable[[int, dict[str, float]], bool]:
    """Rank 0's ``on_report``: send the epoch (and the watched model) to the trial's
    worker and wait for its answer. A stop is raised after the ranks agree on it."""
    sent_watch = [False]

    def ask(epoch: int, metrics: dict[str, float]) -> bool:
        watch = None
        if ctx.watched_model is not None and ctx.watched_inputs is not None:
            model = unwrap(ctx.watched_model)
            state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
            if not sent_watch[0]:
                first = (
                    _cpu_copy(model),
                    ctx.watched_inputs.detach().to("cpu"),
                    ctx.watched_val,
                    ctx.watched_train,
                )
                watch = ("model", _dumps(first))
                sent_watch[0] = True
            else:
                watch = ("state", _dumps(state))
        up.put(("report", epoch, metrics, watch))
        answer = down.get()
        if answer[0] == "stop":
            ctx.stop_reason = str(answer[1])
            return True
        return False

    return ask


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu")


# --- in the trial's worker --------------------------------------------------------------


class Conversation:
    """The trial worker's side: answers rank 0's reports, collects the trained model."""

    def __init__(self, ctx: TrialContext, down: Any) -> None:
        self.ctx = ctx
        self.down = down
        self.result: TrainedModel | None = None
        self.stopped: str | None = None
        self.error: str | None = None

    def handle(self, message: tuple[Any, ...]) -> bool:
        """Handle one message from a rank; True once the ranks are done."""
        kind = message[0]
        if kind == "report":
            _kind, epoch, metrics, watch = message
            if watch is not None:
                self._watch(*watch)
            try:
                self.ctx.report(epoch, **metrics)
            except TrialStopped as stop:
                self.stopped = str(stop)
                self.down.put(("stop", str(stop)))
            except BaseException as exc:
                # The store or the rule failed: stop the ranks, then raise it here.
                self.error = f"{type(exc).__name__}: {exc}"
                self.down.put(("stop", self.error))
                raise
            else:
                self.down.put(("go",))
            return False
        if kind == "done":
            self.result = _loads(message[1])
            self.ctx.split_taken = bool(message[2])
            return True
        if kind == "stopped":
            self.stopped = self.stopped or str(message[1])
            return True
        if kind == "error":
            _kind, rank, text = message
            self.error = f"rank {rank}: {text}"
            return True
        raise WorkloadError(f"unexpected message from a rank: {kind!r}")

    def _watch(self, kind: str, data: bytes) -> None:
        if kind == "model":
            model, inputs, val, train = _loads(data)
            self.ctx.watch(model, inputs, val_data=val, train_data=train)
        elif self.ctx.watched_model is not None:
            self.ctx.watched_model.load_state_dict(_loads(data))

    def outcome(self) -> TrainedModel:
        if self.error is not None:
            raise WorkloadError(self.error)
        if self.stopped is not None:
            raise TrialStopped(self.stopped)
        if self.result is None:
            raise WorkloadError("the ranks ended without a trained model")
        return self.result


def train_local(job: RankJob, ctx: TrialContext) -> TrainedModel:
    """Train ``job`` with torch's multiprocessing launcher on this machine."""
    import torch.multiprocessing as mp

    spawn = mp.get_context("spawn")
    up, down = spawn.Queue(), spawn.Queue()
    job = RankJob(**{**job.__dict__, "master_port": free_port()})
    procs = mp.start_processes(
        _local_rank, args=(job, up, down), nprocs=job.world_size, join=False, start_method="spawn"
    )
    talk = Conversation(ctx, down)
    try:
        done = False
        while not done:
            try:
                message = up.get(timeout=POLL_S)
            except queue.Empty:
                _check_alive(procs.processes)
                continue
            done = talk.handle(message)
        # A rank's error may be the others noticing a dead rank (a broken connection):
        # the dead rank is the cause, so it is what the trial says.
        for p in procs.processes:
            p.join(JOIN_S if talk.error is None else DEAD_RANK_WAIT_S)
        # Once rank 0 has handed over the trained model or the agreed stop, every rank has
        # trained to the end (each step waits on all of them): a rank that then dies while
        # tearing down (gloo can abort at exit) changes nothing, so only earlier deaths count.
        if talk.error is not None or (talk.result is None and talk.stopped is None):
            _check_alive(procs.processes, finished=talk.error is None)
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
        for p in procs.processes:
            p.join(5)
    return talk.outcome()


def _local_rank(rank: int, job: RankJob, up: Any, down: Any) -> None:
    run_rank(job, rank, up, down)


def _check_alive(processes: list[Any], *, finished: bool = False) -> None:
    for rank, p in enumerate(processes):
        code = p.exitcode
        if code is None:
            if finished:
                raise RankDied(f"rank {rank} did not end {JOIN_S:.0f} s after training")
            continue
        if code != 0:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            raise RankDied(f"rank {rank} of {len(processes)} died ({how}); the trial is retried")

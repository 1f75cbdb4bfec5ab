"""Data-parallel trials on the Ray backend: Ray Train's ``TorchTrainer`` runs the ranks.

The trial's worker (a Ray actor) starts a ``TorchTrainer`` with ``workers_per_trial``
workers, each asking for the trial's ``cpus`` and ``gpus``; Ray Train's placement group
(``PACK``) schedules the N workers together or not at all, and sets up the process group
(gloo on CPUs, NCCL on GPUs). Each worker runs :func:`tuner._ddp.run_rank`; rank 0 talks
to the trial's worker through two Ray queues, as the local launcher's ranks do through
multiprocessing queues. Ray Train's own retries are off (``max_failures=0``): a dead
rank fails the trial, and tuner queues it again (``tuner.RankDied``).
"""

from __future__ import annotations

import os
import queue
import re
import sys
import tempfile
import threading
import uuid
from typing import Any

from ._ddp import POLL_S, Conversation, RankJob, run_rank
from ._exceptions import RankDied
from ._workloads import TrainedModel, TrialContext


def _train_loop(config: dict[str, Any]) -> None:
    """Body of each Ray Train worker."""
    import ray.train

    for path in reversed(config["sys_path"]):
        if path not in sys.path:
            sys.path.insert(0, path)
    rank = ray.train.get_context().get_world_rank()
    run_rank(config["job"], rank, config["up"], config["down"])


def train_on_ray(job: RankJob, ctx: TrialContext, resources: Any) -> TrainedModel:
    """Train ``job`` on ``job.world_size`` Ray Train workers; rank 0 reports to ``ctx``."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    up: Any = Queue(actor_options={"num_cpus": 0})
    down: Any = Queue(actor_options={"num_cpus": 0})
    per_worker: dict[str, float] = {"CPU": float(resources.cpus)}
    if job.use_cuda:
        per_worker["GPU"] = float(resources.gpus or 1)
    with tempfile.TemporaryDirectory(prefix="tuner-train-") as storage_path:
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={
                "job": job,
                "up": up,
                "down": down,
                "sys_path": [p for p in sys.path if p and os.path.isdir(p)],
            },
            torch_config=TorchConfig(backend="nccl" if job.use_cuda else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=job.world_size,
                use_gpu=job.use_cuda,
                resources_per_worker=per_worker,
                placement_strategy="PACK",
            ),
            run_config=RunConfig(
                name=f"tuner-trial-{job.trial_number}-{uuid.uuid4().hex[:8]}",
                storage_path=storage_path,
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        failure: list[BaseException] = []

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as exc:  # handed to the trial's thread
                failure.append(exc)

        runner = threading.Thread(target=fit, name="tuner-ray-train", daemon=True)
        runner.start()
        talk = Conversation(ctx, down)
        done = False
        try:
            while not done:
                try:
                    message = up.get(timeout=POLL_S)
                except (Empty, queue.Empty):
                    if not runner.is_alive():
                        break
                    continue
                done = talk.handle(message)
            runner.join()
        finally:
            for q in (up, down):
                q.shutdown(force=True)
    if failure:
        # Ranks catch their own errors: a failed run means a worker process died. The
        # others' errors (a broken connection) follow from it.
        raise RankDied(f"{_dead_ranks(failure[0], job.world_size)}; the trial is retried")
    return talk.outcome()


def _dead_ranks(exc: BaseException, world_size: int) -> str:
    """Which ranks Ray Train says failed, and its first line about it."""
    text = str(exc)
    ranks = sorted({int(n) for n in re.findall(r"Rank (\d+)", text)})
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    who = ", ".join(str(r) for r in ranks) if ranks else "a rank"
    return f"rank {who} of {world_size} died (Ray Train: {first})"

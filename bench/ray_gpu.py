"""The Ray backend on a GPU machine: whole GPUs against four trials per GPU.

Runs the same study twice on a local Ray, once with ``resources.gpus: 1`` (one trial per
GPU) and once with ``gpus: 0.25`` (four trials share a GPU), and prints side by side:
trials per hour, GPU utilization sampled while the sweep runs (pynvml, else nvidia-smi),
and the latency the trials measured on their GPU (median over trials, batch 1 and batch
``measure.batch_size``). The search space keeps ``quantize: none``, so both runs time the
same float models on the GPU (``bench/compression.py --device cuda`` compares int8 there).

Run on a machine with NVIDIA GPUs:
    .venv/bin/python bench/ray_gpu.py [--spec search_spaces/mnist1d_cnn.yaml] [--trials 24]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import tuner  # noqa: E402
from tuner._spec import load_spec  # noqa: E402
from tuner.storage import open_storage, read_records  # noqa: E402


class GpuSampler:
    """Samples the utilization of every GPU twice a second in a background thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._read = self._pick_reader()

    def _pick_reader(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
            return lambda: [float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in handles]
        except Exception:
            pass
        if shutil.which("nvidia-smi"):

            def smi() -> list[float]:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                return [float(v) for v in out.split()]

            return smi
        return None

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            values = self._read()
            if values:
                self.samples.append(sum(values) / len(values))

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def sweep(spec_path: str, gpus: float, trials: int, url: str) -> dict[str, Any]:
    n_gpus = gpu_count()
    workers = max(1, int(n_gpus / gpus))
    spec = load_spec(spec_path).to_dict()
    spec["name"] = f"gpu-{gpus:g}"
    spec["resources"] = {"cpus": 1, "gpus": gpus}
    spec["search_space"]["quantize"] = "none"
    spec["budget"] = {**spec["budget"], "n_trials": trials, "timeout_s": None}
    started = time.time()
    with GpuSampler() as sampler:
        tuner.run(spec, storage=url, backend="ray", workers=workers)
    wall = time.time() - started
    records = [
        r
        for r in read_records(open_storage(url, heartbeat=False), spec["name"])
        if r.state in ("COMPLETE", "PRUNED")
    ]
    complete = [r for r in records if r.state == "COMPLETE"]
    devices = sorted({str(r.metrics.get("latency_device", "?")) for r in complete})

    def median(key: str) -> float:
        values = [float(r.metrics[key]) for r in complete if key in r.metrics]
        return statistics.median(values) if values else float("nan")

    return {
        "gpus": gpus,
        "workers": workers,
        "trials": len(records),
        "per_hour": len(records) / wall * 3600,
        "util": sampler.mean(),
        "lat1": median("latency_ms"),
        "latb": median("latency_ms_batch"),
        "devices": ",".join(devices),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="search_spaces/mnist1d_cnn.yaml")
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    if gpu_count() == 0:
        raise SystemExit("no CUDA GPU visible to PyTorch: run this on a GPU machine")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gpus in (1.0, 0.25):
            rows.append(sweep(args.spec, gpus, args.trials, f"sqlite:///{tmp}/gpu{gpus:g}.db"))
    print(f"\nRay backend on {gpu_count()} GPU(s), {args.spec}, {args.trials} trials each")
    print(
        f"{'gpus/trial':>10} {'workers':>7} {'trials':>6} {'trials/h':>9} {'vs gpus 1':>9} "
        f"{'GPU util':>8} {'lat b1 ms':>9} {'lat batch ms':>12}  measured on"
    )
    base = rows[0]["per_hour"]
    for r in rows:
        util = f"{r['util']:.0f}%" if r["util"] is not None else "n/a"
        print(
            f"{r['gpus']:>10g} {r['workers']:>7} {r['trials']:>6} {r['per_hour']:>9.0f} "
            f"{r['per_hour'] / base:>8.2f}x {util:>8} {r['lat1']:>9.3f} {r['latb']:>12.3f}  "
            f"{r['devices']}"
        )


if __name__ == "__main__":
    main()

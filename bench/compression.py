"""What compression buys on four architectures, in both runtimes, measured side by side.

Trains an MLP, a CNN, a residual CNN and a Transformer encoder on MNIST-1D (a few epochs,
one seed), then ships each one four ways through tuner's shipping path (the one trials use):
dense, 50% structured sparsity, int8, and 50% structured + int8. Structured copies get one
epoch of fine-tuning. Each shipped model is measured in the torch runtime and in ONNX
Runtime: latency p50 at batch 1 and at batch 32 (one thread), size in bytes, and test
accuracy. Ratios are against the dense model in the same runtime, measured in the same run.

    python bench/compression.py [--epochs 6] [--repeats 50] [--threads 1]

Targets: at batch 32, 50% structured at least 1.6x faster on the residual CNN and on the
Transformer; int8 in ONNX Runtime at least 1.5x faster on the Transformer.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tuner._builtin_workloads import PatchTransformer
from tuner._datasets import mnist1d
from tuner._shipping import Settings, measure, ship
from tuner._spec import MeasureSpec
from tuner._workloads import evaluate_accuracy, fit

SETTINGS = {
    "dense": Settings(0.0, "unstructured", "none", 0),
    "structured 50%": Settings(0.5, "structured", "none", 1),
    "int8": Settings(0.0, "unstructured", "int8", 0),
    "structured 50% + int8": Settings(0.5, "structured", "int8", 1),
}
RUNTIMES = ("torch", "onnxruntime")


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class _ResidualCNN(nn.Module):
    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2, bias=False), nn.BatchNorm1d(channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(_Block(channels), _Block(channels))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, 64, 5, padding=2), nn.ReLU(), nn.Conv1d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * 20, 10),
    )  # fmt: skip


MODELS: dict[str, tuple[Callable[[], nn.Module], dict[str, Any]]] = {
    "mlp": (_mlp, {"optimizer": "adamw", "lr": 2e-3, "batch_size": 64}),
    "cnn": (_cnn, {"optimizer": "adamw", "lr": 2e-3, "batch_size": 64}),
    "residual cnn": (_ResidualCNN, {"optimizer": "adamw", "lr": 2e-3, "batch_size": 64}),
    "transformer": (
        lambda: PatchTransformer(length=40, classes=10, width=128, heads=4, dropout=0.0),
        {"optimizer": "adamw", "lr": 1e-3, "batch_size": 64},
    ),
}


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist1d()
    device = torch.device("cpu")
    headers = ["model", "runtime", "compression", "b1 ms", "b32 ms", "b32 speed-up",
               "size B", "smaller", "test acc", "compile s"]  # fmt: skip
    widths = [12, 11, 21, 7, 7, 12, 8, 7, 8, 9]
    lines = [_row(headers, widths)]
    verdicts: list[str] = []
    dense: dict[tuple[str, str], dict[str, Any]] = {}
    for model_name, (build, params) in MODELS.items():
        torch.manual_seed(0)
        model = build()
        started = time.perf_counter()
        fit(model, data.train, params, epochs=args.epochs, device=device, seed=0)
        print(
            f"{model_name}: trained {args.epochs} epochs in {time.perf_counter() - started:.0f} s, "
            f"test accuracy {evaluate_accuracy(model, data.test, device):.3f}",
            flush=True,
        )
        for name, settings in SETTINGS.items():

            def finetune(
                m: nn.Module, settings: Settings = settings, params: dict[str, Any] = params
            ) -> None:
                fit(m, data.train, params, epochs=settings.finetune_epochs, device=device, seed=1)

            shipped = ship(
                model,
                settings,
                calibration=data.train[0][:512],
                device=device,
                finetune=finetune if settings.finetune_epochs else None,
            )
            for runtime in RUNTIMES:
                figures = measure(
                    shipped,
                    settings=MeasureSpec(
                        batch_size=32, warmup=10, repeats=args.repeats, runtime=runtime
                    ),
                    threads=args.threads,
                    example=data.test[0][:1],
                    test_data=data.test,
                )
                key = (model_name, runtime)
                if name == "dense":
                    dense[key] = figures
                base = dense[key]
                speed_up = base["latency_ms_batch"] / figures["latency_ms_batch"]
                smaller = base["size_bytes"] / figures["size_bytes"]
                lines.append(
                    _row(
                        [
                            model_name,
                            runtime,
                            name,
                            f"{figures['latency_ms']:.3f}",
                            f"{figures['latency_ms_batch']:.3f}",
                            f"{speed_up:.2f}x",
                            f"{figures['size_bytes']:,}",
                            f"{smaller:.2f}x",
                            f"{figures['test_accuracy']:.3f}",
                            f"{figures.get('compile_time_s', 0.0):.1f}",
                        ],
                        widths,
                    )
                )
                target = None
                if name == "structured 50%" and model_name in ("residual cnn", "transformer"):
                    target = 1.6
                if name == "int8" and model_name == "transformer" and runtime == "onnxruntime":
                    target = 1.5
                if target is not None:
                    met = "met" if speed_up >= target else "MISSED"
                    verdicts.append(
                        f"{model_name} / {runtime} / {name}: {speed_up:.2f}x at batch 32 "
                        f"(target {target}x): {met}"
                    )
            print(f"  {name}: measured", flush=True)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()

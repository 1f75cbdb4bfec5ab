"""What compression buys on five architectures, in both runtimes, measured side by side.

Trains an MLP, a CNN, a residual CNN and a Transformer encoder on MNIST-1D, and the residual
CNN in 2-D on scikit-learn's digits as 8x8 images (a few epochs, one seed), then ships each
one four ways through tuner's shipping path (the one trials use): dense, 50% structured
sparsity, int8, and 50% structured + int8. Structured copies get one epoch of fine-tuning. Each shipped model is measured in the torch runtime and in ONNX
Runtime: latency p50 at batch 1 and at batch 32 (one thread), size in bytes, and test
accuracy. Ratios are against the dense model in the same runtime, measured in the same run:
the four variants of a model take turns, round after round, and each latency is the median
over rounds of the median per round (this machine is noisy). Compiled models are compiled
as trials compile them (tuner._measure.compile_for_inference: on the CPU with and without
inductor's freezing, the faster kept, per batch size, batch 32 first and freezing tried at
batch 1 only where it was kept at 32; "frozen b1/b32" says which). Compile
time (torch.compile of the PT2E int8 graphs, both batch sizes) is apart from latency.

    python bench/compression.py [--epochs 6] [--repeats 30] [--rounds 7] [--threads 1]
                                [--device cuda] [--models "residual cnn,transformer"]

With ``--device cuda`` the models train, ship and run on the GPU, as a GPU trial's do:
int8 is torchao's CUDA int8 (dynamic activations, int8 weights), on a GPU of compute
capability 8.9 or more float8 too (torchao's dynamic float8, compiled as trials compile it),
and only the torch runtime is measured (ONNX Runtime's CPU package would time the CPU).
Each timed pass waits for the GPU to finish.

Targets: at batch 32, 50% structured at least 1.6x faster on the residual CNN and on the
Transformer; int8 in ONNX Runtime at least 1.5x faster on the Transformer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from tuner._builtin_workloads import PatchTransformer
from tuner._compression import FLOAT8_CAPABILITY
from tuner._datasets import Splits, digits, mnist1d
from tuner._formats import OnnxRunner, onnx_bytes
from tuner._measure import _synchronize, compile_for_inference, try_freezing
from tuner._shipping import Settings, Shipped, compiles, measure, ship, trial_model
from tuner._spec import MeasureSpec
from tuner._workloads import evaluate_accuracy, fit

SETTINGS = {
    "dense": Settings(0.0, "unstructured", "none", 0),
    "structured 50%": Settings(0.5, "structured", "none", 1),
    "int8": Settings(0.0, "unstructured", "int8", 0),
    "structured 50% + int8": Settings(0.5, "structured", "int8", 1),
}
# On a GPU of compute capability 8.9 or more (L4, H100), float8 too.
FLOAT8_SETTINGS = {
    "float8": Settings(0.0, "unstructured", "float8", 0),
    "structured 50% + float8": Settings(0.5, "structured", "float8", 1),
}
RUNTIMES = ("torch", "onnxruntime")


class _Block(nn.Module):
    def __init__(self, channels: int, dims: int = 1) -> None:
        super().__init__()
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1 = conv(channels, channels, 3, padding=1, bias=False)
        self.bn1 = norm(channels)
        self.conv2 = conv(channels, channels, 3, padding=1, bias=False)
        self.bn2 = norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class _ResidualCNN(nn.Module):
    """A residual CNN over signals, or with ``dims=2`` over images (a 3x3 stem, not 5)."""

    def __init__(self, channels: int = 64, dims: int = 1) -> None:
        super().__init__()
        if dims == 1:
            stem: nn.Module = nn.Conv1d(1, channels, 5, padding=2, bias=False)
            norm: nn.Module = nn.BatchNorm1d(channels)
            pool: nn.Module = nn.AdaptiveAvgPool1d(1)
        else:
            stem, norm = nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
            pool = nn.AdaptiveAvgPool2d(1)
        self.stem = nn.Sequential(stem, norm, nn.ReLU())
        self.blocks = nn.Sequential(_Block(channels, dims), _Block(channels, dims))
        self.pool = pool
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def _digit_images() -> Splits:
    """scikit-learn's digits as 1x8x8 images."""
    data = digits()
    train, val, test = ((x.reshape(-1, 1, 8, 8), y) for x, y in (data.train, data.val, data.test))
    return Splits(train, val, test, data.n_classes)


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
    "image resnet": (
        lambda: _ResidualCNN(dims=2),
        {"optimizer": "adamw", "lr": 2e-3, "batch_size": 64},
    ),
    "transformer": (
        lambda: PatchTransformer(length=40, classes=10, width=128, heads=4, dropout=0.0),
        {"optimizer": "adamw", "lr": 1e-3, "batch_size": 64},
    ),
}
# MNIST-1D for all but the image model.
DATA: dict[str, Callable[[], Splits]] = {"image resnet": _digit_images}


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )


class _Timed:
    """One shipped model in one runtime, ready to run a batch."""

    def __init__(
        self,
        shipped: Shipped,
        runtime: str,
        threads: int,
        example: torch.Tensor,
        compile: str = "auto",
    ) -> None:
        self.threads = threads
        self.device = shipped.device if runtime == "torch" else torch.device("cpu")
        if runtime == "onnxruntime":
            runner = OnnxRunner(onnx_bytes(trial_model_of(shipped, example)), threads=threads)
            self._run: Callable[[torch.Tensor], Any] = runner
        else:
            self._run = shipped.model
        self._compile = runtime == "torch" and compiles(shipped, compile)
        self._compiled: dict[tuple[int, ...], Callable[[torch.Tensor], Any]] = {}
        self.frozen: dict[int, bool] = {}

    def _runner(self, batch: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        """The model, compiled for ``batch``'s shape as a trial compiles it, when it is."""
        if not self._compile:
            return self._run
        shape = tuple(batch.shape)
        if shape not in self._compiled:
            # As trials do: batch 32 first, and batch 1 tries freezing as try_freezing says.
            kept = any(self.frozen.values()) if self.frozen else None
            freezing = try_freezing(shape[0], kept)
            compiled = compile_for_inference(cast(nn.Module, self._run), batch, freezing=freezing)
            self._compiled[shape] = compiled.run
            self.frozen[shape[0]] = compiled.frozen
        return self._compiled[shape]

    def time_batch(self, batch: torch.Tensor, repeats: int) -> float:
        """Median milliseconds of one pass over ``batch`` (after two untimed passes)."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        batch = batch.to(self.device)
        try:
            with torch.inference_mode():
                run = self._runner(batch)
                for _ in range(2):
                    run(batch)
                timings = []
                for _ in range(repeats):
                    _synchronize(self.device)
                    started = time.perf_counter()
                    run(batch)
                    _synchronize(self.device)
                    timings.append((time.perf_counter() - started) * 1000.0)
        finally:
            torch.set_num_threads(previous)
        return statistics.median(timings)


def trial_model_of(shipped: Shipped, example: torch.Tensor) -> Any:
    return trial_model(
        shipped,
        test_data=(example, torch.zeros(1, dtype=torch.long)),
        measure=MeasureSpec(runtime="onnxruntime"),
        threads=1,
    )


def _interleaved(
    timed: dict[str, _Timed], batch: torch.Tensor, rounds: int, repeats: int
) -> dict[str, float]:
    """Median over rounds of each model's median latency; models take turns in each round."""
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds):
        for name, runner in timed.items():
            samples[name].append(runner.time_batch(batch, repeats))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=30, help="timed passes per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of interleaved timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU path")
    args = parser.parse_args()
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"--models: got {unknown[0]!r}; expected some of {', '.join(MODELS)}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: got {args.device!r}; expected cpu or cuda")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: got {args.device!r}; expected cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device: got 'cuda', but PyTorch sees no CUDA device here")
        device = torch.device("cuda", device.index or 0)
    runtimes = ("torch",) if device.type == "cuda" else RUNTIMES
    torch.set_num_threads(args.threads)
    float8_settings: dict[str, Settings] = {}
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
        if torch.cuda.get_device_capability(device) >= FLOAT8_CAPABILITY:
            float8_settings = FLOAT8_SETTINGS
    headers = ["model", "runtime", "compression", "b1 ms", "b32 ms", "b32 speed-up",
               "size B", "smaller", "test acc", "compile s", "frozen b1/b32"]  # fmt: skip
    widths = [12, 11, 31, 7, 7, 12, 10, 7, 8, 9, 13]
    lines = [_row(headers, widths)]
    verdicts: list[str] = []
    for model_name in args.models.split(","):
        build, params = MODELS[model_name]
        data = DATA.get(model_name, mnist1d)()
        example = data.test[0][:1]
        torch.manual_seed(0)
        model = build()
        started = time.perf_counter()
        fit(model, data.train, params, epochs=args.epochs, device=device, seed=0)
        print(
            f"{model_name}: trained {args.epochs} epochs in {time.perf_counter() - started:.0f} s, "
            f"test accuracy {evaluate_accuracy(model, data.test, device):.3f}",
            flush=True,
        )
        shipped: dict[str, Shipped] = {}
        for name, settings in {**SETTINGS, **float8_settings}.items():

            def finetune(
                m: nn.Module,
                settings: Settings = settings,
                params: dict[str, Any] = params,
                train: Any = data.train,
            ) -> None:
                fit(m, train, params, epochs=settings.finetune_epochs, device=device, seed=1)

            shipped[name] = ship(
                model,
                settings,
                calibration=data.train[0][:512],
                device=device,
                finetune=finetune if settings.finetune_epochs else None,
            )
        for runtime in runtimes:
            figures = {
                name: measure(
                    s,
                    settings=MeasureSpec(batch_size=32, runtime=runtime),
                    threads=args.threads,
                    example=example,
                    test_data=data.test,
                    model_metrics=False,
                )
                for name, s in shipped.items()
            }
            timed = {name: _Timed(s, runtime, args.threads, example) for name, s in shipped.items()}
            if device.type == "cuda":
                # Whether torch.compile pays on the GPU: the int8 models once more, compiled
                # (the first pass of each compiles, untimed), and the float8 ones (which
                # trials compile) once more, not.
                for name in [n for n in shipped if "int8" in n]:
                    timed[f"{name}, compiled"] = _Timed(
                        shipped[name], runtime, args.threads, example, compile="always"
                    )
                for name in [n for n in shipped if "float8" in n]:
                    timed[f"{name}, eager"] = _Timed(
                        shipped[name], runtime, args.threads, example, compile="never"
                    )
            # Sizes, and the compile time of the first torch.compile (later calls reuse it).
            sized = {
                name: measure(
                    s,
                    settings=MeasureSpec(batch_size=32, warmup=1, repeats=3, runtime=runtime),
                    threads=args.threads,
                    example=example,
                )
                for name, s in shipped.items()
            }
            size = {name: f["size_bytes"] for name, f in sized.items()}
            b32 = _interleaved(
                timed, example.expand(32, *example.shape[1:]).contiguous(), args.rounds,
                args.repeats,
            )  # fmt: skip
            b1 = _interleaved(timed, example, args.rounds, args.repeats)
            for name in timed:
                base = name.removesuffix(", compiled").removesuffix(", eager")
                speed_up = b32["dense"] / b32[name]
                lines.append(
                    _row(
                        [
                            model_name,
                            runtime,
                            name,
                            f"{b1[name]:.3f}",
                            f"{b32[name]:.3f}",
                            f"{speed_up:.2f}x",
                            f"{size[base]:,}",
                            f"{size['dense'] / size[base]:.2f}x",
                            f"{figures[base]['test_accuracy']:.3f}",
                            f"{sized[base].get('compile_time_s', 0.0):.1f}"
                            if runtime == "torch" and base == name
                            else "",
                            "/".join(
                                "yes" if timed[name].frozen[b] else "no"
                                for b in sorted(timed[name].frozen)
                            ),
                        ],
                        widths,
                    )
                )
                target = None
                cpu = device.type == "cpu"  # the targets are for the CPU
                if (
                    cpu
                    and name == "structured 50%"
                    and model_name in ("residual cnn", "transformer")
                ):
                    target = 1.6
                if (
                    cpu
                    and name == "int8"
                    and model_name == "transformer"
                    and runtime == "onnxruntime"
                ):
                    target = 1.5
                if target is not None:
                    met = "met" if speed_up >= target else "MISSED"
                    verdicts.append(
                        f"{model_name} / {runtime} / {name}: {speed_up:.2f}x at batch 32 "
                        f"(target {target}x): {met}"
                    )
            print(f"  {runtime}: measured", flush=True)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()

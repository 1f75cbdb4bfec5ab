"""Epoch time of one trial trained by 1 and by 2 data-parallel processes (CPU, gloo).

The same trial (every parameter fixed) runs with ``resources.workers_per_trial`` 1 and
2, alternating, on a fresh store each; the table gives the training time per epoch as
rank 0 measures it (``train_time_s / epochs``, validation included), the trial's wall
time (which adds starting the ranks, compression and measuring), and the final
validation accuracy. Run: .venv/bin/python bench/ddp_epoch.py [--spec mnist1d_cnn]
[--epochs 4] [--rounds 2] [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna

import tuner
from tuner.storage import open_storage, read_records

FIXED = {
    "mnist1d_cnn": {
        "optimizer": "adamw",
        "lr": 3e-3,
        "batch_size": 64,
        "weight_decay": 1e-4,
        "channels": 64,
        "prune_threshold": 0.0,
        "prune_structure": "unstructured",
        "finetune_epochs": 1,
        "finetune_lr": 1e-2,
        "distill": "none",
        "quantize": "none",
    },
    "digits_mlp": {"lr": 0.05, "batch_size": 64, "hidden_units": 256, "quantize": "none"},
}


def _trial(spec: Any, ranks: int, folder: Path, epochs: int) -> dict[str, float]:
    url = f"sqlite:///{folder / 'study.db'}"
    run_spec = spec.with_overrides(
        name=f"ddp-{ranks}",
        early_stopping={"name": "none"},
        budget={"n_trials": 1, "max_epochs": epochs},
        resources={"cpus": 1, "workers_per_trial": ranks},
        artifacts={"keep": "none", "path": str(folder / "art"), "tensorboard": False},
    )
    tuner.run(run_spec, storage=url)
    (record,) = read_records(open_storage(url, heartbeat=False), run_spec.name)
    if record.state != "COMPLETE":
        raise SystemExit(f"{ranks} ranks: trial {record.state}: {record.error}")
    return {
        "epoch_s": float(record.metrics["train_time_s"]) / epochs,
        "wall_s": float(record.duration_s or 0.0),
        "val_accuracy": record.curve[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="mnist1d_cnn", choices=sorted(FIXED))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("torch").setLevel(logging.ERROR)
    base = tuner.load_spec(args.spec)
    spec = base.with_overrides(search_space=FIXED[args.spec])
    rows: dict[int, list[dict[str, float]]] = {r: [] for r in args.ranks}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = args.ranks if round_ % 2 == 0 else list(reversed(args.ranks))
            for ranks in order:
                folder = Path(tmp) / f"r{round_}-{ranks}"
                folder.mkdir()
                rows[ranks].append(_trial(spec, ranks, folder, args.epochs))
                print(
                    f"round {round_ + 1}, {ranks} rank(s): "
                    f"{rows[ranks][-1]['epoch_s']:.2f} s/epoch",
                    flush=True,
                )
    base_epoch = statistics.mean(r["epoch_s"] for r in rows[args.ranks[0]])
    print()
    print(f"{args.spec}, {args.epochs} epochs, {args.rounds} rounds, CPU (gloo)")
    print(f"{'ranks':>5}{'s/epoch':>10}{'vs first':>10}{'trial wall s':>14}{'val acc':>9}")
    for ranks in args.ranks:
        epoch = statistics.mean(r["epoch_s"] for r in rows[ranks])
        wall = statistics.mean(r["wall_s"] for r in rows[ranks])
        acc = statistics.mean(r["val_accuracy"] for r in rows[ranks])
        print(f"{ranks:>5}{epoch:>10.3f}{epoch / base_epoch:>10.2f}{wall:>14.1f}{acc:>9.3f}")


if __name__ == "__main__":
    main()

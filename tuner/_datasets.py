"""Data sets of the built-in workloads, split by a fixed seed.

Both come from installed packages: scikit-learn's digits, and MNIST-1D generated
locally by the ``mnist1d`` package (never downloaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0


@dataclass(frozen=True)
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    n_classes: int


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def _three_way(x: np.ndarray, y: np.ndarray, val: float, test: float) -> Splits:
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(x))
    n_test = int(round(len(x) * test))
    n_val = int(round(len(x) * val))
    te, va, tr = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Splits(
        _tensors(x[tr], y[tr]), _tensors(x[va], y[va]), _tensors(x[te], y[te]), int(y.max()) + 1
    )


@lru_cache(maxsize=1)
def digits() -> Splits:
    """scikit-learn's 8x8 digits: 1,797 images as 64 features in [0, 1]; 60/20/20 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return _three_way(data.data / 16.0, data.target, val=0.2, test=0.2)


def _cache_dir() -> Path:
    root = os.environ.get("TUNER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tuner"
    )
    return Path(root)


@lru_cache(maxsize=1)
def mnist1d() -> Splits:
    """MNIST-1D (40-step signals, 10 classes): 4,000 train+val, 1,000 test, made locally.

    Generation takes a few seconds, so the arrays are kept in the user's cache folder.
    """
    path = _cache_dir() / f"mnist1d-seed{SPLIT_SEED}.npz"
    if path.exists():
        with np.load(path) as f:
            x, y, x_test, y_test = f["x"], f["y"], f["x_test"], f["y_test"]
    else:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = 42
        data = make_dataset(args)
        x, y, x_test, y_test = data["x"], data["y"], data["x_test"], data["y_test"]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y, x_test=x_test, y_test=y_test)
        os.replace(tmp, path)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(x))
    n_val = 500
    va, tr = order[:n_val], order[n_val:]
    x = x[:, None, :]
    x_test = x_test[:, None, :]
    return Splits(
        _tensors(x[tr], y[tr]), _tensors(x[va], y[va]), _tensors(x_test, y_test), int(y.max()) + 1
    )

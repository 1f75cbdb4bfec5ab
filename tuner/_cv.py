"""Cross-validated trial scores for small data.

With ``cv: {folds: k}`` a trial trains k models: the training and validation splits
are pooled and cut into k stratified folds (the same folds for every trial of a study),
and model ``i`` trains on the other folds and is compressed and scored on fold ``i``.
The trial's ``accuracy`` is the mean of the k scores; ``cv_accuracy_folds`` and
``cv_accuracy_std`` keep the rest. The model that ships is one more, trained on all the
pooled data with the same parameters and compressed the same way: its size, latency and
test accuracy (on the untouched test split) are the trial's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._exceptions import WorkloadError

Split = tuple[torch.Tensor, torch.Tensor]
REFIT = -1  # the fold index of the model trained on all the pooled data


@dataclass(frozen=True)
class Folds:
    """Which fold a workload call trains: ``index`` in ``0..k-1``, or ``REFIT``."""

    k: int
    index: int
    seed: int

    @property
    def refit(self) -> bool:
        return self.index == REFIT

    def split(self, train: Split, val: Split) -> tuple[Split, Split]:
        """This call's (train, val): the fold's part of the pooled data, or for the refit
        all of it as train (val then repeats the fold-free validation split, for the
        calibration and fine-tune steps that want one; it never scores the trial)."""
        x = torch.cat([train[0], val[0]])
        y = torch.cat([train[1], val[1]])
        if self.refit:
            return (x, y), val
        held = fold_indices(y, self.k, self.seed)[self.index]
        mask = torch.ones(len(y), dtype=torch.bool)
        mask[torch.as_tensor(held)] = False
        keep = torch.as_tensor(np.flatnonzero(mask.numpy()))
        held_t = torch.as_tensor(held)
        return (x[keep], y[keep]), (x[held_t], y[held_t])


def fold_indices(labels: torch.Tensor, k: int, seed: int) -> list[np.ndarray]:
    """The held-out rows of each of ``k`` stratified folds (disjoint, covering every row)."""
    from sklearn.model_selection import StratifiedKFold

    y = labels.cpu().numpy()
    smallest = int(np.bincount(y.astype(np.int64)).min()) if len(y) else 0
    if smallest < k:
        raise WorkloadError(
            f"cv.folds: got {k}; the smallest class has {smallest} rows in the pooled "
            f"training and validation data, so at most {smallest} stratified folds fit"
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [held for _train, held in splitter.split(np.zeros(len(y)), y)]


def summary(scores: list[float]) -> dict[str, object]:
    """The trial's cross-validated figures from the folds' accuracies."""
    mean = float(np.mean(scores))
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    return {
        "accuracy": mean,
        "cv_accuracy_folds": [float(s) for s in scores],
        "cv_accuracy_std": std if math.isfinite(std) else 0.0,
        "cv_folds": len(scores),
    }

"""The built-in workloads: a digits MLP (the fast demo) and an MNIST-1D CNN."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._datasets import digits, mnist1d
from ._workloads import TrainedModel, TrialContext, train_classifier


def digits_mlp(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    """MLP on scikit-learn's digits. Params: ``hidden_units`` (128), ``layers`` (2)."""
    data = digits()
    hidden = int(params.get("hidden_units", 128))
    n_layers = int(params.get("layers", 2))
    torch.manual_seed(ctx.seed)
    blocks: list[nn.Module] = []
    width = data.train[0].shape[1]
    for _ in range(n_layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    blocks.append(nn.Linear(width, data.n_classes))
    model = nn.Sequential(*blocks)
    return train_classifier(model, params, ctx, train=data.train, val=data.val, test=data.test)


def mnist1d_cnn(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    """Three strided Conv1d layers and a linear head on MNIST-1D. Params: ``channels`` (32)."""
    data = mnist1d()
    c = int(params.get("channels", 32))
    torch.manual_seed(ctx.seed)
    length = data.train[0].shape[-1]
    for _ in range(3):
        length = (length + 1) // 2
    model = nn.Sequential(
        nn.Conv1d(1, c, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c * length, data.n_classes),
    )
    return train_classifier(model, params, ctx, train=data.train, val=data.val, test=data.test)

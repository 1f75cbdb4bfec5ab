"""The built-in workloads (a digits MLP, the fast demo; an MNIST-1D CNN and Transformer),
and finding the workload a spec names: built-in, or a user function by import path."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._datasets import digits, mnist1d
from ._exceptions import SpecError, WorkloadError
from ._workloads import TrainedModel, TrialContext, Workload, WorkloadFn, train_classifier


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


class PatchTransformer(nn.Module):
    """A Transformer encoder over a 1-D signal cut into patches (tokens), mean-pooled.

    Each patch of ``patch`` steps is embedded linearly and given a learned position; the
    encoder is ``nn.TransformerEncoder`` (pre-norm, GELU feed-forward of twice the width).
    """

    def __init__(
        self,
        *,
        length: int,
        classes: int,
        width: int = 64,
        heads: int = 4,
        layers: int = 2,
        patch: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if length % patch:
            raise ValueError(f"patch must divide the signal length {length}; got {patch}")
        self.patch = patch
        self.embed = nn.Linear(patch, width)
        self.position = nn.Parameter(torch.zeros(1, length // patch, width))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=2 * width,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.reshape(x.shape[0], -1, self.patch)) + self.position
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


def mnist1d_transformer(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    """A Transformer encoder on MNIST-1D's 40 steps as 10 patches of 4.

    Params: ``width`` (64), ``heads`` (4, must divide width), ``layers`` (2).
    """
    data = mnist1d()
    width = int(params.get("width", 64))
    heads = int(params.get("heads", 4))
    if width % heads:
        raise WorkloadError(f"width {width} must be a multiple of heads {heads}")
    torch.manual_seed(ctx.seed)
    model = PatchTransformer(
        length=data.train[0].shape[-1],
        classes=data.n_classes,
        width=width,
        heads=heads,
        layers=int(params.get("layers", 2)),
    )
    return train_classifier(model, params, ctx, train=data.train, val=data.val, test=data.test)


BUILTIN_WORKLOADS: dict[str, WorkloadFn] = {
    "digits-mlp": digits_mlp,
    "mnist1d-cnn": mnist1d_cnn,
    "mnist1d-transformer": mnist1d_transformer,
}


def resolve_workload(name: str) -> Workload:
    """Find a built-in workload by name, or a user workload by ``package.module:function``."""
    if name in BUILTIN_WORKLOADS:
        return Workload(name=name, fn=BUILTIN_WORKLOADS[name])
    if ":" not in name:
        raise SpecError(
            f"spec field 'workload': got {name!r}; expected a built-in workload "
            f"({', '.join(BUILTIN_WORKLOADS)}) or an import path 'package.module:function'"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(
            f"spec field 'workload': cannot import module {module_name!r} ({exc}); "
            "expected an importable 'package.module:function'"
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SpecError(
            f"spec field 'workload': module {module_name!r} has no function {attr!r}; "
            "expected 'package.module:function'"
        )
    extra = tuple(str(m) for m in getattr(fn, "metrics", ()))
    return Workload(name=name, fn=fn, extra_metrics=extra)

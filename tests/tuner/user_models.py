"""Workloads a user would write from the README's contract: models that are not nn.Sequential.

``residual_cnn``: a 1-D ResNet-style CNN (skip connections, BatchNorm, global pooling).
``image_resnet``: the same in 2-D, on scikit-learn's digits as 8x8 images.
``transformer``: an ``nn.TransformerEncoder`` (4 heads) over MNIST-1D's signal cut in patches.
``TokenTransformer`` reads token ids (int64) through an ``nn.Embedding``: MNIST-1D's signal cut
into 16 levels. ``ViT`` is laid out as torchvision's Vision Transformer is: a convolution cuts the signal into
patches, reshaped into tokens by the width it keeps as an attribute, then a class token and
position embeddings as raw parameters.

Tests put this folder on ``sys.path`` and name the workloads ``user_models:residual_cnn`` and
``user_models:transformer``; the classes must stay importable for kept trial models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tuner import TrainedModel, TrialContext, train_classifier
from tuner._datasets import digits, mnist1d

ROWS = 1200


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dims: int = 1) -> None:
        super().__init__()
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1 = conv(channels, channels, 3, padding=1, bias=False)
        self.bn1 = norm(channels)
        self.conv2 = conv(channels, channels, 3, padding=1, bias=False)
        self.bn2 = norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


class ResidualCNN(nn.Module):
    """Over signals, or with ``dims=2`` over images (a 3x3 stem of stride 1)."""

    def __init__(self, channels: int = 16, classes: int = 10, dims: int = 1) -> None:
        super().__init__()
        if dims == 1:
            stem: nn.Module = nn.Conv1d(1, channels, 5, stride=2, padding=2, bias=False)
            norm: nn.Module = nn.BatchNorm1d(channels)
            pool: nn.Module = nn.AdaptiveAvgPool1d(1)
        else:
            stem, norm = nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
            pool = nn.AdaptiveAvgPool2d(1)
        self.stem = nn.Sequential(stem, norm, nn.ReLU())
        self.blocks = nn.Sequential(ResidualBlock(channels, dims), ResidualBlock(channels, dims))
        self.pool = pool
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


class PatchTransformer(nn.Module):
    def __init__(
        self, width: int = 32, heads: int = 4, layers: int = 2, patch: int = 4, classes: int = 10
    ) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, width)
        self.position = nn.Parameter(torch.zeros(1, 40 // patch, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.reshape(x.shape[0], -1, self.patch)) + self.position
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


class ViT(nn.Module):
    def __init__(self, width: int = 32, heads: int = 4, patch: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.width = width
        self.patches = nn.Conv1d(1, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, 40 // patch + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).reshape(x.shape[0], self.width, -1).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens + self.position)[:, 0])


class TokenTransformer(nn.Module):
    def __init__(
        self, width: int = 32, heads: int = 4, levels: int = 16, classes: int = 10
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(levels, width)
        self.position = nn.Parameter(torch.randn(1, 40, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids) + self.position).mean(dim=1))


def _tokens(split: Any, levels: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = split
    low, high = -3.0, 3.0
    ids = ((x.reshape(x.shape[0], -1) - low) / (high - low) * levels).long()
    return ids.clamp(0, levels - 1), y


def _data() -> tuple[Any, Any, Any]:
    data = mnist1d()
    train = (data.train[0][:ROWS], data.train[1][:ROWS])
    return train, data.val, data.test


def residual_cnn(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    torch.manual_seed(ctx.seed)
    train, val, test = _data()
    model = ResidualCNN(int(params.get("channels", 16)))
    return train_classifier(model, params, ctx, train=train, val=val, test=test)


def image_resnet(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    torch.manual_seed(ctx.seed)
    data = digits()
    train, val, test = ((x.reshape(-1, 1, 8, 8), y) for x, y in (data.train, data.val, data.test))
    model = ResidualCNN(int(params.get("channels", 16)), dims=2)
    return train_classifier(model, params, ctx, train=train, val=val, test=test)


def transformer(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    torch.manual_seed(ctx.seed)
    train, val, test = _data()
    model = PatchTransformer(int(params.get("width", 32)), int(params.get("heads", 4)))
    return train_classifier(model, params, ctx, train=train, val=val, test=test)


def vit(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    torch.manual_seed(ctx.seed)
    train, val, test = _data()
    model = ViT(int(params.get("width", 32)), int(params.get("heads", 4)))
    return train_classifier(model, params, ctx, train=train, val=val, test=test)


def tokens(params: Mapping[str, Any], ctx: TrialContext) -> TrainedModel:
    torch.manual_seed(ctx.seed)
    train, val, test = (_tokens(split) for split in _data())
    model = TokenTransformer(int(params.get("width", 32)), int(params.get("heads", 4)))
    return train_classifier(model, params, ctx, train=train, val=val, test=test)

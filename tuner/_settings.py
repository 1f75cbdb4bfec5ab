"""A trial's compression settings, read from its parameters (no torch: the dashboard
reads them too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Settings:
    """The compression a trial sampled, and how the fine-tune after sparsity recovers it."""

    threshold: float
    structure: str
    quantize: str
    finetune_epochs: int
    distill: str = "none"
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5
    keep_float: str = "none"
    qat_epochs: int = 0
    prune_steps: int = 1

    @property
    def compressed(self) -> bool:
        return self.threshold > 0 or self.quantize != "none"

    @property
    def qat(self) -> bool:
        """int8 learned by quantization-aware training rather than calibrated after it."""
        return self.quantize == "int8" and self.qat_epochs > 0


# The parameters that say how a trained model is compressed and recovered; every other
# parameter shapes the training itself.
COMPRESSION_PARAMS = frozenset(
    {
        "prune_threshold",
        "prune_structure",
        "prune_steps",
        "quantize",
        "keep_float",
        "finetune_epochs",
        "finetune_lr",
        "distill",
        "distill_temperature",
        "distill_alpha",
        "qat_epochs",
    }
)


def settings_from_params(params: Mapping[str, Any]) -> Settings:
    """The settings ``params`` sample; what they leave out takes :class:`Settings`' defaults."""
    d = Settings
    return Settings(
        threshold=float(params.get("prune_threshold", 0.0)),
        structure=str(params.get("prune_structure", "unstructured")),
        quantize=str(params.get("quantize", "none")),
        finetune_epochs=int(params.get("finetune_epochs", 0)),
        distill=str(params.get("distill", d.distill)),
        distill_temperature=float(params.get("distill_temperature", d.distill_temperature)),
        distill_alpha=float(params.get("distill_alpha", d.distill_alpha)),
        keep_float=str(params.get("keep_float", d.keep_float)),
        qat_epochs=int(params.get("qat_epochs", d.qat_epochs)),
        prune_steps=int(params.get("prune_steps", d.prune_steps)),
    )

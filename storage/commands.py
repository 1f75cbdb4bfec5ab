"""The tuner commands the CLI and the dashboard suggest to a reader of the store."""

from __future__ import annotations

import shlex

from ._url import mask_url

# The file each export format writes, by default ("model" + this, or STUDY-trialN + this).
EXPORT_SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "state_dict": ".pth"}


def export_command(
    study: str,
    number: int,
    *,
    storage: str | None = None,
    fmt: str = "onnx",
    out: str | None = None,
    retrain: bool = False,
) -> str:
    """The shell command that exports trial ``number`` of ``study``, ready to paste.

    ``storage`` is added as ``--storage`` with its password masked; None leaves it out
    (the command then uses ``$TUNER_STORAGE`` or ``./tuner.db``). ``retrain``: the trial
    kept no model, so the command trains it again.
    """
    parts = ["tuner", "export", study, "--trial", str(number), "--format", fmt]
    parts += ["--out", out or f"model{EXPORT_SUFFIX[fmt]}"]
    if storage is not None:
        parts += ["--storage", mask_url(storage)]
    if retrain:
        parts.append("--retrain")
    return " ".join(shlex.quote(part) for part in parts)


def retime_command(study: str, *, storage: str | None = None) -> str:
    """The shell command that times ``study``'s front again side by side (``storage`` as
    for :func:`export_command`)."""
    parts = ["tuner", "retime", study]
    if storage is not None:
        parts += ["--storage", mask_url(storage)]
    return " ".join(shlex.quote(part) for part in parts)


def tensorboard_command(study: str, *, storage: str | None = None) -> str:
    """The shell command that serves ``study``'s TensorBoard runs (``storage`` as for
    :func:`export_command`)."""
    parts = ["tuner", "tensorboard", study, "--serve"]
    if storage is not None:
        parts += ["--storage", mask_url(storage)]
    return " ".join(shlex.quote(part) for part in parts)

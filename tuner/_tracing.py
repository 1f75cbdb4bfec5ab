"""One graph capture at a time in this process.

``torch.export``, the ONNX exporter and ``torch.compile`` keep process-wide state (the "is
exporting" flag, the module hierarchy being traced, the attention fast path). Two threads
capturing at once (two inline workers, or two ``tuner.run`` calls in one process) either
fail outright or restore each other's saved values, which can leave "is exporting" set for
good, after which ``torch.compile`` silently does nothing and every compiled latency is
wrong. Every capture tuner starts goes through :func:`tracing`, one process-wide lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import torch

_LOCK = threading.RLock()
log = logging.getLogger(__name__)


@contextlib.contextmanager
def tracing(*, plain_attention: bool = True) -> Iterator[None]:
    """Hold the process-wide capture lock; by default also turn off the fused attention path.

    With ``plain_attention`` the fused fast path of ``nn.TransformerEncoderLayer`` and
    ``MultiheadAttention`` is off, so exporters and quantizers see the attention's Linear
    projections as plain ops instead of one fused kernel they cannot translate.
    """
    with _LOCK:
        _clear_stale_exporting_flag()
        previous = torch.backends.mha.get_fastpath_enabled()
        if plain_attention:
            torch.backends.mha.set_fastpath_enabled(False)
        try:
            yield
        finally:
            torch.backends.mha.set_fastpath_enabled(previous)


def _clear_stale_exporting_flag() -> None:
    """Clear torch's "is exporting" flag when no capture can be running.

    Called with the lock held, so no capture tuner started is in progress; a set flag is
    then left over (torch saves and restores it per call, and an overlap anywhere in the
    process can leave it set). Left set, ``torch.compile`` returns the model unchanged
    and compiled latencies are wrong. The flag is torch's private module attribute
    (``torch.compiler._is_exporting_flag``, checked against torch 2.13).
    """
    if torch.compiler.is_exporting():
        log.warning("torch's exporting flag was left set by an earlier capture; cleared")
        torch.compiler._is_exporting_flag = False

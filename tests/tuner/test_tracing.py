"""Graph captures from several threads of one process leave torch's global state as it was."""

from __future__ import annotations

import threading

import torch
from torch import nn

from tuner._formats import exported_program
from tuner._measure import measure_latency


def _model(hidden: int = 32) -> nn.Module:
    # A fresh compile: torch.compile reuses graphs of models with the same structure, and
    # past its recompile limit runs eagerly; either would make the first call fast.
    torch._dynamo.reset()
    return nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 4)).eval()


def test_concurrent_exports_leave_compile_working() -> None:
    # Two inline workers (or two tuner.run calls) export at the same time; torch saves and
    # restores its "is exporting" flag per call, so overlapping calls could leave it set
    # for good, after which torch.compile is silently ignored.
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def export_repeatedly() -> None:
        try:
            start.wait()
            for _ in range(3):
                exported_program(_model(), torch.randn(1, 16))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=export_repeatedly) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert torch.backends.mha.get_fastpath_enabled()
    compiled = measure_latency(
        _model(hidden=40), torch.randn(1, 16), warmup=1, repeats=3, compile=True
    )
    assert compiled.compile_s > 5 * compiled.p50_ms / 1000


def test_a_leftover_exporting_flag_does_not_silence_compile() -> None:
    # As an overlapping capture elsewhere in the process would leave it.
    torch.compiler._is_exporting_flag = True
    try:
        compiled = measure_latency(
            _model(hidden=24), torch.randn(1, 16), warmup=1, repeats=3, compile=True
        )
    finally:
        leftover = torch.compiler.is_exporting()
        torch.compiler._is_exporting_flag = False
    assert not leftover
    assert compiled.compile_s > 5 * compiled.p50_ms / 1000

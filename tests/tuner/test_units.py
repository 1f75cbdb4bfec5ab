from __future__ import annotations

from tuner._units import show_metric


def test_metric_values_read_in_their_units() -> None:
    assert show_metric("size_bytes", 14643) == "14.3 KB"
    assert show_metric("accuracy", 0.9415) == "94.2%"
    assert show_metric("latency_ms", 0.00432) == "0.00432 ms"
    assert show_metric("latency_ms", 0.25, unit=False) == "0.250"
    assert show_metric("param_count", 3466) == "3466"

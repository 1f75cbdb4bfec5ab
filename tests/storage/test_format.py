from __future__ import annotations

import math

from tuner.storage import column_format, metric_unit, show_epochs, show_metric, show_param


def test_metric_values_read_in_their_units() -> None:
    assert show_metric("size_bytes", 14643) == "14.3 KB"
    assert show_metric("accuracy", 0.9415) == "94.2%"
    assert show_metric("sparsity", 0.5) == "50.0%"
    assert show_metric("latency_ms", 0.00432) == "0.00432 ms"
    assert show_metric("latency_ms", 0.25) == "0.250 ms"
    assert show_metric("latency_ms_p90", 12.3456) == "12.346 ms"
    assert show_metric("latency_reference_ms", 0.1665) == "0.167 ms"
    assert show_metric("latency_ms", 0.25, unit=False) == "0.250"
    assert show_metric("train_time_s", 12.34) == "12.3 s"
    assert show_metric("param_count", 3466) == "3,466"
    assert show_metric("feasible", True) == "yes"
    assert show_metric("int8_layers", ["fc1", "fc2"]) == "fc1, fc2"
    assert show_metric("accuracy", None) == "-"
    assert show_metric("latency_ms", math.inf) == "inf"


def test_units_and_table_formats_agree_with_the_text() -> None:
    assert metric_unit("size_bytes") == ("KB", 1 / 1024)
    assert metric_unit("test_accuracy") == ("%", 100.0)
    assert metric_unit("epochs") == ("", 1.0)
    assert column_format("accuracy") == "%.1f"
    assert column_format("latency_ms", [0.25, 1.5]) == "%.3f"
    # 0.00432 ms reads 0.00432, in the table as in the text.
    assert column_format("latency_ms", [0.00432, 1.0]) % 0.00432 == "0.00432"
    assert column_format("param_count") is None


def test_params_and_epochs() -> None:
    assert show_param(0.012345) == "0.01235"
    assert show_param(None) == "not set"
    assert show_param("adamw") == "adamw"
    assert show_epochs(1) == "1 epoch" and show_epochs(3) == "3 epochs"


def test_the_p90_shown_is_that_of_the_latency_objective() -> None:
    from tuner.storage import latency_p90

    assert latency_p90(["accuracy", "latency_ms"]) == "latency_ms_p90"
    assert latency_p90(["accuracy", "latency_ms_batch"]) == "latency_ms_batch_p90"
    assert latency_p90(["accuracy", "latency_ms", "latency_ms_batch"]) == "latency_ms_p90"
    assert latency_p90(["accuracy", "size_bytes"]) == "latency_ms_p90"


def test_a_machine_whose_speed_moved_is_told_by_how_much() -> None:
    from tuner.storage import speed_spread

    def timed(*references: float, machine: str = "CPU A") -> list[dict[str, object]]:
        return [{"latency_reference_ms": r, "latency_machine": machine} for r in references]

    moved = speed_spread(timed(0.20, 0.21, 0.20, 0.22, 0.30, 0.31))
    assert moved is not None
    assert "took 0.200 to 0.310 ms (fastest to slowest, 55% apart)" in moved
    assert speed_spread(timed(0.20, 0.21, 0.20, 0.22, 0.21, 0.23)) is None  # within 20%
    assert speed_spread(timed(0.20, 0.30, 0.40)) is None  # too few to say
    assert speed_spread(timed(0.20, 0.30, 0.40), least=3) is not None
    # From ten trials on, one odd trial at either end does not speak for the study.
    steady = (0.20, 0.21, 0.20, 0.22, 0.21, 0.20, 0.21, 0.22, 0.20, 0.21)
    assert speed_spread(timed(*steady, 0.9)) is None
    many = speed_spread(timed(*steady, 0.30, 0.31, 0.32, 0.30))
    assert many is not None and "(10th to 90th percentile, " in many
    # A value that is no timing (none, zero, NaN, a flag) is left out.
    odd = [{"latency_reference_ms": v} for v in (None, 0.0, float("nan"), True, "0.2")]
    assert speed_spread(odd, least=1) is None
    # Of two kinds of machine, the one with more trials speaks; the other's do not mix in.
    steady_here = timed(0.20, 0.21, 0.20, 0.22, 0.21, 0.20) + timed(0.9, 1.5, machine="CPU B")
    assert speed_spread(steady_here) is None
    # Trials from before the yardstick was timed say nothing.
    assert speed_spread([{"latency_ms": 1.0}] * 6) is None

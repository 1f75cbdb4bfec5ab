from __future__ import annotations

import json
from typing import Any

import optuna
import pytest

import tuner
from tuner._cli import main
from tuner._exceptions import SpecError
from tuner._pick import parse_where
from tuner.storage import Bound, show_metric


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four digits MLPs of different widths and compression, no models kept."""
    url = f"sqlite:///{tmp_path_factory.mktemp('pick') / 'study.db'}"
    spec = {
        "name": "pick",
        "workload": "digits-mlp",
        "search_space": {
            "optimizer": "adamw",
            "lr": 0.01,
            "batch_size": 64,
            "hidden_units": {"type": "categorical", "choices": [32, 96]},
            "prune_threshold": 0.5,
            "quantize": {"type": "categorical", "choices": ["none", "int8"]},
        },
        "sampler": {"name": "grid"},
        "budget": {"n_trials": 4, "max_epochs": 2},
        "measure": {"batch_size": 8, "warmup": 2, "repeats": 5, "compile": "never"},
        "artifacts": {"keep": "none"},
    }
    tuner.run(spec, storage=url)
    trials = optuna.load_study(study_name="pick", storage=url).get_trials()
    return {"url": url, "trials": trials}


def _pick(study: dict[str, Any], *args: str) -> int:
    return main(["pick", "pick", *args, "--storage", study["url"]])


def test_pick_json_is_the_most_accurate_trial_within_the_budget(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = sorted(t.user_attrs["size_bytes"] for t in study["trials"])
    bound = sizes[1]  # the two smallest models fit
    assert _pick(study, "--where", f"size_bytes<={bound}", "--json") == 0
    picked = json.loads(capsys.readouterr().out)
    fitting = [t for t in study["trials"] if t.user_attrs["size_bytes"] <= bound]
    best = max(fitting, key=lambda t: (t.user_attrs["accuracy"], -t.user_attrs["size_bytes"]))
    assert picked["number"] == best.number
    assert picked["fits"] == len(fitting) == 2
    assert picked["values"]["size_bytes"] <= bound
    assert picked["artifact"] is None
    assert (
        picked["artifact_status"] == f"trial {best.number} kept no artifact (artifacts.keep: none)"
    )
    assert picked["export"].startswith(f"tuner export pick --trial {best.number} --format onnx")


def test_pick_can_maximize_another_metric(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pick(study, "--maximize", "test_accuracy", "--json") == 0
    picked = json.loads(capsys.readouterr().out)
    top = max(t.user_attrs["test_accuracy"] for t in study["trials"])
    assert picked["metrics"]["test_accuracy"] == top
    assert _pick(study, "--minimize", "size_bytes", "--json") == 0
    picked = json.loads(capsys.readouterr().out)
    assert picked["values"]["size_bytes"] == min(
        t.user_attrs["size_bytes"] for t in study["trials"]
    )


def test_a_budget_nothing_meets_exits_1_naming_the_binding_constraint(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    smallest = min(study["trials"], key=lambda t: t.user_attrs["size_bytes"])
    assert _pick(study, "--where", "latency_ms<=1000, size_bytes<=100") == 1
    message = capsys.readouterr().out
    assert "size_bytes<=100 binds" in message
    assert "4 of 4 complete feasible trials fail it" in message
    # In the unit people read sizes in, as every table shows them.
    shown = show_metric("size_bytes", smallest.user_attrs["size_bytes"])
    raw = smallest.user_attrs["size_bytes"]
    assert f"closest: trial {smallest.number} with size_bytes {shown} ({raw:.6g})" in message
    assert shown.endswith(" KB")
    assert "latency_ms<=1000 binds" not in message

    assert _pick(study, "--where", "size_bytes<=100", "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["number"] is None
    assert out["binding"]["metric"] == "size_bytes"
    assert out["binding"]["closest"]["number"] == smallest.number


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("latency_ms=<2", "where clause 'latency_ms=<2': expected METRIC<=NUMBER"),
        ("size_bytes<=50KB", "where clause 'size_bytes<=50KB': '50KB' is not a number"),
        ("latency_ms", "where clause 'latency_ms': expected METRIC<=NUMBER"),
        (
            "latncy_ms<=2",
            "where clause 'latncy_ms<=2': unknown metric 'latncy_ms'; did you mean 'latency_ms'?",
        ),
    ],
)
def test_bad_where_exits_2_with_one_line_naming_the_clause(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str], where: str, expected: str
) -> None:
    assert _pick(study, "--where", where) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}")
    assert captured.out == ""


def test_pick_of_an_unknown_study_names_the_studies_there(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pick", "nope", "--storage", study["url"]]) == 2
    assert "no study named 'nope'; studies in this store: pick" in capsys.readouterr().err


def test_parse_where_reads_every_operator_and_number_form() -> None:
    assert parse_where(" latency_ms <= 2 , size_bytes<5e4,accuracy>=0.9, sparsity>0.5") == [
        Bound("latency_ms", max=2.0),
        Bound("size_bytes", max=50000.0, strict=True),
        Bound("accuracy", min=0.9),
        Bound("sparsity", min=0.5, strict=True),
    ]
    assert [str(b) for b in parse_where("size_bytes<5e4, accuracy>=0.9")] == [
        "size_bytes<50000",
        "accuracy>=0.9",
    ]
    with pytest.raises(SpecError, match="not a number"):
        parse_where("latency_ms<=nan")


def test_the_pick_table_gives_each_value_its_unit(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # One column holds accuracies, sizes and latencies: a bare "0.419" says nothing.
    assert _pick(study, "--where", "latency_ms<=1000") == 0
    rows = {
        cells[1].strip().split()[0]: (cells[2].strip(), cells[3].strip())
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("│") and len(cells := line.split("│")) > 3
    }
    assert rows["latency_ms"][0].endswith(" ms") and rows["latency_ms"][1] == "<= 1000.000 ms"
    assert rows["size_bytes"][0].endswith(" KB")
    assert rows["accuracy"][0].endswith("%")

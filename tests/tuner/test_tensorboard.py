"""Every trial writes TensorBoard event files that TensorBoard's own reader understands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

import tuner
from tuner.storage import open_storage, read_records

TUNER = [sys.executable, "-m", "tuner._cli"]


def _tensorboard_cli(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNER, "tensorboard", "tiny", "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _hparams(multiplexer: EventMultiplexer) -> dict[str, dict[str, Any]]:
    """Per run: the HParams plugin's records (experiment, session start and end)."""
    out: dict[str, dict[str, Any]] = {}
    for run, tags in multiplexer.PluginRunToTagToContent("hparams").items():
        for tag, content in tags.items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            out.setdefault(run, {})[tag.split("/")[-1]] = getattr(data, data.WhichOneof("data"))
    return out


def _value(v: Any) -> Any:
    kind = v.WhichOneof("kind")
    return {"number_value": v.number_value, "string_value": v.string_value}.get(kind, v.bool_value)


def test_every_trial_has_its_curve_metrics_and_hparams(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any
) -> None:
    spec = tiny_spec(
        budget={"n_trials": 3, "max_epochs": 3}, artifacts={"path": str(tmp_path / "art")}
    )
    tuner.run(spec, storage=sqlite_url)
    records = read_records(open_storage(sqlite_url, heartbeat=False), "tiny")
    folder = tmp_path / "art" / "tensorboard" / "tiny"
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(folder))
    multiplexer.Reload()
    hparams = _hparams(multiplexer)

    # The experiment names every parameter of the search space and every objective.
    experiment = hparams["."]["experiment"]
    assert {h.name for h in experiment.hparam_infos} == set(spec["search_space"])
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"accuracy", "size_bytes", "latency_ms", "test_accuracy"} <= metrics

    assert len(records) == 3
    for record in records:
        run = f"trial-{record.number:05d}"
        assert record.metrics["tensorboard"] == str(folder / run)
        curve = [e.value for e in multiplexer.Scalars(run, "curve/val_accuracy")]
        assert curve == pytest.approx(record.curve, abs=1e-6)
        assert [e.step for e in multiplexer.Scalars(run, "curve/val_accuracy")] == [0, 1, 2]
        losses = [e.value for e in multiplexer.Scalars(run, "curve/train_loss")]
        assert len(losses) == 3 and all(v > 0 for v in losses)
        for name in ("accuracy", "size_bytes", "latency_ms", "test_accuracy"):
            final = multiplexer.Scalars(run, name)[-1].value
            expected = record.values.get(name, record.metrics.get(name))
            assert final == pytest.approx(expected, rel=1e-5), name
        start = hparams[run]["session_start_info"]
        logged = {k: _value(v) for k, v in start.hparams.items()}
        assert logged.keys() == record.params.keys() | {"hidden_units"}
        for name, value in record.params.items():
            assert logged[name] == (pytest.approx(value) if not isinstance(value, str) else value)
        assert hparams[run]["session_end_info"].status == api_pb2.Status.STATUS_SUCCESS


def test_a_failed_trial_is_logged_as_failed(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tb_workloads.py").write_text(
        "from tuner._builtin_workloads import digits_mlp\n"
        "def broken(params, ctx):\n"
        "    ctx.report(0, val_accuracy=0.5)\n"
        "    raise RuntimeError('the data loader died')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tiny_spec(
        workload="tb_workloads:broken",
        budget={"n_trials": 1, "max_epochs": 1},
        artifacts={"path": str(tmp_path / "art")},
    )
    with pytest.raises(tuner.TrialsKeepFailing):
        tuner.run(spec, storage=sqlite_url, n_trials=1)
    folder = tmp_path / "art" / "tensorboard" / "tiny"
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(folder))
    multiplexer.Reload()
    end = _hparams(multiplexer)["trial-00000"]["session_end_info"]
    assert end.status == api_pb2.Status.STATUS_FAILURE
    assert [e.value for e in multiplexer.Scalars("trial-00000", "curve/val_accuracy")] == [0.5]


def test_an_unwritable_folder_costs_the_files_not_the_trial(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any
) -> None:
    art = tmp_path / "art"
    (art / "tensorboard").mkdir(parents=True)
    (art / "tensorboard" / "tiny").write_text("a file where the folder would go")
    spec = tiny_spec(budget={"n_trials": 1, "max_epochs": 1}, artifacts={"path": str(art)})
    with pytest.warns(RuntimeWarning, match="TensorBoard files not written"):
        result = tuner.run(spec, storage=sqlite_url)
    assert result.n_finished == 1
    (record,) = read_records(open_storage(sqlite_url, heartbeat=False), "tiny")
    assert record.state == "COMPLETE"


def test_turned_off_writes_nothing_and_the_cli_says_why(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any
) -> None:
    spec = tiny_spec(
        budget={"n_trials": 1, "max_epochs": 1},
        artifacts={"path": str(tmp_path / "art"), "tensorboard": False},
    )
    tuner.run(spec, storage=sqlite_url)
    assert not (tmp_path / "art" / "tensorboard" / "tiny").exists()
    out = _tensorboard_cli(sqlite_url)
    assert out.returncode == 2
    assert "artifacts.tensorboard: false" in out.stderr
    assert "Traceback" not in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_prints_the_folder_last_and_serves_it(
    tmp_path: Path, sqlite_url: str, tiny_spec: Any
) -> None:
    spec = tiny_spec(
        budget={"n_trials": 2, "max_epochs": 1}, artifacts={"path": str(tmp_path / "art")}
    )
    tuner.run(spec, storage=sqlite_url)
    folder = tmp_path / "art" / "tensorboard" / "tiny"
    out = _tensorboard_cli(sqlite_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == str(folder)
    assert f"tensorboard --logdir {folder}" in out.stdout

    port = _free_port()
    proc = subprocess.Popen(
        [*TUNER, "tensorboard", "tiny", "--storage", sqlite_url, "--serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        runs: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(runs) < 3:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                    runs = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert sorted(runs) == [".", "trial-00000", "trial-00001"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_runs_from_the_store_are_laid_out_inside_their_folder_only(tmp_path: Path) -> None:
    import io
    import tarfile

    from tuner._tensorboard import unpack_runs

    def packed(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    first = packed({"events.out.tfevents.1": b"summary", "trial-00000/events.out.tfevents.2": b"a"})
    second = packed({"events.out.tfevents.3": b"again", "trial-00001/events.out.tfevents.4": b"b"})
    hostile = packed({"../escaped": b"x", "/abs/escaped": b"x", "trial-00002/ok": b"c"})
    into = tmp_path / "runs"
    with pytest.warns(RuntimeWarning, match="a TensorBoard run left out"):
        count = unpack_runs([first, b"not a run at all", second, hostile], into)
    assert count == 3
    written = sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file())
    # The experiment summary once; every trial's files; nothing outside the folder.
    assert written == [
        "events.out.tfevents.1",
        "trial-00000/events.out.tfevents.2",
        "trial-00001/events.out.tfevents.4",
        "trial-00002/ok",
    ]
    assert not (tmp_path / "escaped").exists() and not Path("/abs/escaped").exists()

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import tuner
from tuner._artifacts import artifacts_root, models_in_store
from tuner._cli import main
from tuner._exceptions import SpecError
from tuner._export import artifact_path
from tuner.storage import open_storage


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "measure",
            {"runtime": "ort"},
            "spec field 'measure.runtime': got 'ort'; expected one of torch, onnxruntime",
        ),
        (
            "artifacts",
            {"keep": "best"},
            "spec field 'artifacts.keep': got 'best'; expected one of pareto, all, none",
        ),
        (
            "artifacts",
            {"kept": "all"},
            "spec field 'artifacts.kept': unknown key; did you mean 'keep'?",
        ),
        ("artifacts", {"path": ""}, "spec field 'artifacts.path': got ''; expected a folder path"),
        (
            "artifacts",
            {"in_store": "yes"},
            "spec field 'artifacts.in_store': got 'yes'; expected true, false, or unset",
        ),
    ],
)
def test_bad_artifacts_and_runtime_are_one_line_naming_the_field(
    tiny_spec: Any, field: str, value: Any, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        tuner.load_spec(tiny_spec(**{field: value}))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_spec_round_trips_artifacts_and_runtime(tiny_spec: Any) -> None:
    spec = tuner.load_spec(
        tiny_spec(artifacts={"keep": "all", "path": "models"}, measure={"runtime": "onnxruntime"})
    )
    again = tuner.load_spec(spec.to_dict())
    assert (again.artifacts.keep, again.artifacts.path) == ("all", "models")
    assert again.artifacts.in_store is None
    in_store = tuner.load_spec(tiny_spec(artifacts={"in_store": True}))
    assert tuner.load_spec(in_store.to_dict()).artifacts.in_store is True
    assert again.measure.runtime == "onnxruntime"
    default = tuner.load_spec(tiny_spec())
    assert (default.artifacts.keep, default.measure.runtime) == ("pareto", "torch")


def test_artifacts_live_next_to_a_sqlite_file_else_in_the_environment_or_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNER_ARTIFACTS", raising=False)
    db = tmp_path / "stores" / "tuner.db"
    assert artifacts_root(None, f"sqlite:///{db}") == tmp_path / "stores" / "tuner-artifacts"
    assert artifacts_root(None, "sqlite:///tuner.db") == tmp_path / "tuner-artifacts"
    assert (
        artifacts_root(None, "postgresql+psycopg://u:p@db:5432/t") == tmp_path / "tuner-artifacts"
    )
    assert artifacts_root("shared/models", "sqlite:///tuner.db") == tmp_path / "shared" / "models"
    monkeypatch.setenv("TUNER_ARTIFACTS", str(tmp_path / "server-models"))
    assert artifacts_root(None, "postgresql+psycopg://u:p@db:5432/t") == tmp_path / "server-models"
    assert artifacts_root(None, f"sqlite:///{db}") == tmp_path / "stores" / "tuner-artifacts"


def test_models_go_in_a_database_servers_store_unless_a_folder_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tuner._spec import ArtifactsSpec

    monkeypatch.delenv("TUNER_ARTIFACTS", raising=False)
    pg, sqlite = "postgresql+psycopg://u:p@db:5432/t", "sqlite:///tuner.db"
    assert models_in_store(ArtifactsSpec(), pg)
    assert not models_in_store(ArtifactsSpec(), sqlite)
    assert not models_in_store(ArtifactsSpec(path="/shared/models"), pg)
    assert models_in_store(ArtifactsSpec(in_store=True), sqlite)
    assert not models_in_store(ArtifactsSpec(in_store=False), pg)
    monkeypatch.setenv("TUNER_ARTIFACTS", "/shared/models")
    assert not models_in_store(ArtifactsSpec(), pg)


def test_a_servers_study_keeps_its_models_in_the_store_for_every_machine(
    tiny_spec: Any,
    server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import onnx
    import sqlalchemy
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    monkeypatch.delenv("TUNER_ARTIFACTS", raising=False)
    here, elsewhere = tmp_path / "driver", tmp_path / "laptop"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    # Two objectives that do not depend on timing: the same trials are dominated each run.
    spec = tiny_spec(
        "pgstore",
        budget={"n_trials": 4, "max_epochs": 1},
        objectives={"accuracy": "maximize", "size_bytes": "minimize"},
    )
    result = tuner.run(spec, storage=server_url)
    # Nothing written on this machine's disk: models and TensorBoard runs are in the store.
    assert [p for p in here.rglob("*") if p.is_file()] == []
    trials = optuna.load_study(study_name="pgstore", storage=server_url).get_trials()
    kept = {t.number: t.user_attrs["artifact_id"] for t in trials if "artifact_id" in t.user_attrs}
    assert all(t.user_attrs["artifact_store"] == "study store" for t in trials if t.number in kept)
    assert all(t.user_attrs["tensorboard"] == "study store" for t in trials)
    engine = sqlalchemy.create_engine(server_url)
    with engine.connect() as connection:
        query = "SELECT artifact_id, study FROM tuner_artifacts"
        rows = dict(connection.exec_driver_sql(query).tuples().all())
    engine.dispose()
    runs = {i for i in rows if i.startswith("tensorboard-")}
    models = set(rows) - runs
    # keep: pareto: what stays in the store is the front's models, and only those; every
    # trial's run stays.
    front = {t.number for t in result.pareto_front}
    assert models == {kept[n] for n in front} and set(rows.values()) == {"pgstore"}
    assert runs == {f"tensorboard-{t._trial_id}" for t in trials}

    # Another machine with the store's URL and nothing else exports a front trial.
    monkeypatch.chdir(elsewhere)
    number = min(front)
    out = elsewhere / "model.onnx"
    args = ["--trial", str(number), "--format", "onnx", "--out", str(out)]
    assert main(["export", "pgstore", *args, "--storage", server_url]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    # A trial the front came to dominate lost its model, and export says so.
    dropped = min(n for n in kept if n not in front)
    capsys.readouterr()
    args = ["--trial", str(dropped), "--out", str(elsewhere / "m.onnx")]
    assert main(["export", "pgstore", *args, "--storage", server_url]) == 1
    assert f"artifact of trial {dropped} was dropped by keep: pareto" in capsys.readouterr().out

    # Another machine with the store's URL sees every trial's run in TensorBoard.
    capsys.readouterr()
    monkeypatch.setenv("TUNER_CACHE_DIR", str(elsewhere / "cache"))
    assert main(["tensorboard", "pgstore", "--storage", server_url]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0] == (
        "4 of 4 trials of pgstore logged (kept in the study store, copied here); open them with:"
    )
    folder = Path(said[-1])
    assert folder.is_relative_to(elsewhere / "cache") and folder.name.startswith("pgstore-")
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(folder))
    multiplexer.Reload()
    by_number = {t.number: t for t in trials}
    assert set(multiplexer.Runs()) == {".", *(f"trial-{n:05d}" for n in by_number)}
    for number, trial in by_number.items():
        curve = multiplexer.Scalars(f"trial-{number:05d}", "curve/val_accuracy")
        assert [e.value for e in curve] == pytest.approx(trial.user_attrs["curve"], abs=1e-6)
    experiments = [p for p in folder.iterdir() if p.is_file()]
    assert len(experiments) == 1, "the experiment summary, once"

    # Deleting the study deletes its models and runs with it, and says how much.
    from tuner._cli_delete import _size

    engine = sqlalchemy.create_engine(server_url)
    with engine.connect() as connection:
        total = connection.exec_driver_sql("SELECT sum(length(content)) FROM tuner_artifacts")
        stored_bytes = int(total.scalar() or 0)
    engine.dispose()
    assert main(["delete", "pgstore", "--yes", "--storage", server_url]) == 0
    out = capsys.readouterr().out
    assert f"removed {len(front)} model file" in out and "and 4 TensorBoard runs" in out
    assert f"of its trials ({_size(stored_bytes)})" in out, out
    engine = sqlalchemy.create_engine(server_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM tuner_artifacts").scalar() == 0
    engine.dispose()


def test_keep_none_stores_no_file_and_export_says_why(
    tiny_spec: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = tiny_spec("bare", budget={"n_trials": 1, "max_epochs": 1}, artifacts={"keep": "none"})
    tuner.run(spec, storage=url)
    models = tmp_path / "tuner-artifacts" / "bare"
    assert not models.exists() or not any(models.rglob("*"))
    store = open_storage(url, read_only=True, heartbeat=False)
    assert artifact_path(store, "bare", 0) is None
    code = main(
        ["export", "bare", "--trial", "0", "--out", str(tmp_path / "m.onnx"), "--storage", url]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "trial 0 kept no artifact (artifacts.keep: none)" in out
    assert "--retrain" in out


@pytest.mark.postgres
def test_a_postgresql_study_keeps_models_in_the_folder_the_spec_names(
    tiny_spec: Any, postgres_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "shared-models"
    spec = tiny_spec(
        "pg",
        budget={"n_trials": 1, "max_epochs": 1},
        artifacts={"keep": "all", "path": str(folder)},
    )
    tuner.run(spec, storage=postgres_url)
    (trial,) = optuna.load_study(study_name="pg", storage=postgres_url).get_trials()
    store = open_storage(postgres_url, read_only=True, heartbeat=False)
    path = artifact_path(store, "pg", trial.number)
    assert path is not None and path.parent == folder / "pg"
    store.engine.dispose()


def test_keep_pareto_leaves_alone_a_file_whose_trial_it_has_not_judged(
    tiny_spec: Any, tmp_path: Path
) -> None:
    """A worker reads the front, then another trial finishes and keeps its file: the
    first worker must not delete that file, the new trial may be on the front."""
    from tuner._artifacts import enforce_keep, study_folder

    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = tiny_spec("race", budget={"n_trials": 2, "max_epochs": 1}, artifacts={"keep": "all"})
    tuner.run(spec, storage=url)
    study = optuna.load_study(study_name="race", storage=open_storage(url))
    folder = study_folder(artifacts_root(None, url), "race")
    files = lambda: sorted(p.name for p in folder.iterdir())  # noqa: E731
    assert len(files()) == 2
    numbers = {t.number for t in study.trials}

    # A front read before both trials finished: neither was judged, nothing goes.
    assert enforce_keep(study, "pareto", folder, front=(set(), set())) == 0
    assert len(files()) == 2
    # A front that judged both and kept trial 0 only: trial 1's file goes.
    assert enforce_keep(study, "pareto", folder, front=({0}, numbers)) == 1
    (left,) = files()
    assert left == study.trials[0].user_attrs["artifact_id"]


def test_the_cache_of_models_read_from_the_store_keeps_the_latest_within_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import time
    import uuid

    import tuner._artifacts as artifacts

    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path))
    ids = [str(uuid.uuid4()) for _ in range(4)]
    paths = []
    for age, artifact_id in zip((300, 200, 100), ids):
        path = artifacts._cached(artifact_id, b"m" * 100)
        os.utime(path, (time.time() - age, time.time() - age))
        paths.append(path)
    folder = paths[0].parent
    assert all(p.exists() for p in paths)  # within the cache's size
    monkeypatch.setattr(artifacts, "CACHE_BYTES", 250)
    dead = folder / ".partial-dead"
    dead.write_bytes(b"half")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    writing = folder / ".partial-now"
    writing.write_bytes(b"half")
    # Reading the first model again makes it the newest; the one read longest ago goes.
    artifacts._cached(ids[0], b"m" * 100)
    assert sorted(p.name for p in folder.iterdir()) == sorted([ids[0], ids[2], ".partial-now"])
    # One model larger than the whole cache is kept: it is the one being loaded.
    big = artifacts._cached(ids[3], b"m" * 1000)
    assert big.read_bytes() == b"m" * 1000
    assert sorted(p.name for p in folder.iterdir()) == sorted([ids[3], ".partial-now"])

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna

TUNER = [sys.executable, "-m", "tuner._cli"]


def _tuner(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(
        [*TUNER, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False, **kwargs
    )


def _studies(tiny_spec: Any, url: str, *names: str) -> dict[str, list[Path]]:
    """Studies of one trial each in one store, every model kept: each one's folders
    (models, runs)."""
    import tuner

    folders = {}
    for name in names:
        spec = tiny_spec(name, budget={"n_trials": 1, "max_epochs": 1}, artifacts={"keep": "all"})
        tuner.run(spec, storage=url)
        study = optuna.load_study(study_name=name, storage=url)
        attrs = study.trials[0].user_attrs
        folders[name] = [Path(attrs["artifact_store"]), Path(attrs["tensorboard"]).parent]
        assert all(f.is_dir() and any(f.iterdir()) for f in folders[name]), folders
    return folders


def test_delete_removes_the_study_and_its_files_and_leaves_the_others(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    folders = _studies(tiny_spec, sqlite_url, "tiny", "other")
    models, runs = folders["tiny"]

    out = _tuner("delete", "tiny", "--yes", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"deleted study 'tiny' (1 trial) from {sqlite_url}"
    assert lines[1].startswith("removed 1 model file and 1 TensorBoard run of its trials (")
    assert lines[1].endswith(" KB)") and sorted(lines[2:]) == sorted(
        [f"removed {models}", f"removed {runs}"]
    ), out.stdout
    assert not models.exists() and not runs.exists()
    assert optuna.get_all_study_names(sqlite_url) == ["other"]
    # The other study, its models and runs are as they were.
    assert all(f.is_dir() and any(f.iterdir()) for f in folders["other"])
    from tuner._artifacts import artifact_status

    other = optuna.load_study(study_name="other", storage=sqlite_url)
    kept = artifact_status(other, 0).path
    assert kept is not None and kept.is_file()

    # --keep-files: the store only; the folders stay, and are named.
    store_only = _tuner(
        "delete", "other", "--yes", "--keep-files", "--storage", sqlite_url, cwd=tmp_path
    )
    assert store_only.returncode == 0 and optuna.get_all_study_names(sqlite_url) == []
    for folder in folders["other"]:
        assert folder.is_dir() and f"left {folder}: kept (--keep-files)" in store_only.stdout

    # Deleting it again is the one line a missing study gets.
    again = _tuner("delete", "tiny", "--yes", "--storage", sqlite_url, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error: no study named 'tiny'")


def test_delete_asks_first_and_without_a_terminal_needs_yes(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    folders = _studies(tiny_spec, sqlite_url, "tiny")
    out = _tuner("delete", "tiny", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line == (
        "error: --yes: not given; with no terminal to ask at, it is needed to delete study "
        f"'tiny' (1 trial) from {sqlite_url} and the 1 model file and 1 TensorBoard run its "
        "trials kept"
    )
    assert optuna.get_all_study_names(sqlite_url) == ["tiny"]

    def at_a_terminal(answer: str) -> subprocess.CompletedProcess[str]:
        main, terminal = pty.openpty()
        try:
            os.write(main, answer.encode())
            return _tuner("delete", "tiny", "--storage", sqlite_url, cwd=tmp_path, stdin=terminal)
        finally:
            os.close(main)
            os.close(terminal)

    no = at_a_terminal("\n")  # the default is no
    assert no.returncode == 1 and "nothing deleted" in no.stderr
    eof = at_a_terminal("\x04")  # Ctrl-D
    assert eof.returncode == 1 and eof.stderr.strip() == "nothing deleted", eof.stderr
    assert "tiny" in optuna.get_all_study_names(sqlite_url)
    assert all(f.is_dir() for f in folders["tiny"])
    yes = at_a_terminal("y\n")
    assert yes.returncode == 0, yes.stderr
    assert optuna.get_all_study_names(sqlite_url) == []
    assert not any(f.exists() for f in folders["tiny"])


def test_a_study_with_running_trials_is_deleted_only_with_force(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    folders = _studies(tiny_spec, sqlite_url, "tiny")
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    running = study.ask().number  # a worker's trial in flight

    out = _tuner("delete", "tiny", "--yes", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: study 'tiny' has 1 trial running ({running}); stop its sweep first, or "
        "pass --force"
    )
    assert "tiny" in optuna.get_all_study_names(sqlite_url)

    # Its worker has begun the trial's TensorBoard run, which the trial records only once
    # it ends.
    unfinished = folders["tiny"][1] / f"trial-{running:05d}"
    unfinished.mkdir()
    (unfinished / "events.out.tfevents.1.host.2.0").write_bytes(b"x")
    forced = _tuner("delete", "tiny", "--yes", "--force", "--storage", sqlite_url, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert optuna.get_all_study_names(sqlite_url) == []
    assert "removed 1 model file and 2 TensorBoard runs of its trials" in forced.stdout
    assert not any(f.exists() for f in folders["tiny"]), forced.stdout


def test_a_mistyped_store_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    out = _tuner("delete", "tiny", "--yes", "--storage", f"sqlite:///{typo}", cwd=tmp_path)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line == f"error: no study store at 'sqlite:///{typo}': {typo} does not exist"
    assert not typo.exists()


def test_files_of_other_studies_are_left_whatever_the_names(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    import tuner

    # A study named like the folder that holds every study's TensorBoard runs...
    folders = _studies(tiny_spec, sqlite_url, "other", "tensorboard")
    out = _tuner("delete", "tensorboard", "--yes", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(f.is_dir() and any(f.iterdir()) for f in folders["other"]), out.stdout
    tensorboard_models = folders["tensorboard"][0]
    assert tensorboard_models.is_dir()  # it holds the other studies' runs
    assert (
        f"left {tensorboard_models}: it holds 1 other entry, that no trial of this study recorded"
    ) in out.stdout

    # ...and a study of the same name in a second store beside the first: both keep their
    # model files under ./tuner-artifacts/<name> (their TensorBoard runs share folders,
    # trial-00000 for both first trials, and cannot be told apart).
    second = f"sqlite:///{tmp_path / 'second.db'}"
    spec = tiny_spec("other", budget={"n_trials": 1, "max_epochs": 1}, artifacts={"keep": "all"})
    tuner.run(spec, storage=second)
    theirs = optuna.load_study(study_name="other", storage=second).trials[0].user_attrs
    out = _tuner("delete", "other", "--yes", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (Path(theirs["artifact_store"]) / theirs["artifact_id"]).is_file()
    assert f"left {theirs['artifact_store']}: it holds 1 other entry" in out.stdout
    assert optuna.get_all_study_names(second) == ["other"]


def test_a_night_a_nightly_run_holds_is_deleted_only_with_force(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    from tuner.storage import open_storage
    from tuner.storage._locks import acquire_lock

    _studies(tiny_spec, sqlite_url, "tiny")
    store = open_storage(sqlite_url, heartbeat=False)
    lock = acquire_lock(store, "nightly:tiny")  # a live nightly run working on the night
    try:
        out = _tuner("delete", "tiny", "--yes", "--storage", sqlite_url, cwd=tmp_path)
        assert out.returncode == 2
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith("error: study 'tiny' is a night that a nightly run is working on")
        assert line.endswith("wait for it, or pass --force")
        assert optuna.get_all_study_names(sqlite_url) == ["tiny"]
        forced = _tuner("delete", "tiny", "--yes", "--force", "--storage", sqlite_url, cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert optuna.get_all_study_names(sqlite_url) == []
    finally:
        lock.release()
        store.engine.dispose()


def test_delete_on_a_database_server(tmp_path: Path, tiny_spec: Any, server_url: str) -> None:
    import tuner

    # A server store keeps models and runs where the spec says (else ./tuner-artifacts).
    spec = tiny_spec(
        budget={"n_trials": 1, "max_epochs": 1},
        artifacts={"keep": "all", "path": str(tmp_path / "artifacts")},
    )
    tuner.run(spec, storage=server_url)
    models = tmp_path / "artifacts" / "tiny"
    runs = tmp_path / "artifacts" / "tensorboard" / "tiny"
    assert models.is_dir() and runs.is_dir()
    out = _tuner("delete", "tiny", "--yes", "--storage", server_url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "tiny" not in optuna.get_all_study_names(server_url)
    assert not models.exists() and not runs.exists()

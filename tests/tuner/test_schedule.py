from __future__ import annotations

import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tuner._cli import main

PASSWORD_URL = "postgresql+psycopg://tuner:s3cret-pw@db.example:5432/studies"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Done]:
    """``tuner schedule ...`` with a home of our own and no reachable systemd user manager."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "no-runtime"))
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")

    def run(*args: str, cwd: Path, path: str | None = None) -> Done:
        monkeypatch.chdir(cwd)
        if path is not None:
            monkeypatch.setenv("PATH", path)
        capsys.readouterr()
        code = main(["schedule", *args])
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


@pytest.fixture
def spec_file(tmp_path: Path, tiny_spec: Any) -> Path:
    path = tmp_path / "work" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(tiny_spec(budget={"n_trials": 1, "max_epochs": 1}), sort_keys=False)
    )
    return path


@pytest.fixture
def fake_crontab(tmp_path: Path) -> Path:
    """cron is not installed on this machine: a crontab that keeps its table in a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    table = tmp_path / "crontab.txt"
    table.write_text("0 5 * * * /usr/bin/backup-photos # someone else's job\n")
    script = bin_dir / "crontab"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-l" ]; then [ -f {table} ] && exec cat {table}; '
        'echo "no crontab for $USER" >&2; exit 1; fi\n'
        f'if [ "$1" = "-" ]; then exec cat > {table}; fi\n'
        "exit 2\n"
    )
    script.chmod(0o755)
    return table


def test_cron_line_is_absolute_and_keeps_the_password_out(
    tmp_path: Path, spec_file: Path, schedule: Callable[..., Done]
) -> None:
    config = tmp_path / "home" / ".config"
    done = schedule(
        "install",
        str(spec_file),
        "--at",
        "02:30",
        "--backend",
        "cron",
        "--print",
        "--storage",
        PASSWORD_URL,
        cwd=spec_file.parent,
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[0]
    assert line.startswith("30 2 * * * cd ")
    assert line.endswith("# tuner-nightly:tiny")
    tuner = Path(sys.executable).parent / "tuner"
    assert (
        f"{tuner} nightly {spec_file} --report-dir {spec_file.parent / 'nightly-reports'}" in line
    )
    assert f"cd {spec_file.parent} && " in line
    assert '--storage "$TUNER_STORAGE"' in line
    env_file = config / "tuner" / "nightly-tiny.env"
    assert f". {env_file} && export TUNER_STORAGE" in line
    assert "s3cret" not in done.stdout
    assert not env_file.exists(), "--print writes nothing"


def test_systemd_units_install_show_and_remove(
    tmp_path: Path, spec_file: Path, schedule: Callable[..., Done]
) -> None:
    config = tmp_path / "home" / ".config"
    cwd = spec_file.parent
    done = schedule(
        "install",
        str(spec_file),
        "--at",
        "23:05",
        "--backend",
        "systemd",
        "--storage",
        PASSWORD_URL,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    units = config / "systemd" / "user"
    service = (units / "tuner-nightly-tiny.service").read_text()
    timer = (units / "tuner-nightly-tiny.timer").read_text()
    assert "OnCalendar=*-*-* 23:05:00" in timer
    assert "Persistent=true" in timer
    assert "Unit=tuner-nightly-tiny.service" in timer and "WantedBy=timers.target" in timer
    assert "Type=oneshot" in service
    assert f"WorkingDirectory={cwd}" in service
    tuner = Path(sys.executable).parent / "tuner"
    assert (
        f"ExecStart={tuner} nightly {spec_file} --report-dir {cwd / 'nightly-reports'} "
        "--storage ${TUNER_STORAGE}" in service
    )
    env_file = config / "tuner" / "nightly-tiny.env"
    assert f"EnvironmentFile={env_file}" in service
    assert "s3cret" not in service + timer + done.stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert PASSWORD_URL in env_file.read_text()
    # No user manager here: install says exactly what to run.
    assert "systemctl --user enable --now tuner-nightly-tiny.timer" in done.stdout

    shown = schedule("show", cwd=cwd)
    assert shown.returncode == 0
    assert "tuner-nightly-tiny.timer at *-*-* 23:05:00" in shown.stdout

    removed = schedule("remove", str(spec_file), "--backend", "systemd", cwd=cwd)
    assert removed.returncode == 0, removed.stderr
    assert not (units / "tuner-nightly-tiny.timer").exists()
    assert not (units / "tuner-nightly-tiny.service").exists()
    assert not env_file.exists()
    assert "no nightly sweep" in schedule("show", "tiny", cwd=cwd).stdout


def test_cron_install_says_clearly_when_cron_is_missing(
    tmp_path: Path, spec_file: Path, schedule: Callable[..., Done]
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = schedule(
        "install",
        str(spec_file),
        "--at",
        "02:30",
        "--backend",
        "cron",
        cwd=tmp_path,
        path=str(empty),
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: cron is not installed here ('crontab' is not on PATH); install cron, use "
        "--backend systemd, or --print to see the line"
    )
    bad = schedule("install", str(spec_file), "--at", "25:00", "--print", cwd=tmp_path)
    assert bad.returncode == 2 and "--at: got '25:00'" in bad.stderr


def test_cron_install_then_the_line_runs_as_cron_would_run_it(
    tmp_path: Path, spec_file: Path, fake_crontab: Path, schedule: Callable[..., Done]
) -> None:
    path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    cwd = spec_file.parent
    url = f"sqlite:///{tmp_path / 'nights.db'}"
    for at in ("01:00", "04:15"):  # installing again replaces the line
        done = schedule("install", str(spec_file), "--at", at, "--storage", url, cwd=cwd, path=path)
        assert done.returncode == 0, done.stderr
    lines = fake_crontab.read_text().splitlines()
    assert lines[0] == "0 5 * * * /usr/bin/backup-photos # someone else's job"
    ours = [line for line in lines if line.endswith("# tuner-nightly:tiny")]
    assert len(ours) == 1 and ours[0].startswith("15 4 * * * ")
    shown = schedule("show", "tiny", cwd=cwd)
    assert ours[0] in shown.stdout

    # What cron does: the sixth field on is given to sh, in an almost empty environment.
    command = re.split(r"\s+", ours[0], maxsplit=5)[5].replace("\\%", "%")
    ran = subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path / 'home'}", "sh", "-c", command],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = cwd / "nightly-reports" / "tiny-nightly.log"
    assert ran.returncode == 0, log.read_text() if log.exists() else ran.stderr
    nights = [n for n in optuna.get_all_study_names(storage=url) if n.startswith("tiny-")]
    assert len(nights) == 1
    study = optuna.load_study(study_name=nights[0], storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert f"night {nights[0]}" in log.read_text()
    assert (cwd / "nightly-reports" / f"{nights[0]}.md").exists()

    removed = schedule("remove", "tiny", cwd=cwd)
    assert removed.returncode == 0, removed.stderr
    assert fake_crontab.read_text().splitlines() == [lines[0]]

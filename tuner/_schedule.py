"""``tuner schedule``: run a spec's nightly sweep every day, from cron or a systemd timer.

What runs is one shell-safe command line with absolute paths (the ``tuner`` of this
installation, the spec, the working folder, the report folder), so it works in the
bare environment a scheduler gives it. A storage URL never goes into the crontab or
the unit file: it is kept in an env file readable by the user alone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import SpecError, TunerError
from ._spec import _NAME, load_spec

_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Schedule:
    """What a scheduler runs for one spec, and when."""

    spec_name: str
    spec_path: Path
    workdir: Path
    tuner: list[str]
    hour: int
    minute: int
    report_dir: Path
    storage: str | None = None
    address: str | None = None

    @property
    def unit(self) -> str:
        return f"tuner-nightly-{self.spec_name}"

    @property
    def marker(self) -> str:
        return f"# tuner-nightly:{self.spec_name}"

    @property
    def env_file(self) -> Path:
        return env_file(self.spec_name)

    @property
    def log_file(self) -> Path:
        return self.report_dir / f"{self.spec_name}-nightly.log"

    def arguments(self, storage_ref: str) -> list[str]:
        """The command after the tuner executable; ``storage_ref`` stands for the URL."""
        if self.address:
            args = ["submit", str(self.spec_path), "--address", self.address]
        else:
            args = ["nightly", str(self.spec_path), "--report-dir", str(self.report_dir)]
        if self.storage:
            args += ["--storage", storage_ref]
        return args


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def env_file(spec_name: str) -> Path:
    return config_home() / "tuner" / f"nightly-{spec_name}.env"


def systemd_dir() -> Path:
    return config_home() / "systemd" / "user"


def tuner_command() -> list[str]:
    """The absolute path of this installation's ``tuner`` (or this Python running it)."""
    beside = Path(sys.executable).absolute().parent / "tuner"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("tuner")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "tuner._cli"]


def parse_at(at: str | None) -> tuple[int, int]:
    match = _AT.match(at or "")
    if not match:
        raise SpecError(f"--at: got {at!r}; expected HH:MM in 24-hour time, e.g. 02:30")
    return int(match[1]), int(match[2])


def spec_name_of(spec: str) -> str:
    """The spec's name, from its file, or ``spec`` itself when that is already a name."""
    try:
        return load_spec(spec).name
    except SpecError:
        if _NAME.match(spec) and not spec.endswith((".yaml", ".yml")):
            return spec
        raise


def plan(
    spec: str,
    *,
    at: str | None,
    storage: str | None = None,
    address: str | None = None,
    report_dir: str | None = None,
) -> Schedule:
    """Resolve everything the scheduler needs now, while we know where we are."""
    hour, minute = parse_at(at)
    loaded = load_spec(spec)
    path = Path(spec)
    if not path.exists():
        from ._spec import _shipped_spec

        path = _shipped_spec(spec) or path
    workdir = Path.cwd().absolute()
    return Schedule(
        spec_name=loaded.name,
        spec_path=path.absolute(),
        workdir=workdir,
        tuner=tuner_command(),
        hour=hour,
        minute=minute,
        report_dir=(workdir / (report_dir or "nightly-reports")).absolute(),
        storage=storage or os.environ.get("TUNER_STORAGE") or None,
        address=address,
    )


def command_line(s: Schedule) -> str:
    """The shell command the scheduler runs (``sh`` syntax)."""
    q = shlex.quote
    parts = [f"cd {q(str(s.workdir))}"]
    if s.storage:
        parts.append(f". {q(str(s.env_file))} && export TUNER_STORAGE")
    argv = [*s.tuner, *s.arguments("STORAGE_REF")]
    rendered = " ".join('"$TUNER_STORAGE"' if a == "STORAGE_REF" else q(a) for a in argv)
    parts.append(f"{rendered} >> {q(str(s.log_file))} 2>&1")
    return " && ".join(parts)


def cron_line(s: Schedule) -> str:
    # cron turns an unescaped % into a newline.
    return f"{s.minute} {s.hour} * * * {command_line(s).replace('%', chr(92) + '%')} {s.marker}"


def _systemd_quote(arg: str) -> str:
    if re.search(r"[\s\"'\\;$%]", arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'
    return arg


def systemd_units(s: Schedule) -> dict[str, str]:
    """``{file name: content}`` of the service and its timer."""
    argv = [*s.tuner, *s.arguments("${TUNER_STORAGE}")]
    exec_start = " ".join(a if a == "${TUNER_STORAGE}" else _systemd_quote(a) for a in argv)
    env_line = f"EnvironmentFile={s.env_file}\n" if s.storage else ""
    service = (
        "[Unit]\n"
        f"Description=tuner nightly sweep of {s.spec_name}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={s.workdir}\n"
        f"{env_line}"
        f"ExecStart={exec_start}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=tuner nightly sweep of {s.spec_name} at {s.hour:02d}:{s.minute:02d}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar=*-*-* {s.hour:02d}:{s.minute:02d}:00\n"
        "Persistent=true\n"
        f"Unit={s.unit}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{s.unit}.service": service, f"{s.unit}.timer": timer}


def default_scheduler() -> str:
    if shutil.which("crontab"):
        return "cron"
    return "systemd" if shutil.which("systemctl") else "cron"


def _write_env_file(s: Schedule) -> None:
    path = s.env_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"TUNER_STORAGE={shlex.quote(s.storage or '')}\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode on open


def _crontab() -> str:
    exe = shutil.which("crontab")
    if exe is None:
        raise TunerError(
            "cron is not installed here ('crontab' is not on PATH); install cron, use "
            "--backend systemd, or --print to see the line"
        )
    return exe


def _read_crontab(exe: str) -> list[str]:
    done = subprocess.run([exe, "-l"], capture_output=True, text=True)
    if done.returncode != 0:
        return []  # "no crontab for user"
    return done.stdout.splitlines()


def _write_crontab(exe: str, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n" if lines else ""
    done = subprocess.run([exe, "-"], input=text, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise TunerError(f"crontab refused the new table: {reason[0] if reason else 'no reason'}")


def _ours(line: str, spec_name: str | None) -> bool:
    marker = "# tuner-nightly:"
    if spec_name is None:
        return marker in line
    return line.rstrip().endswith(f"{marker}{spec_name}")


def _systemctl(*args: str) -> str | None:
    """Run ``systemctl --user ...``; return why it failed, or None."""
    exe = shutil.which("systemctl")
    if exe is None:
        return "systemctl is not on PATH"
    done = subprocess.run([exe, "--user", *args], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return reason[0] if reason else f"exit {done.returncode}"
    return None


def install(s: Schedule, scheduler: str) -> list[str]:
    """Install the schedule; return what was done, line by line."""
    s.report_dir.mkdir(parents=True, exist_ok=True)
    said = []
    if scheduler == "cron":
        exe = _crontab()
        if s.storage:
            _write_env_file(s)
            said.append(f"storage URL kept in {s.env_file} (mode 0600)")
        lines = [line for line in _read_crontab(exe) if not _ours(line, s.spec_name)]
        _write_crontab(exe, [*lines, cron_line(s)])
        said.append(f"crontab: {s.spec_name} runs every day at {s.hour:02d}:{s.minute:02d}")
        said.append(f"log: {s.log_file}; reports: {s.report_dir}")
        return said
    folder = systemd_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if s.storage:
        _write_env_file(s)
        said.append(f"storage URL kept in {s.env_file} (mode 0600)")
    for name, content in systemd_units(s).items():
        (folder / name).write_text(content)
        said.append(f"wrote {folder / name}")
    why = _systemctl("daemon-reload") or _systemctl("enable", "--now", f"{s.unit}.timer")
    if why is None:
        said.append(
            f"timer {s.unit}.timer enabled: every day at {s.hour:02d}:{s.minute:02d}; "
            f"reports in {s.report_dir}"
        )
        said.append(
            "to run while you are logged out: loginctl enable-linger $USER; "
            f"logs: journalctl --user -u {s.unit}"
        )
    else:
        said.append(
            f"systemd user manager not reachable here ({why}); to enable, run: "
            f"systemctl --user daemon-reload && systemctl --user enable --now {s.unit}.timer"
        )
    return said


def remove(spec_name: str, scheduler: str) -> list[str]:
    """Remove the schedule of ``spec_name``; return what was done."""
    said = []
    if scheduler == "cron":
        exe = _crontab()
        lines = _read_crontab(exe)
        kept = [line for line in lines if not _ours(line, spec_name)]
        if len(kept) != len(lines):
            _write_crontab(exe, kept)
            said.append(f"crontab: removed the nightly sweep of {spec_name}")
        else:
            said.append(f"crontab: no nightly sweep of {spec_name} was installed")
    else:
        folder = systemd_dir()
        unit = f"tuner-nightly-{spec_name}"
        files = [folder / f"{unit}.timer", folder / f"{unit}.service"]
        if any(f.exists() for f in files):
            why = _systemctl("disable", "--now", f"{unit}.timer")
            for f in files:
                if f.exists():
                    f.unlink()
                    said.append(f"removed {f}")
            why = why or _systemctl("daemon-reload")
            if why is not None:
                said.append(
                    f"systemd user manager not reachable here ({why}); if the timer was "
                    f"enabled elsewhere, run: systemctl --user disable --now {unit}.timer"
                )
        else:
            said.append(f"systemd: no timer {unit}.timer in {folder}")
    env = env_file(spec_name)
    if env.exists():
        env.unlink()
        said.append(f"removed {env}")
    return said


def show(spec_name: str | None = None) -> list[str]:
    """What is installed, for one spec or all: crontab lines and systemd timers."""
    out = []
    exe = shutil.which("crontab")
    if exe is None:
        out.append("cron: not installed here")
    else:
        for line in _read_crontab(exe):
            if _ours(line, spec_name):
                out.append(f"cron: {line}")
    folder = systemd_dir()
    pattern = f"tuner-nightly-{spec_name}.timer" if spec_name else "tuner-nightly-*.timer"
    for timer in sorted(folder.glob(pattern)) if folder.exists() else []:
        text = timer.read_text()
        when = next(
            (x.split("=", 1)[1] for x in text.splitlines() if x.startswith("OnCalendar=")), "?"
        )
        service = timer.with_suffix(".service")
        command = ""
        if service.exists():
            command = next(
                (
                    x.split("=", 1)[1]
                    for x in service.read_text().splitlines()
                    if x.startswith("ExecStart=")
                ),
                "",
            )
        out.append(f"systemd: {timer.name} at {when}: {command}")
    if len(out) == (1 if exe is None else 0):
        out.append(f"no nightly sweep{' of ' + spec_name if spec_name else ''} is scheduled")
    return out

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner._cli_dashboard import app_path, dashboard_command
from tuner.dashboard._views import trials as trial_views
from tuner.storage import open_storage, read_records

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _tuner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner._cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_missing_store_is_one_line_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing.db"
    done = _tuner("dashboard", "--storage", f"sqlite:///{path}", "--port", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: no study store at 'sqlite:///{path}': {path} does not exist"
    ]
    assert not path.exists()


def test_a_file_that_is_no_store_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    done = _tuner("dashboard", "--storage", f"sqlite:///{path}", "--port", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no study store" in lines[0]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_password_env_must_be_set(dashboard_store: str) -> None:
    done = _tuner(
        "dashboard", "--storage", dashboard_store, "--password-env", "TUNER_TEST_UNSET_PASSWORD"
    )
    assert done.returncode == 2
    assert "--password-env: environment variable TUNER_TEST_UNSET_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr


def test_command_binds_loopback_and_keeps_the_url_off_argv() -> None:
    command = dashboard_command("127.0.0.1", 8600)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == app_path() and app_path().is_file()
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.headless") + 1] == "true"
    assert not any("sqlite" in part or "postgres" in part for part in command)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(dashboard_store: str) -> Iterator[str]:
    """``tuner dashboard`` on a free loopback port, stopped afterwards."""
    port = _free_port()
    env = {**os.environ}
    env.pop("TUNER_DASHBOARD_PASSWORD", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner._cli",
            "dashboard",
            "--storage",
            dashboard_store,
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"tuner dashboard exited with {proc.returncode}: {out}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("tuner dashboard did not listen within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        # The CLI and the Streamlit server it started share one process group.
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


@pytest.mark.browser
def test_study_page_in_chromium(served: str, dashboard_store: str) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{served}/?study=tiny", timeout=60_000)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            chart.wait_for(timeout=60_000)
            # The Pareto chart has drawn its points and its legend.
            page.locator('[data-testid="stPlotlyChart"] .scatterlayer .point').first.wait_for(
                timeout=30_000
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "study_page.png"), full_page=True)
            legend = page.locator('[data-testid="stPlotlyChart"] .legendtext').all_text_contents()
            assert any(t.startswith("Pareto front") for t in legend), legend
            body = page.inner_text("body")
            assert "Deployment budget" in body and "Best trial overall" in body
            assert "tuner export tiny --trial" in body
            # A trial's page says how its shipped model was compressed and recovered.
            records = read_records(open_storage(dashboard_store, heartbeat=False), "tiny")
            done = next(r for r in records if r.state == "COMPLETE")
            page.goto(f"{served}/?study=tiny&trial={done.number}", timeout=60_000)
            line = trial_views.recovery_text(done) or ""
            page.get_by_text(line.split(":")[0] + ":", exact=False).first.wait_for(timeout=60_000)
            assert line in page.inner_text("body")
        finally:
            browser.close()

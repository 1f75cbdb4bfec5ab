"""Many workers of separate drivers on one study of a database server, and lost connections."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import yaml

from tuner.storage import count_states, open_storage

pytestmark = pytest.mark.slow

TUNER = [sys.executable, "-m", "tuner._cli"]


def _driver(spec: Path, url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TUNER_HEARTBEAT_INTERVAL_S": "1",
        "TUNER_GRACE_PERIOD_S": "3",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [*TUNER, "run", str(spec), "--storage", url, "--json", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _max_in_flight(study: optuna.Study) -> int:
    events = []
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            events += [(t.datetime_start, 1), (t.datetime_complete, -1)]
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def _assert_exact(
    url: str, name: str, budget: int, allowed: tuple[str, ...] = ("not run",)
) -> optuna.Study:
    counts = count_states(open_storage(url, heartbeat=False), name)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == budget, counts
    assert counts.get("RUNNING", 0) == 0 and counts.get("WAITING", 0) == 0, counts
    study = optuna.load_study(study_name=name, storage=url)
    for t in study.trials:
        if t.state == optuna.trial.TrialState.FAIL:
            # Trials started when others already filled the budget are failed on purpose.
            assert (t.user_attrs.get("error") or "").startswith(allowed), t.user_attrs
    return study


def test_eight_workers_of_two_drivers_finish_exactly_the_budget(
    server_url: str, tmp_path: Path, slow_spec: Any
) -> None:
    budget = 16
    spec = tmp_path / "spec.yaml"
    # Every trial keeps its model in the store: two drivers make its table at once, and
    # eight workers write to it at once.
    artifacts = {"keep": "all", "in_store": True}
    spec.write_text(
        yaml.safe_dump(slow_spec(n_trials=budget, epochs=2, epoch_s=0.5, artifacts=artifacts))
    )
    drivers = [
        _driver(spec, server_url, "--workers", "4", "--backend", "local", cwd=tmp_path)
        for _ in range(2)
    ]
    try:
        outputs = [d.communicate(timeout=300)[0] for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    for d, out in zip(drivers, outputs):
        assert d.returncode == 0, out[-3000:]
        assert "server takes" not in out, "a server with room for the workers is not warned of"
    study = _assert_exact(server_url, "slow", budget)
    assert 1 <= _max_in_flight(study) <= 8
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    statuses = {t.user_attrs.get("artifact") for t in complete}
    assert statuses == {"kept"}, statuses
    engine = sqlalchemy.create_engine(server_url)
    with engine.connect() as conn:
        stored = set(
            conn.execute(sqlalchemy.text("SELECT artifact_id FROM tuner_artifacts")).scalars()
        )
    engine.dispose()
    runs = {i for i in stored if i.startswith("tensorboard-")}
    assert stored - runs == {t.user_attrs["artifact_id"] for t in complete}
    # Every trial that ran kept its TensorBoard run there too, once.
    assert {f"tensorboard-{t._trial_id}" for t in complete} <= runs


def _terminate_connections(url: str) -> int:
    database = sqlalchemy.engine.make_url(url).database
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return len(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_sweep_survives_lost_database_connections_or_resumes(
    postgres_url: str, tmp_path: Path, slow_spec: Any
) -> None:
    # (MySQL's dropped connections are played by test_outage's proxy, in one process.)
    budget = 8
    spec_data = slow_spec(n_trials=budget, epochs=2, epoch_s=0.5)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_data))
    run_dir = Path(spec_data["search_space"]["run_dir"])
    driver = _driver(spec, postgres_url, "--workers", "2", "--backend", "local", cwd=tmp_path)
    try:
        deadline = time.time() + 180
        while len(list(run_dir.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        terminated = _terminate_connections(postgres_url)
        time.sleep(1.5)
        terminated += _terminate_connections(postgres_url)
        assert terminated > 0, "the workers held connections to the study's database"
        out = driver.communicate(timeout=240)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
    if driver.returncode != 0:
        # Stopped: one clear line, no traceback, and running it again resumes.
        assert "Traceback" not in out and "error:" in out, out[-3000:]
        again = _driver(spec, postgres_url, "--workers", "2", "--backend", "local", cwd=tmp_path)
        out = again.communicate(timeout=240)[0]
        assert again.returncode == 0, out[-3000:]
    # A trial whose connection was cut while it wrote its result failed, and so did one
    # created just before its worker's connection was cut (it never sent a heartbeat);
    # each was replaced.
    _assert_exact(
        postgres_url,
        "slow",
        budget,
        allowed=("not run", "StorageInternalError", "its worker lost the study store"),
    )


@pytest.fixture
def limited_url(postgres_url: str) -> Any:
    """``limited_url(n)``: the test database as a role of its own that the server lets in at
    most ``n`` times at once; past that it refuses with its own "too many connections"
    message, as a server whose ``max_connections`` is used up does."""
    import uuid

    # The server checks the password before the limit: the roles get the test's own.
    password = sqlalchemy.engine.make_url(postgres_url).password
    secret = "PASSWORD '" + str(password).replace("'", "''") + "' " if password else ""
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    roles: list[str] = []

    def make(limit: int) -> str:
        role = f"tuner_limited_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN {secret}CONNECTION LIMIT {limit}')
            conn.exec_driver_sql(f'GRANT CREATE ON SCHEMA public TO "{role}"')
        roles.append(role)
        return (
            sqlalchemy.engine.make_url(postgres_url)
            .set(username=role)
            .render_as_string(hide_password=False)
        )

    try:
        yield make
    finally:
        with admin.connect() as conn:
            for role in roles:
                conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
                conn.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


@pytest.fixture
def refused_url(limited_url: Any) -> str:
    """A role the server lets in zero times: every connection is refused."""
    return str(limited_url(0))


def _jobs(tiny_spec: Any, study_url: str, urls: list[str], budget: int) -> list[Any]:
    """The study "full" created at ``study_url``, and one worker job per URL in ``urls``."""
    from tuner._dispatch import WorkerJob
    from tuner._run import prepare_study
    from tuner._spec import spec_from_dict

    spec = spec_from_dict(tiny_spec("full", budget={"n_trials": budget, "max_epochs": 2}))
    storage = open_storage(study_url)
    prepare_study(spec, storage, "full")
    storage.engine.dispose()
    return [
        WorkerJob(
            spec=spec.to_dict(),
            storage_url=url,
            study_name="full",
            n_trials=budget,
            worker_index=index,
        )  # fmt: skip
        for index, url in enumerate(urls)
    ]


@pytest.mark.postgres
def test_workers_a_full_server_refuses_say_why_and_what_to_do(
    postgres_url: str, refused_url: str, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner._dispatch import LocalProcessDispatcher
    from tuner.storage import StoreUnavailable

    monkeypatch.setenv("TUNER_STORE_RETRY_S", "2")
    jobs = _jobs(tiny_spec, postgres_url, [refused_url, refused_url], budget=2)
    with pytest.raises(StoreUnavailable) as raised:
        LocalProcessDispatcher().run(jobs)
    message = str(raised.value)
    assert message.startswith("every worker gave up: study store"), message
    assert "unreachable for 2 s" in message
    assert "too many connections for role" in message, "the server's own words"
    assert "run fewer workers, or raise its connection limit" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_worker_the_server_refuses_is_reported_and_the_rest_meet_the_budget(
    backend: str,
    postgres_url: str,
    refused_url: str,
    tiny_spec: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    from tuner._run import make_dispatcher

    if backend == "ray":
        request.getfixturevalue("ray_local")
    # The window reaches Ray's workers too: tuner forwards it with the run.
    monkeypatch.setenv("TUNER_STORE_RETRY_S", "2")
    jobs = _jobs(tiny_spec, postgres_url, [postgres_url, refused_url], budget=3)
    make_dispatcher(backend).run(jobs)
    said = [line for line in capfd.readouterr().err.splitlines() if "stopped early" in line]
    assert len(said) == 1, said
    assert said[0].startswith("tuner: 1 of 2 workers stopped early: study store"), said[0]
    assert "too many connections for role" in said[0]
    _assert_exact(postgres_url, "full", 3)


def test_a_run_on_a_server_nearly_out_of_connections_is_warned_before_it_starts(
    limited_url: Any, tmp_path: Path, tiny_spec: Any
) -> None:
    url = limited_url(3)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec("crowded")))
    env = {**os.environ, "TUNER_STORE_RETRY_S": "2", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [*TUNER, "run", str(spec), "--storage", url, "--workers", "3", "--backend", "local"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    warned = [
        line for line in done.stderr.splitlines() if "server takes" in line and "need" in line
    ]
    assert len(warned) == 1, done.stderr[-3000:]
    assert warned[0].startswith("tuner: the database server takes "), warned[0]
    assert "(the role's limit 3) and 3 workers need about 6" in warned[0], warned[0]
    assert "run fewer workers" in warned[0]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.mysql
def test_a_mysql_users_connection_limit_is_the_room_a_run_is_warned_of(
    mysql_url: str, mysql_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from tuner.storage import StoreUnavailable
    from tuner.storage._room import connection_room, room_warning

    database = sqlalchemy.engine.make_url(mysql_url).database
    user = f"tuner_lim_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(mysql_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 3"
        )
        conn.exec_driver_sql(f"GRANT ALL ON `{database}`.* TO '{user}'@'%%'")
    url = sqlalchemy.engine.make_url(mysql_url).set(username=user, password="pw")
    monkeypatch.setenv("TUNER_STORE_RETRY_S", "1")
    storage = open_storage(url.render_as_string(hide_password=False), heartbeat=False)
    try:
        room = connection_room(storage)
        assert room is not None and room.limit == "the user's limit 3"
        assert 0 <= room.free <= 2  # this store's own connection counts
        warned = room_warning(room, 3)
        assert warned is not None and "(the user's limit 3) and 3 workers need about 6" in warned
        # The server's own limit where the user has none.
        plain = open_storage(mysql_url, heartbeat=False)
        wide = connection_room(plain)
        assert wide is not None and wide.limit.startswith("max_connections ")
        assert room_warning(wide, 1) is None
        plain.engine.dispose()
        # Past the limit, the server's refusal is told with what to do about it.
        held = [storage.engine.connect() for _ in range(3)]
        try:
            with pytest.raises(StoreUnavailable) as refused:
                open_storage(url.render_as_string(hide_password=False), heartbeat=False)
        finally:
            for conn in held:
                conn.close()
        message = str(refused.value)
        assert "max_user_connections" in message and "run fewer workers" in message, message
        assert "\n" not in message and ":pw@" not in message
    finally:
        storage.engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()

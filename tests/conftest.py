from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Unset or empty (which Ray also reads as off): the tests' Ray and tuner agree on "disabled".
if not os.environ.get("RAY_AUTH_MODE"):
    os.environ["RAY_AUTH_MODE"] = "disabled"
# One compute thread per process: the suite runs two test processes (pytest-xdist) and the
# trials they start on a machine with few cores, where more threads than cores only wait on
# each other (measured: 13% less time for the compression tests). Set before torch loads;
# latency measurements set their own thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Kept trial models go to a throwaway folder, never into the checkout. The process that
# makes it (pytest's controller, whose workers inherit the variable) removes it at exit.
if "TUNER_ARTIFACTS" not in os.environ:
    os.environ["TUNER_ARTIFACTS"] = tempfile.mkdtemp(prefix="tuner-artifacts-")
    atexit.register(shutil.rmtree, os.environ["TUNER_ARTIFACTS"], ignore_errors=True)

# User workloads with residual and attention models (``user_models:residual_cnn``, ...), as a
# user's own module on the path; tests/tuner also holds the TCP proxy that plays outages.
sys.path.insert(0, str(Path(__file__).parent / "tuner"))

PG_ADMIN_URL = os.environ.get(
    "TUNER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("TUNER_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")


def tiny_spec_dict(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A digits study that trains for a second or two per trial."""
    spec: dict[str, Any] = {
        "name": name,
        "workload": "digits-mlp",
        "objectives": {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
            "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
            "batch_size": {"type": "categorical", "choices": [64, 128]},
            "hidden_units": 32,
            "prune_threshold": {"type": "float", "low": 0.0, "high": 0.9},
            # Float only: a process's first int8 model costs seconds of torch.export warm-up,
            # paid again by every worker process. Tests of int8 ask for it.
            "quantize": {"type": "categorical", "choices": ["none"]},
        },
        "sampler": {"name": "random", "seed": 1},
        "budget": {"n_trials": 3, "max_epochs": 2},
        # int8 runs uncompiled: torch.compile costs seconds per trial, and the compiled path
        # has its own tests (test_shipping, test_measure).
        "measure": {"batch_size": 8, "warmup": 2, "repeats": 5, "compile": "never"},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def tiny_spec() -> Any:
    """Factory of tiny spec mappings: ``tiny_spec(name, **overrides)``."""
    return tiny_spec_dict


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


# A name no real processor reports, so that it differs from this machine's wherever tests run.
OTHER_MACHINE = "Example Vendor CPU 9000"


def _copy_with_trials(
    url: str,
    study_name: str,
    to_url: str,
    added: list[tuple[tuple[float, ...], dict[str, Any]]],
) -> None:
    """A copy of a finished study (into ``to_url``) with more trials of its first complete
    trial's settings, as other workers would have recorded them: each ``(scale, attrs)``
    multiplies that trial's objective values by ``scale``, one factor each, and sets
    ``attrs`` over its user attrs. What another machine, or the same one at another speed,
    records is written into a real store as Optuna would write it from that worker."""
    import optuna

    optuna.copy_study(from_study_name=study_name, from_storage=url, to_storage=to_url)
    study = optuna.load_study(study_name=study_name, storage=to_url)
    first = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    for scale, attrs in added:
        study.add_trial(
            optuna.trial.create_trial(
                params=first.params,
                distributions=first.distributions,
                values=[v * f for v, f in zip(first.values, scale, strict=True)],
                user_attrs={**first.user_attrs, **attrs},
            )
        )


@pytest.fixture
def copy_with_trials() -> Any:
    """``copy_with_trials(url, study, to_url, added)``: see :func:`_copy_with_trials`."""
    return _copy_with_trials


@pytest.fixture
def measured_elsewhere() -> Any:
    """``measured_elsewhere(url, study, to_url)``: a copy of the study with one more trial
    timed on :data:`OTHER_MACHINE`, a little less accurate and half the size and latency
    (so that both are on the front)."""

    def copy(url: str, study_name: str, to_url: str) -> None:
        _copy_with_trials(
            url, study_name, to_url, [((0.99, 0.5, 0.5), {"latency_machine": OTHER_MACHINE})]
        )

    return copy


def _server_available(url: str) -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def _server(url: str, name: str, skip_var: str) -> str:
    """``url`` where its server answers; else the test fails, or skips where ``skip_var``
    says so."""
    if not _server_available(url):
        if os.environ.get(skip_var) == "1":
            pytest.skip(f"{name} not reachable and {skip_var}=1")
        pytest.fail(f"{name} is not reachable at {url} (set {skip_var}=1 to skip)")
    return url


@contextlib.contextmanager
def _fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` (an admin URL), dropped afterwards."""
    import sqlalchemy

    name = f"tuner_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    postgres = admin.dialect.name == "postgresql"
    quoted = f'"{name}"' if postgres else f"`{name}`"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    url = sqlalchemy.engine.make_url(server).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if postgres else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    return _server(PG_ADMIN_URL, "PostgreSQL", "TUNER_SKIP_POSTGRES")


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def mysql_server() -> str:
    return _server(MYSQL_ADMIN_URL, "MySQL/MariaDB", "TUNER_SKIP_MYSQL")


@pytest.fixture
def mysql_url(mysql_server: str) -> Iterator[str]:
    """A fresh, empty MySQL/MariaDB database for one test, dropped afterwards."""
    with _fresh_database(mysql_server) as url:
        yield url


_SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=_SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each database server tuner supports for shared stores."""
    return str(request.getfixturevalue(f"{request.param}_url"))


RAY_TEST_CPUS = 8
RAY_TEST_GPUS = 2


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """One local Ray for the whole test session, with 8 CPUs and 2 logical GPUs.

    The GPUs are logical: Ray schedules and packs trials on them and sets
    ``CUDA_VISIBLE_DEVICES``, while the trials themselves run on the CPU.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=RAY_TEST_CPUS,
        num_gpus=RAY_TEST_GPUS,
        include_dashboard=False,
        logging_level="WARNING",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


SLOW_WORKLOAD = '''
import os
import time
from pathlib import Path

import torch
from torch import nn

import tuner


def slow(params, ctx):
    """Sleeps ``epoch_s`` per epoch, so a test can act while a trial is running.

    ``run_dir`` receives one file per trial start holding the worker's pid. With
    ``barrier`` set, a trial waits until that many trials have started (at most
    ``barrier_s``) and records how many it saw.
    """
    run_dir = Path(params["run_dir"])
    (run_dir / f"{ctx.trial_number}.{os.getpid()}").write_text(str(os.getpid()))
    seen = 0
    barrier = int(params.get("barrier", 0))
    if barrier:
        deadline = time.time() + float(params.get("barrier_s", 120))
        while time.time() < deadline:
            seen = len(list(run_dir.iterdir()))
            if seen >= barrier:
                break
            time.sleep(0.1)
    for epoch in range(ctx.max_epochs):
        time.sleep(float(params["epoch_s"]))
        ctx.report(epoch, val_accuracy=0.5 + 0.01 * epoch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2))
    x = torch.randn(8, 4)
    y = torch.randint(0, 2, (8,))
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return tuner.TrainedModel(
        model=model,
        val_data=(x, y),
        test_data=(x, y),
        metrics={
            "started_together": float(seen),
            "visible_gpus": float(len([g for g in gpu.split(",") if g])),
            "gpu_id": float(gpu) if gpu and "," not in gpu else -1.0,
        },
    )


slow.metrics = ["started_together", "visible_gpus", "gpu_id"]
'''


@pytest.fixture
def slow_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Factory of specs whose trials sleep ``epoch_s`` per epoch (workload ``slow_workload:slow``).

    Trial starts are recorded as files ``<trial>.<pid>`` in the returned spec's
    ``search_space.run_dir``.
    """
    (tmp_path / "slow_workload.py").write_text(SLOW_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "trial-starts"
    run_dir.mkdir()

    def make(
        name: str = "slow",
        *,
        n_trials: int = 4,
        epochs: int = 2,
        epoch_s: float = 0.5,
        **extra: Any,
    ) -> dict[str, Any]:
        space: dict[str, Any] = {
            "lr": {"type": "float", "low": 0.01, "high": 0.1},
            "run_dir": str(run_dir),
            "epoch_s": epoch_s,
        }
        space.update(extra.pop("search_space", {}))
        spec: dict[str, Any] = {
            "name": name,
            "workload": "slow_workload:slow",
            "objectives": {"accuracy": "maximize"},
            "search_space": space,
            "sampler": {"name": "random", "seed": 0},
            "budget": {"n_trials": n_trials, "max_epochs": epochs},
            "measure": {"batch_size": 2, "warmup": 1, "repeats": 3},
        }
        spec.update(extra)
        return spec

    return make


SECRET = "s3cret-pw"


@pytest.fixture
def mysql_secret_url(mysql_url: str, mysql_server: str) -> Iterator[str]:
    """This test's MySQL database as a user with the password ``SECRET`` (the server
    checks passwords, unlike the PostgreSQL test server), dropped afterwards."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(mysql_url)
    user = f"tuner_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(mysql_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{SECRET}'")
        conn.exec_driver_sql(f"GRANT ALL ON `{parsed.database}`.* TO '{user}'@'%%'")
    try:
        yield parsed.set(username=user, password=SECRET).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()


@pytest.fixture(params=_SERVERS)
def server_proxy(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A TCP proxy in front of a fresh database on each database server, to play an
    outage with; ``secret_url`` goes through it with the password ``SECRET``."""
    import sqlalchemy
    from tcp_proxy import TcpProxy

    if request.param == "postgres":
        direct = request.getfixturevalue("postgres_url")
        # The test server trusts local connections, so any password gets in.
        secret = sqlalchemy.engine.make_url(direct).set(password=SECRET)
        secret_url = secret.render_as_string(hide_password=False)
    else:
        direct = request.getfixturevalue("mysql_url")
        secret_url = request.getfixturevalue("mysql_secret_url")
    parsed = sqlalchemy.engine.make_url(direct)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxy.direct_url = direct
    proxy.proxied_url = proxy.url(direct)
    proxy.secret_url = proxy.url(secret_url)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[Any]:
    """A TCP proxy in front of this test's PostgreSQL database; ``pg_proxy.url`` goes
    through it, ``pg_proxy.cut()`` / ``outage(s)`` / ``restore()`` play a database outage."""
    import sqlalchemy
    from tcp_proxy import TcpProxy

    parsed = sqlalchemy.engine.make_url(postgres_url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxy.direct_url = postgres_url
    proxy.proxied_url = proxy.url(postgres_url)
    try:
        yield proxy
    finally:
        proxy.close()

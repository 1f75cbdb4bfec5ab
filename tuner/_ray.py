"""The Ray backend: one long-lived Ray actor per worker, each running the worker loop.

Ray places the actors with the CPUs and GPUs the spec asks for (fractional GPUs pack
several trials on one device; Ray sets ``CUDA_VISIBLE_DEVICES`` so a trial sees only
its own). Ray's retries are off: an actor that dies is not restarted and its method is
not re-run. The study store owns recovery instead: the dead worker's trial stops
sending heartbeats, another worker fails it after the grace period and Optuna enqueues
a copy that the next free worker runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from ._dispatch import Dispatcher, WorkerGaveUp, WorkerJob, cpu_count, say_stopped_early, work
from ._exceptions import DispatchError, first_line
from ._submit import EXCLUDES
from ._target import missing_target, serving
from .storage import StoreUnavailable
from .storage._budget import WAIT_VAR as BUDGET_WAIT_VAR
from .storage._outage import WINDOW_VAR as OUTAGE_WINDOW_VAR
from .storage._rdb import GRACE_PERIOD_VAR, HEARTBEAT_INTERVAL_VAR

AUTH_MODE_VAR = "RAY_AUTH_MODE"
AUTH_MODES = ("token", "disabled")
# Ray 2.60 turns token authentication on for a new local Ray when the mode is unset;
# tuner says so explicitly, so the driver, its workers and `tuner submit` agree.
DEFAULT_AUTH_MODE = "token"
# Settings a worker must share with its driver, wherever the worker runs.
FORWARDED_ENV = (HEARTBEAT_INTERVAL_VAR, GRACE_PERIOD_VAR, OUTAGE_WINDOW_VAR, BUDGET_WAIT_VAR)

# Set in the driver of a Ray job (`tuner submit`): the job shipped its folder already.
_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"

_OK = "ok"
_GAVE_UP = "gave up"
_STORE_DOWN = "store down: "


def auth_mode() -> str:
    """Ray's token authentication mode, set in the environment if it was not."""
    mode = os.environ.get(AUTH_MODE_VAR)
    if mode is None:
        os.environ[AUTH_MODE_VAR] = DEFAULT_AUTH_MODE
        return DEFAULT_AUTH_MODE
    if mode == "":
        # Ray reads a variable that is set but empty as "not token": authentication off.
        # Said plainly, so every process tuner starts agrees with a cluster started so.
        os.environ[AUTH_MODE_VAR] = "disabled"
        return "disabled"
    if mode.lower() not in AUTH_MODES:
        raise DispatchError(
            f"{AUTH_MODE_VAR}: got {mode!r}; expected one of {', '.join(AUTH_MODES)} "
            "(the same value the Ray cluster was started with)"
        )
    return mode.lower()


# The folder this process shipped when it joined a cluster (Ray stays joined after a run,
# so a later run in the process finds its workers in that copy).
_shipped: str | None = None


def _shipped_folder(ship: bool) -> str | None:
    """The folder a driver joining a cluster ships to its nodes: the one it runs in (where
    the CLI imports a workload from), unless it runs in a Ray job that shipped it."""
    return None if not ship or _JOB_CONFIG_VAR in os.environ else os.getcwd()


def _check_reachable(address: str, field: str, timeout_s: float = 5.0) -> None:
    """One line at once for a cluster address where nothing listens (Ray itself retries
    for minutes before it gives up)."""
    import socket

    if address.startswith(("http://", "https://")):
        raise DispatchError(
            f"{field}: {address} is a Ray dashboard's address (what tuner submit takes); "
            "expected the cluster's own, HEAD:6379 (or ray://HEAD:10001)"
        )
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        expected = (
            "the Ray Client address of a running cluster (`ray start --head` serves it on "
            "port 10001)"
            if client
            else f"the head of a running Ray cluster (`ray start --head --port {port}`)"
        )
        raise DispatchError(
            f"{field}: nothing answers at {address} ({reason}); expected {expected}"
        ) from exc


def _worker_paths(workload: str, shipped: str | None = None) -> list[str]:
    """Folders a worker needs on ``sys.path`` to import a user workload: this one, and the
    one the workload's module was found in. Where this folder was ``shipped``, workers run
    in the copy Ray unpacked for them: a folder inside it is given relative to it."""
    paths = [] if shipped else [os.getcwd()]
    module = workload.split(":", 1)[0] if ":" in workload else ""
    if module:
        top = module.split(".", 1)[0]
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin and found.origin not in ("built-in", "frozen"):
            folder = os.path.dirname(found.origin)
            if found.submodule_search_locations:  # a package: its parent holds it
                folder = os.path.dirname(folder)
            inside = shipped and os.path.commonpath([os.path.abspath(folder), shipped]) == shipped
            if inside:
                folder = os.path.relpath(folder, shipped)
            if folder != ".":
                paths.append(folder)
    return paths


def join_cluster(address: str | None, *, why: str, instead: str, ship: bool = True) -> Any:
    """Ray, joined to the cluster at ``address`` (else ``$RAY_ADDRESS``) as a run joins it
    (this folder shipped), or the Ray this process joined already.

    Raises:
        DispatchError: no address is given, or the cluster cannot be joined; ``why`` says
            what needs the cluster and ``instead`` what else would do.
    """
    import ray

    if ray.is_initialized():
        return ray
    dispatcher = RayDispatcher(address, ship=ship)
    if dispatcher._address is None:
        raise DispatchError(
            f"--address: {why}; expected the Ray cluster whose node offers it (--address "
            f"HEAD:6379, or RAY_ADDRESS), {instead}"
        )
    return dispatcher._connect_to(dispatcher._address)


class _Worker:
    """Body of the Ray actor: the worker loop, with the store and study held for its life."""

    def run(self, job: WorkerJob, paths: list[str]) -> str:
        for path in map(os.path.abspath, paths):  # relative: in the shipped folder
            if os.path.isdir(path) and path not in sys.path:
                sys.path.insert(0, path)
        try:
            work(job)
        except WorkerGaveUp as exc:
            print(f"tuner worker {job.worker_index}: {exc}", file=sys.stderr)
            return _GAVE_UP
        except StoreUnavailable as exc:
            return _STORE_DOWN + str(exc)  # the driver says it, once
        return _OK

    def pid(self) -> int:
        return os.getpid()


class RayDispatcher(Dispatcher):
    """Workers as Ray actors, on a local Ray or a cluster.

    Args:
        address: Ray cluster to join (``ray://...`` or ``host:port``); else
            ``$RAY_ADDRESS``; else a local Ray is started and stopped afterwards.
        num_cpus: CPUs of the local Ray (default: enough for every worker).
        num_gpus: GPUs of the local Ray (default: detected). Logical GPUs work too.
        ship: joining a cluster, ship this folder to its nodes (Ray's ``working_dir``).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        ship: bool = True,
    ) -> None:
        self._address = address or os.environ.get("RAY_ADDRESS") or None
        self._address_field = "--address" if address else "RAY_ADDRESS"
        self._num_cpus = num_cpus
        self._num_gpus = num_gpus
        self._started_ray = False
        self._ship = ship
        self._actors: list[Any] = []
        self._pending: dict[Any, Any] = {}
        self._results: list[Any] = []
        self._died = 0

    def run(self, jobs: list[WorkerJob], *, on_tick: Any = None) -> None:
        try:
            super().run(jobs, on_tick=on_tick)
        finally:
            self._release()

    def _connect(self, jobs: list[WorkerJob]) -> Any:
        mode = auth_mode()
        import ray

        if ray.is_initialized():
            return ray
        if self._address:
            return self._connect_to(self._address)
        spec = jobs[0].spec
        cpus = float(spec.get("resources", {}).get("cpus", 1))
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": "WARNING",
            "log_to_driver": True,
        }
        global _shipped
        _shipped = None  # a local Ray ships nothing: its workers import from this folder
        options["address"] = "local"
        options["num_cpus"] = self._num_cpus or max(cpu_count(), math.ceil(len(jobs) * cpus - 1e-9))
        if self._num_gpus is not None:
            options["num_gpus"] = self._num_gpus
        self._init(ray, options, mode, "a local Ray")
        self._started_ray = True
        return ray

    def _connect_to(self, address: str) -> Any:
        """Join the cluster at ``address`` (once; later calls find Ray connected)."""
        mode = auth_mode()
        import ray

        if not ray.is_initialized():
            _check_reachable(address, self._address_field)
            options: dict[str, Any] = {
                "address": address,
                "include_dashboard": False,
                "logging_level": "WARNING",
                "log_to_driver": True,
            }
            folder = _shipped_folder(self._ship)
            if folder is not None:
                # Every node imports the workload (and the target its model classes) from a
                # copy of this folder, and trials run in it: nothing needs a shared disk.
                options["runtime_env"] = {"working_dir": folder, "excludes": list(EXCLUDES)}
                print(
                    f"tuner: shipping {folder} to the cluster (without .venv, .git, *.db and "
                    "*.sqlite files, tuner-artifacts, build outputs and what .gitignore "
                    "lists; --no-ship to not)",
                    file=sys.stderr,
                    flush=True,
                )
            self._init(ray, options, mode, address, folder)
            global _shipped
            _shipped = folder
        return ray

    @staticmethod
    def _init(
        ray: Any, options: dict[str, Any], mode: str, where: str, shipped: str | None = None
    ) -> None:
        import signal
        import threading

        # ray.init installs a SIGTERM handler that exits at once; the caller's (which stops
        # the workers and fails their trials first, and exits 143) is put back.
        main = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(**options)
        except Exception as exc:
            reason = first_line(exc)
            hint = ""
            if "auth" in reason.lower() or "token" in reason.lower():
                hint = f" ({AUTH_MODE_VAR} is {mode!r}; it must match the cluster's)"
            elif shipped and any(w in reason.lower() for w in ("package", "upload", "runtime env")):
                hint = (
                    f" (tuner ships the folder it runs in, {shipped}, to the cluster: list large "
                    "files in a .gitignore there, or run from a folder that holds the workload)"
                )
            raise DispatchError(f"cannot start or join {where}: {reason}{hint}") from exc
        finally:
            if callable(on_sigterm) or on_sigterm in (signal.SIG_DFL, signal.SIG_IGN):
                signal.signal(signal.SIGTERM, on_sigterm)

    def preflight(self, spec: Mapping[str, Any]) -> None:
        """Join the cluster (and ship this folder to it) before the store is touched, so
        that an unreachable cluster writes nothing; a ``measure.target`` needs a live node
        of the cluster that offers it."""
        if self._address:
            self._connect_to(self._address)
        target = (spec.get("measure") or {}).get("target")
        if not target:
            return
        import ray

        if ray.is_initialized():  # a Ray this process joined or started itself
            connected = ray
        elif self._address:
            connected = self._connect_to(self._address)
        else:
            raise DispatchError(
                f"measure.target: the local Ray that tuner starts has no node offering {target!r}; "
                "join the cluster that has one with --address (or set RAY_ADDRESS)"
            )
        if not serving(connected, target):
            raise DispatchError(missing_target(connected, target))

    def _launch(self, jobs: list[WorkerJob]) -> None:
        ray = self._connect(jobs)
        resources = jobs[0].spec.get("resources", {})
        cpus = float(resources.get("cpus", 1))
        gpus = float(resources.get("gpus", 0))
        if gpus > 0 and self._started_ray and ray.cluster_resources().get("GPU", 0) < gpus:
            raise DispatchError(
                f"resources.gpus: the spec asks for {gpus:g} GPU per trial but this machine's Ray "
                "has none; set resources.gpus to 0, or use --address to join a cluster with GPUs"
            )
        self.preflight(jobs[0].spec)
        env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
        actor_class = ray.remote(_Worker)
        paths = _worker_paths(str(jobs[0].spec.get("workload", "")), _shipped)
        for job in jobs:
            options: dict[str, Any] = {
                "num_cpus": cpus,
                "num_gpus": gpus,
                "max_restarts": 0,
                "max_task_retries": 0,
            }
            if env:
                options["runtime_env"] = {"env_vars": env}
            actor = actor_class.options(**options).remote()
            ref = actor.run.remote(job, paths)
            self._actors.append(actor)
            self._pending[ref] = actor

    def _alive(self) -> bool:
        import ray

        if not self._pending:
            return False
        done, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        for ref in done:
            actor = self._pending.pop(ref)
            try:
                self._results.append(ray.get(ref))
            except ray.exceptions.RayActorError:
                self._died += 1
            except ray.exceptions.RayTaskError as exc:
                self._results.append(exc)
            # A finished worker gives its CPUs/GPUs back at once, so a worker still
            # waiting for resources can start and see that the budget is met.
            ray.kill(actor, no_restart=True)
        return bool(self._pending)

    def _stop(self) -> None:
        self._release()

    def _check(self) -> None:
        errors = [r for r in self._results if isinstance(r, BaseException)]
        ok = [r for r in self._results if r in (_OK, _GAVE_UP)]
        down = [r for r in self._results if isinstance(r, str) and r.startswith(_STORE_DOWN)]
        if down and not ok:
            raise StoreUnavailable(f"every worker gave up: {down[0][len(_STORE_DOWN) :]}")
        if down:
            say_stopped_early(
                len(down), len(self._results) + self._died, down[0][len(_STORE_DOWN) :]
            )
        if errors and not ok:
            first = str(errors[0]).strip().splitlines()
            raise DispatchError(
                f"all {len(errors) + self._died} Ray workers ended with an error; first: "
                f"{first[-1] if first else type(errors[0]).__name__}"
            )
        if self._died and not ok and not errors:
            raise DispatchError(
                f"all {self._died} Ray workers died; trials they left running are failed and "
                "retried when the study runs again"
            )

    def _release(self) -> None:
        if not self._actors and not self._started_ray:
            return
        import ray

        if ray.is_initialized():
            for actor in self._actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        self._actors = []
        self._pending = {}
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

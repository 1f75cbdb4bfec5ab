"""``tuner dashboard``: serve the Streamlit dashboard on a store."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._cli import check_port, serve
from ._exceptions import SpecError, StorageError, storage_error
from .dashboard import PASSWORD_ENV


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="see studies, the accuracy / size / latency trade-off and the trial to ship",
        description=(
            "Serve the dashboard (read-only) on the study store. It binds to 127.0.0.1 unless "
            "--host says otherwise; set a password before you bind it to other hosts."
        ),
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="study store URL (else $TUNER_STORAGE, else sqlite:///tuner.db)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help=f"ask for the password held in environment variable VAR "
        f"(default: ${PASSWORD_ENV} when set, or 'password' in Streamlit secrets)",
    )
    p.set_defaults(func=_cmd_dashboard)


def app_path() -> Path:
    """The installed ``app.py`` of the dashboard."""
    from . import dashboard

    return Path(dashboard.__file__).resolve().parent / "app.py"


def dashboard_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line; the store URL travels in the environment."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .storage import ENV_VAR, StoreError, StoreUnavailable, mask_url, open_storage, resolve_url

    check_port(args.port)
    env = dict(os.environ)
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise SpecError(
                f"--password-env: environment variable {args.password_env} is not set or empty; "
                "set it to the password, or leave --password-env out"
            )
        env[PASSWORD_ENV] = password
    try:
        import streamlit  # noqa: F401
    except ImportError as exc:
        raise SpecError(
            "the dashboard needs Streamlit and plotly: pip install 'tuner[dashboard]'"
        ) from exc
    import optuna

    url = resolve_url(args.storage)
    try:
        open_storage(url, read_only=True, heartbeat=False).engine.dispose()
    except StoreUnavailable as exc:
        # The server may be restarting: serve anyway; the page shows the outage and
        # comes back by itself.
        print(f"warning: {exc}; the page shows it until the store is back", file=sys.stderr)
    except StoreError as exc:
        raise storage_error(exc) from exc
    except optuna.exceptions.OptunaError as exc:
        # A file that exists but holds no study store: Optuna fails reading its schema.
        raise StorageError(
            f"cannot open study store {mask_url(url)!r}: it has no Optuna tables ({exc})"
        ) from exc
    # In the environment rather than on the command line, so `ps` does not show a password.
    env[ENV_VAR] = url
    shown = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
    print(
        f"tuner dashboard on {mask_url(url)}: http://{shown}:{args.port}  (Ctrl+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and PASSWORD_ENV not in env:
        print(
            f"warning: serving on {args.host} without a password; set {PASSWORD_ENV} "
            "or use --password-env",
            file=sys.stderr,
        )
    return serve(dashboard_command(args.host, args.port), env)

"""``tuner tensorboard``: where a study's TensorBoard event files are, or serve them."""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Any

from ._cli import _open_readonly, _storage_arg, check_port, serve
from ._exceptions import EXIT_OK, StorageError, storage_error
from .storage.keys import ARTIFACT_IN_STORE, TENSORBOARD_ATTR


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tensorboard",
        help="the folder of a study's TensorBoard files (curves, metrics, HParams)",
        description=(
            "Print the folder that holds the study's TensorBoard event files, with the "
            "'tensorboard --logdir' command to open it; the folder is the last line. "
            "With --serve, start TensorBoard on it (127.0.0.1)."
        ),
    )
    p.add_argument("study", help="study name")
    _storage_arg(p)
    p.add_argument("--serve", action="store_true", help="start TensorBoard on the folder")
    p.add_argument("--port", type=int, default=6006, help="port for --serve (default 6006)")
    p.set_defaults(func=_cmd_tensorboard)


def log_folder_of(records: Any) -> tuple[Path | None, int]:
    """The folder most of the study's trials wrote to, and how many trials wrote to it."""
    roots = collections.Counter(
        str(Path(r.metrics[TENSORBOARD_ATTR]).parent)
        for r in records
        if isinstance(r.metrics.get(TENSORBOARD_ATTR), str)
        and r.metrics[TENSORBOARD_ATTR] != ARTIFACT_IN_STORE
    )
    if not roots:
        return None, 0
    root, count = roots.most_common(1)[0]
    return Path(root), count


def tensorboard_command(folder: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def runs_from_store(store: Any, study: str) -> tuple[Path, int]:
    """The study's runs kept in the study store, laid out afresh in this user's cache:
    the folder, and how many runs."""
    import hashlib
    import re
    import shutil

    from ._datasets import _cache_dir
    from ._tensorboard import unpack_runs
    from .storage._blobs import StoreArtifacts

    url = store.engine.url.render_as_string(hide_password=True)
    digest = hashlib.blake2b(f"{url}\n{study}".encode(), digest_size=8).hexdigest()
    # One folder name, whatever the study is called (a name may hold "/" or "..").
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", study)[:48]
    folder = _cache_dir() / "tensorboard" / f"{readable}-{digest}"
    packed = StoreArtifacts(store).runs(study)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder, unpack_runs((data for _, data in packed), folder)


def _cmd_tensorboard(args: argparse.Namespace) -> int:
    from .storage import StoreError, read_records

    check_port(args.port)
    store = _open_readonly(args.storage)
    where = ""
    try:
        records = read_records(store, args.study)
        if any(r.metrics.get(TENSORBOARD_ATTR) == ARTIFACT_IN_STORE for r in records):
            folder: Path | None
            folder, count = runs_from_store(store, args.study)
            where = " (kept in the study store, copied here)"
        else:
            folder, count = log_folder_of(records)
    except StoreError as exc:
        raise storage_error(exc) from exc
    except OSError as exc:
        raise StorageError(
            f"study {args.study!r}: its TensorBoard runs could not be copied here: {exc}"
        ) from exc
    finally:
        store.engine.dispose()
    if folder is None:
        raise StorageError(
            f"study {args.study!r}: no trial wrote TensorBoard files (none has run yet, or "
            "the spec sets artifacts.tensorboard: false)"
        )
    if not folder.is_dir():
        raise StorageError(
            f"study {args.study!r}: its TensorBoard folder {folder} is not on this machine "
            "(trials ran elsewhere; copy the folder here or set artifacts.path to a shared one)"
        )
    if not args.serve:
        print(f"{count} of {len(records)} trials of {args.study} logged{where}; open them with:")
        print(f"  tensorboard --logdir {folder}")
        print(folder)
        return EXIT_OK
    print(
        f"TensorBoard on {folder}: http://localhost:{args.port}  (Ctrl+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    return serve(tensorboard_command(folder, args.port))

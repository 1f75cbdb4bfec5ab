"""``tuner delete``: a study out of the store, with the models and runs its trials kept."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._cli import _storage_arg
from ._exceptions import EXIT_FAILED, EXIT_OK, SpecError, storage_error


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "delete",
        help="delete a study: its trials, kept models and TensorBoard runs",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.add_argument(
        "--keep-files",
        action="store_true",
        help="delete the study from the store only; its kept models and runs stay on disk",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="delete a study with running trials (their workers will fail to record them)",
    )
    _storage_arg(p)
    p.set_defaults(func=_cmd_delete)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def _cmd_delete(args: argparse.Namespace) -> int:
    from ._delete import delete_study, refuse_running, study_files
    from .storage import (
        StoreError,
        counted,
        load_study_readonly,
        mask_url,
        open_storage,
        read_records,
        resolve_url,
    )
    from .storage._blobs import StoreArtifacts

    url = resolve_url(args.storage)
    shown = mask_url(url)
    try:
        # Read-only first: a mistyped URL must not create a store.
        reader = open_storage(url, read_only=True, heartbeat=False)
        try:
            load_study_readonly(reader, args.study)
            records = read_records(reader, args.study)
            in_store, _, runs_in_store, _ = StoreArtifacts(reader).count_all(args.study)
        finally:
            reader.engine.dispose()
    except StoreError as exc:
        raise storage_error(exc) from exc
    if not args.force:  # said before asking, and checked again as the study is deleted
        refuse_running(args.study, records)
    what = f"study {args.study!r} ({counted(len(records), 'trial')}) from {shown}"
    kept = study_files(args.study, records)
    if kept and not args.keep_files:
        what += f" and the {kept.describe()} its trials kept"
    stored = [counted(in_store, "model")] if in_store else []
    stored += [counted(runs_in_store, "TensorBoard run")] if runs_in_store else []
    if stored:
        what += f", with the {' and '.join(stored)} kept in the store"
    if not args.yes:
        if not sys.stdin.isatty():
            raise SpecError(
                f"--yes: not given; with no terminal to ask at, it is needed to delete {what}"
            )
        try:
            answer = input(f"delete {what}? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = ""
            print(file=sys.stderr)
        if answer not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return EXIT_FAILED
    try:
        store = open_storage(url, heartbeat=False)
    except StoreError as exc:
        raise storage_error(exc) from exc
    try:
        deleted = delete_study(store, args.study, files=not args.keep_files, force=args.force)
    finally:
        store.engine.dispose()
    lines = [f"deleted study {args.study!r} ({counted(deleted.trials, 'trial')}) from {shown}"]
    if deleted.models or deleted.runs:
        lines.append(f"removed {deleted.describe()} of its trials ({_size(deleted.size)})")
    lines += [f"removed {folder}" for folder in deleted.removed]
    lines += [f"left {path}: {why}" for path, why in deleted.left.items()]
    print("\n".join(lines))
    return EXIT_OK

"""What writing TensorBoard event files costs a trial.

Runs the same study (same sampler seed, so the same parameters trial by trial) with
``artifacts.tensorboard`` on and off, the two arms interleaved round by round so load
drift hits both, and prints per arm the mean trial time, plus the time spent inside
tuner's TensorBoard writer (opening, per-epoch scalars, the final HParams session and
closing) as a share of the trial; importing the writer, once per worker process, is
timed apart. Run: .venv/bin/python bench/tensorboard_cost.py
[--spec mnist1d_cnn] [--trials 4] [--epochs 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

import tuner
from tuner import _tensorboard
from tuner.storage import open_storage, read_records

_SPENT = [0.0]


def _timed(fn: Any) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SPENT[0] += time.perf_counter() - started

    return run


for _name in ("__init__", "epoch", "finish", "close"):
    setattr(_tensorboard.TrialLog, _name, _timed(getattr(_tensorboard.TrialLog, _name)))


def _arm(spec: Any, on: bool, folder: Path, trials: int, epochs: int) -> dict[str, float]:
    url = f"sqlite:///{folder / ('on.db' if on else 'off.db')}"
    spec = spec.with_overrides(
        name="tb-on" if on else "tb-off",
        early_stopping={"name": "none"},
        budget={"n_trials": trials, "max_epochs": epochs},
        artifacts={"keep": "none", "path": str(folder / "art"), "tensorboard": on},
    )
    _SPENT[0] = 0.0
    tuner.run(spec, storage=url)
    records = read_records(open_storage(url, heartbeat=False), spec.name)
    durations = [r.duration_s for r in records if r.duration_s is not None]
    return {"trial_s": statistics.mean(durations), "writer_s": _SPENT[0] / max(1, len(records))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="mnist1d_cnn")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("torch").setLevel(logging.ERROR)
    base = tuner.load_spec(args.spec)
    # Once per worker process, whatever the number of trials: reported on its own line.
    started = time.perf_counter()
    import torch.utils.tensorboard  # noqa: F401

    import_s = time.perf_counter() - started
    rows: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for on in (False, True) if round_ % 2 == 0 else (True, False):
                folder = Path(tmp) / f"r{round_}-{'on' if on else 'off'}"
                folder.mkdir()
                rows[on].append(_arm(base, on, folder, args.trials, args.epochs))
                print(
                    f"round {round_ + 1} tensorboard {'on ' if on else 'off'}: "
                    f"{rows[on][-1]['trial_s']:.2f} s/trial",
                    flush=True,
                )
    off = statistics.mean(r["trial_s"] for r in rows[False])
    on_s = statistics.mean(r["trial_s"] for r in rows[True])
    writer = statistics.mean(r["writer_s"] for r in rows[True])
    print()
    print(f"{args.spec}, {args.trials} trials x {args.epochs} epochs, {args.rounds} rounds")
    print(f"{'arm':<16}{'s/trial':>10}{'writer s/trial':>16}{'writer share':>14}{'vs off':>8}")
    print(f"{'tensorboard off':<16}{off:>10.3f}{'-':>16}{'-':>14}{1.0:>8.3f}")
    print(
        f"{'tensorboard on':<16}{on_s:>10.3f}{writer:>16.4f}"
        f"{100 * writer / on_s:>13.2f}%{on_s / off:>8.3f}"
    )
    print(f"once per worker process: importing the writer took {import_s:.3f} s")


if __name__ == "__main__":
    main()

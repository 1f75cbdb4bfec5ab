"""What the shipped MNIST-1D spec reaches, next to the MNIST-1D paper's table.

Runs search_spaces/mnist1d_cnn.yaml (or --n-trials of it) on a fresh SQLite store, once
per sampler seed (--seeds), and prints per seed the best test accuracy overall and at
--size-kb or less (the small end of the front), then, over all seeds, the best at 90%+
sparsity, with int8, and both, and the Pareto points of the first seed. A study of the
same spec narrowed to 90%+ unstructured sparsity with int8 runs after it
(--sparse-trials, 0 to skip). Paper (Greydanus, 2020): logistic regression 32%,
MLP 68%, CNN 94% test accuracy.
Run: .venv/bin/python bench/mnist1d_accuracy.py [--seeds 0 1 2] [--n-trials 40]
     [--workers 2] [--size-kb 8] [--sparse-trials 12] [--storage URL]
     [--compressions K]  (budget.compressions_per_training; the shipped spec's by default)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import tuner
from tuner.storage import TrialRecord, open_storage, pareto_front, read_records

PAPER = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94}


def _best(rows: list[TrialRecord]) -> str:
    if not rows:
        return "-"
    top = max(rows, key=lambda r: r.metrics["test_accuracy"])
    return (
        f"{100 * top.metrics['test_accuracy']:.1f}%  (trial {top.number}, "
        f"{top.values['size_bytes'] / 1024:.1f} KB, {top.values['latency_ms']:.3f} ms)"
    )


def _complete(url: str, study: str) -> list[TrialRecord]:
    return [r for r in read_records(open_storage(url), study) if r.state == "COMPLETE"]


def _how(r: TrialRecord) -> str:
    p = r.params
    parts = [
        f"c={p.get('channels')}",
        f"{p.get('optimizer')} lr {p.get('lr', 0):.3g}",
        f"{p.get('prune_structure')} {100 * float(p.get('prune_threshold', 0)):.0f}%",
        "int8" if p.get("quantize") == "int8" else "float",
    ]
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-trials", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--size-kb", type=float, default=8.0)
    parser.add_argument("--sparse-trials", type=int, default=12)
    parser.add_argument("--compressions", type=int, default=None)
    args = parser.parse_args()
    url = args.storage or f"sqlite:///{tempfile.mkdtemp()}/mnist1d.db"
    limit = args.size_kb * 1024
    shipped = tuner.load_spec("mnist1d_cnn").to_dict()
    per_seed: list[tuple[int, list[TrialRecord], float]] = []
    for seed in args.seeds:
        spec = {**shipped, "name": f"mnist1d-cnn-seed{seed}"}
        spec["sampler"] = {**shipped["sampler"], "seed": seed}
        if args.compressions is not None:
            spec["budget"] = {**shipped["budget"], "compressions_per_training": args.compressions}
        started = time.perf_counter()
        result = tuner.run(
            spec, storage=url, n_trials=args.n_trials, workers=args.workers, progress=True
        )
        per_seed.append((seed, _complete(url, result.study_name), time.perf_counter() - started))

    print(f"\nMNIST-1D, shipped spec, {args.workers} workers, sampler seeds {args.seeds}")
    small_label = f"best at {args.size_kb:g} KB or less"
    print(
        f"{'seed':>4} {'trials':>6} {'trained':>7} {'epochs':>6} {'min':>5} {'best test':>9} "
        f"{small_label + ' (test)':<28} {'its size':>8}  settings"
    )
    hits = []
    for seed, records, wall in per_seed:
        top = max(records, key=lambda r: r.metrics["test_accuracy"])
        small = [r for r in records if r.values["size_bytes"] <= limit]
        best_small = max(small, key=lambda r: r.metrics["test_accuracy"]) if small else None
        hits.append(best_small.metrics["test_accuracy"] if best_small else 0.0)
        trained = [r for r in records if r.metrics.get("trained_by") is None]
        epochs = sum(int(r.metrics.get("epochs", 0)) for r in records)
        print(
            f"{seed:>4} {len(records):>6} {len(trained):>7} {epochs:>6} {wall / 60:>5.1f} "
            f"{100 * top.metrics['test_accuracy']:>8.1f}% "
            + (
                f"{100 * best_small.metrics['test_accuracy']:>27.1f}% "
                f"{best_small.values['size_bytes'] / 1024:>6.1f} KB  {_how(best_small)}"
                if best_small
                else f"{'-':>28}"
            )
        )
    print(f"mean {small_label}: {100 * sum(hits) / len(hits):.1f}% test accuracy")

    records = [r for _, rows, _ in per_seed for r in rows]
    sparse = [r for r in records if r.metrics["sparsity"] >= 0.9]
    int8 = [r for r in records if r.metrics["int8_layers"]]
    both = [r for r in sparse if r.metrics["int8_layers"]]
    print(f"\n{'model (all seeds)':<34} {'test accuracy'}")
    for name, acc in PAPER.items():
        print(f"{'paper: ' + name:<34} {100 * acc:.0f}%")
    print(f"{'tuner: best CNN':<34} {_best(records)}")
    print(f"{'tuner: best at sparsity >= 90%':<34} {_best(sparse)}")
    print(f"{'tuner: best int8':<34} {_best(int8)}")
    print(f"{'tuner: best int8 + sparsity >= 90%':<34} {_best(both)}")
    front_records = per_seed[0][1]
    if args.sparse_trials > 0:
        # The same spec narrowed to what ships smallest: 90%+ unstructured sparsity with int8.
        narrow = {**shipped, "name": "mnist1d-cnn-sparse-int8"}
        narrow["search_space"] = {
            **shipped["search_space"],
            "prune_threshold": {"type": "float", "low": 0.9, "high": 0.95},
            "prune_structure": "unstructured",
            "quantize": "int8",
        }
        narrow_result = tuner.run(
            narrow, storage=url, n_trials=args.sparse_trials, workers=args.workers
        )
        narrow_records = _complete(url, narrow_result.study_name)
        print(f"{'tuner: spec narrowed to 90%+ & int8':<34} {_best(narrow_records)}")
        front_records = front_records + narrow_records
    objectives = shipped["objectives"]
    front = pareto_front(front_records, objectives)
    print(
        f"\nPareto front of seed {args.seeds[0]}"
        f"{' and the narrowed study' if args.sparse_trials > 0 else ''} ({len(front)} points); "
        "sparse/int8 ones marked"
    )
    print(
        f"{'trial':>5} {'val acc':>8} {'test acc':>9} {'size KB':>8} {'lat ms':>7} "
        f"{'sparsity':>9} {'int8':>5}"
    )
    for r in front:
        mark = " *" if r.metrics["sparsity"] >= 0.9 or r.metrics["int8_layers"] else ""
        print(
            f"{r.number:>5} {100 * r.values['accuracy']:>7.1f}% "
            f"{100 * r.metrics['test_accuracy']:>8.1f}% "
            f"{r.values['size_bytes'] / 1024:>8.1f} {r.values['latency_ms']:>7.3f} "
            f"{100 * r.metrics['sparsity']:>8.0f}% "
            f"{'yes' if r.metrics['int8_layers'] else 'no':>5}{mark}"
        )


if __name__ == "__main__":
    main()

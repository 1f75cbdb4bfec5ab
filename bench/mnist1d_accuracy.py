"""What the shipped MNIST-1D spec reaches, next to the MNIST-1D paper's table.

Runs search_spaces/mnist1d_cnn.yaml (or --n-trials of it) on a fresh SQLite store and
prints the best test accuracy overall, at 90%+ sparsity, with int8, and both, plus the
Pareto points that are sparse and int8. Paper (Greydanus, 2020): logistic regression
32%, MLP 68%, CNN 94% test accuracy.
Run: .venv/bin/python bench/mnist1d_accuracy.py [--n-trials 40] [--workers 2] [--storage URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import tuner
from tuner.storage import open_storage, pareto_front, read_records

PAPER = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-trials", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--sparse-trials", type=int, default=12)
    args = parser.parse_args()
    url = args.storage or f"sqlite:///{tempfile.mkdtemp()}/mnist1d.db"
    spec = tuner.load_spec("mnist1d_cnn")
    started = time.perf_counter()
    result = tuner.run(
        spec, storage=url, n_trials=args.n_trials, workers=args.workers, progress=True
    )
    wall = time.perf_counter() - started
    records = [
        r for r in read_records(open_storage(url), result.study_name) if r.state == "COMPLETE"
    ]

    def best(rows: list) -> str:
        if not rows:
            return "-"
        top = max(rows, key=lambda r: r.metrics["test_accuracy"])
        return (
            f"{100 * top.metrics['test_accuracy']:.1f}%  (trial {top.number}, "
            f"{top.values['size_bytes'] / 1024:.1f} KB, {top.values['latency_ms']:.3f} ms)"
        )

    sparse = [r for r in records if r.metrics["sparsity"] >= 0.9]
    int8 = [r for r in records if r.metrics["int8_layers"]]
    both = [r for r in sparse if r.metrics["int8_layers"]]
    print(
        f"\nMNIST-1D, {len(records)} complete trials in {wall / 60:.1f} min ({args.workers} workers)"
    )
    print(f"{'model':<34} {'test accuracy'}")
    for name, acc in PAPER.items():
        print(f"{'paper: ' + name:<34} {100 * acc:.0f}%")
    print(f"{'tuner: best CNN':<34} {best(records)}")
    print(f"{'tuner: best at sparsity >= 90%':<34} {best(sparse)}")
    print(f"{'tuner: best int8':<34} {best(int8)}")
    print(f"{'tuner: best int8 + sparsity >= 90%':<34} {best(both)}")
    # The same spec narrowed to what ships smallest: 90%+ unstructured sparsity with int8.
    narrow = spec.to_dict()
    narrow["name"] = "mnist1d-cnn-sparse-int8"
    narrow["search_space"].update(
        prune_threshold={"type": "float", "low": 0.9, "high": 0.95},
        prune_structure="unstructured",
        quantize="int8",
    )
    narrow_result = tuner.run(
        narrow, storage=url, n_trials=args.sparse_trials, workers=args.workers
    )
    narrow_records = [
        r
        for r in read_records(open_storage(url), narrow_result.study_name)
        if r.state == "COMPLETE"
    ]
    print(f"{'tuner: spec narrowed to 90%+ & int8':<34} {best(narrow_records)}")
    records = records + narrow_records
    small = [r for r in records if r.values["size_bytes"] <= 8 * 1024]
    print(f"{'tuner: best at 8 KB or less':<34} {best(small)}")
    front = pareto_front(records, result.objectives)
    print(f"\nPareto front of both studies ({len(front)} points); sparse/int8 ones marked")
    print(
        f"{'trial':>5} {'val acc':>8} {'test acc':>9} {'size KB':>8} {'lat ms':>7} {'sparsity':>9} {'int8':>5}"
    )
    for r in front:
        mark = " *" if r.metrics["sparsity"] >= 0.9 or r.metrics["int8_layers"] else ""
        print(
            f"{r.number:>5} {100 * r.values['accuracy']:>7.1f}% {100 * r.metrics['test_accuracy']:>8.1f}% "
            f"{r.values['size_bytes'] / 1024:>8.1f} {r.values['latency_ms']:>7.3f} "
            f"{100 * r.metrics['sparsity']:>8.0f}% {'yes' if r.metrics['int8_layers'] else 'no':>5}{mark}"
        )


if __name__ == "__main__":
    main()

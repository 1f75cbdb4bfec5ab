from __future__ import annotations

import numpy as np

from tuner.storage import hypervolume, pareto_mask


def _brute(values: np.ndarray, dirs: list[str]) -> np.ndarray:
    signs = np.array([-1 if d == "maximize" else 1 for d in dirs])
    v = values * signs
    out = []
    for i in range(len(v)):
        dominated = any(
            np.all(v[j] <= v[i]) and np.any(v[j] < v[i]) for j in range(len(v)) if j != i
        )
        out.append(not dominated)
    return np.array(out)


def test_pareto_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    dirs = ["maximize", "minimize", "minimize"]
    for _ in range(20):
        values = rng.integers(0, 6, size=(40, 3)).astype(float)
        assert (pareto_mask(values, dirs) == _brute(values, dirs)).all()


def test_hypervolume_of_known_points() -> None:
    # maximize accuracy, minimize size: reference (0, 10); one point (0.5, 4) covers 0.5 * 6.
    assert hypervolume(np.array([[0.5, 4.0]]), ["maximize", "minimize"], [0.0, 10.0]) == 3.0
    two = hypervolume(np.array([[0.5, 4.0], [1.0, 8.0]]), ["maximize", "minimize"], [0.0, 10.0])
    assert two == 3.0 + 0.5 * 2.0

from __future__ import annotations

import pytest

import tuner
from tuner._space import center


def test_the_center_is_the_middle_of_every_range_and_the_first_choice() -> None:
    spec = tuner.load_spec(
        {
            "name": "s",
            "workload": "digits-mlp",
            "objectives": {"accuracy": "maximize"},
            "search_space": {
                "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
                "momentum": {
                    "type": "float",
                    "low": 0.8,
                    "high": 0.99,
                    "when": {"optimizer": "sgd"},
                },
                "beta": {"type": "float", "low": 0.9, "high": 0.99, "when": {"optimizer": "adamw"}},
                "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
                "hidden_units": {"type": "int", "low": 16, "high": 256, "log": True},
                "layers": {"type": "int", "low": 1, "high": 4},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.2},
                "batch_size": 64,
            },
        }
    )
    middle = center(spec.params)
    assert middle == {
        "optimizer": "sgd",
        "momentum": pytest.approx(0.895),
        "lr": pytest.approx(1.0e-3),
        "hidden_units": 64,
        "layers": 3,  # 2.5, half up
        "dropout": pytest.approx(0.2),  # on the step grid
    }
    # Parameters of the branch not taken, and fixed ones, are not part of it.
    assert "beta" not in middle and "batch_size" not in middle
    assert all(isinstance(middle[k], int) for k in ("hidden_units", "layers"))

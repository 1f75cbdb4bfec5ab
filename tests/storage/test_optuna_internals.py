"""Each Optuna internal tuner relies on still behaves as tuner assumes.

An Optuna upgrade that moves one fails here by name, not deep inside a sweep.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from tuner.storage import _optuna
from tuner.storage._frozen import FastRDBStorage


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")


def test_trial_id_is_the_id_storage_calls_take(study):
    trial = study.ask()
    study.tell(trial, 1.0)
    storage = _optuna.study_storage(study)
    frozen = study.trials[0]
    assert _optuna.trial_id(trial) == _optuna.trial_id(frozen)
    assert storage.get_trial(_optuna.trial_id(trial)).number == trial.number
    assert storage.get_trial_number_from_id(_optuna.trial_id(frozen)) == 0


def test_rdb_backend_sees_through_the_caching_wrapper(study):
    backend = _optuna.rdb_backend(_optuna.study_storage(study))
    assert isinstance(backend, optuna.storages.RDBStorage)
    assert _optuna.rdb_backend(backend) is backend


def test_a_sampler_may_stop_the_study_inside_the_split_loop(study):
    with pytest.raises(RuntimeError):
        study.stop()  # outside the optimize loop Optuna refuses
    assert not _optuna.stop_requested(study)
    _optuna.enter_optimize_loop(study)
    study.stop()
    assert _optuna.stop_requested(study)


def test_hypervolume_of_a_known_front():
    # Two points of a 2-d minimization front under reference (4, 4): 3*1 + 1*3 - 1*1 = 5.
    points = np.array([[1.0, 3.0], [3.0, 1.0]])
    assert _optuna.compute_hypervolume(points, [4.0, 4.0]) == pytest.approx(5.0)
    dominated = np.vstack([points, [[3.5, 3.5]]])
    assert _optuna.compute_hypervolume(dominated, [4.0, 4.0]) == pytest.approx(5.0)


def test_rdb_models_hold_the_tables_the_store_reads():
    models = _optuna.rdb_models()
    tables = {
        m.__table__.name for m in (models.TrialModel, models.StudyModel, models.TrialParamModel)
    }
    assert tables == {"trials", "studies", "trial_params"}
    assert {"trial_id", "number", "state"} <= set(models.TrialModel.__table__.c.keys())


def test_the_store_overrides_methods_optuna_still_has():
    for name in _optuna.OVERRIDDEN_METHODS:
        assert callable(getattr(optuna.storages.RDBStorage, name, None)), name
        assert name in vars(FastRDBStorage) or any(
            name in vars(k)
            for k in FastRDBStorage.__mro__[1:]
            if k is not optuna.storages.RDBStorage
        ), name


def test_the_checked_version_is_the_installed_one():
    assert optuna.__version__ == _optuna.CHECKED_AGAINST

from __future__ import annotations

import tuner
import tuner.storage


def test_every_public_name_resolves() -> None:
    for module in (tuner, tuner.storage):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_public_api_is_small_and_private_modules_stay_private() -> None:
    assert {"run", "StudySpec", "load_spec", "RunResult", "TunerError", "SpecError"} <= set(
        tuner.__all__
    )
    assert not any(name.startswith("_") for name in tuner.__all__)


def test_exceptions_form_one_tree() -> None:
    for name in ("SpecError", "StorageError", "WorkloadError", "CompressionError", "DispatchError"):
        assert issubclass(getattr(tuner, name), tuner.TunerError)


def test_import_tuner_does_not_load_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = "import sys, tuner; print(' '.join(m for m in ('torch', 'ray', 'streamlit', 'plotly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

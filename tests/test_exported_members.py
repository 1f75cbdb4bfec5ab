from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_the_cli_reads_a_store_without_loading_torch(tmp_path: Path) -> None:
    # torch and its compiler take seconds to import: `tuner --help`, `status`, `best`,
    # `pick` and `delete` answer in about one.
    import subprocess
    import sys

    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5]))
    heavy = "print('loaded:', *(m for m in ('torch', 'ray', 'streamlit') if m in sys.modules))"
    commands = [["--help"], ["status"], ["best", "s"], ["pick", "s", "--json"]]
    commands.append(["delete", "s", "--yes", "--keep-files"])  # last: the study is gone after
    for args in [c if c == ["--help"] else [*c, "--storage", url] for c in commands]:
        code = (
            "import sys; from tuner._cli import main\n"
            f"try:\n    code = main({args!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
            f"{heavy}\nsys.exit(code)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "loaded:", (args, out.stdout[-200:])


def _defined_public(module: object) -> set[str]:
    """Public names the module binds itself, other than submodules."""
    import types

    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in ("annotations", "TYPE_CHECKING", "Any")
    }


def test_all_lists_exactly_the_public_names() -> None:
    for module in (tuner, tuner.storage):
        exported = set(module.__all__)
        assert len(exported) == len(module.__all__), f"{module.__name__}: duplicates"
        bound = _defined_public(module)
        if module is tuner:
            bound |= set(tuner._LAZY)  # loaded on first use
        assert bound == exported, (
            f"{module.__name__}: missing from __all__ {sorted(bound - exported)}, "
            f"listed but not defined {sorted(exported - bound)}"
        )


def test_every_error_class_is_in_the_tree_exported_with_an_exit_code() -> None:
    from tuner import _exceptions

    classes = [
        value
        for value in vars(_exceptions).values()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == _exceptions.__name__
    ]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, tuner.TunerError), cls
        assert cls.__name__ in tuner.__all__, cls
        assert isinstance(cls.exit_code, int) and cls.exit_code > 0, cls


def test_a_driver_that_only_dispatches_never_loads_torch(tmp_path: Path, tiny_spec: Any) -> None:
    # With local worker processes the driver validates the spec, hands trials out and
    # prints the front; the workers train. A built-in workload is checked by name.
    import subprocess
    import sys

    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(budget={"n_trials": 2, "max_epochs": 1})))
    code = (
        "import sys; from tuner._cli import main\n"
        f"code = main(['run', {str(spec)!r}, '--workers', '2', "
        f"'--storage', 'sqlite:///{tmp_path / 'study.db'}'])\n"
        "print('loaded:', *(m for m in ('torch',) if m in sys.modules))\nsys.exit(code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "loaded:", out.stdout[-300:]
    assert "Pareto front" in out.stdout
    # A Ray driver's dispatcher, with a spec that times models on a target node, too.
    code = (
        "import sys, tuner, tuner._ray\n"
        "spec = tuner.load_spec({'name': 'x', 'workload': 'digits-mlp', 'search_space': "
        "{'lr': 0.1}, 'objectives': {'accuracy': 'maximize'}, 'measure': {'target': 'edge'}})\n"
        "print('torch' in sys.modules, spec.measure.target)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "edge"], out.stderr[-2000:]

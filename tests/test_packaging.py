from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("tuner-*.whl"))


def test_wheel_holds_every_package_and_the_shipped_specs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "tuner/__init__.py",
        "tuner/_cli.py",
        "tuner/storage/__init__.py",
        "tuner/dashboard/__init__.py",
        "tuner/dashboard/_figures.py",
        "tuner/dashboard/_views/front.py",
        "tuner/search_spaces/digits_mlp.yaml",
        "tuner/search_spaces/mnist1d_cnn.yaml",
        "tuner/search_spaces/mnist1d_transformer.yaml",
    ):
        assert expected in names, expected
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_wheel_imports_and_loads_a_shipped_spec(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import tuner, tuner.storage; "
        f"assert tuner.__file__.startswith({str(target)!r}), tuner.__file__; "
        "spec = tuner.load_spec('digits_mlp'); print(spec.name)"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "digits-mlp"

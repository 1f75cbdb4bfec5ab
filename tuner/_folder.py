"""The working folder as an import path: workloads named ``module:function`` are imported
from it, searched before the installed packages (as Python does for a script's folder, and
as Ray does on its workers). A file or package there named like a library tuner loads
would be imported in that library's place; the CLI, and ``tuner submit`` for the folder it
uploads, refuse to start instead, with one line naming it."""

from __future__ import annotations

import os

# The import names of what tuner loads as it runs.
LIBRARIES = (
    *("alembic", "click", "colorlog", "mnist1d", "numpy", "onnx", "onnxruntime", "onnxscript"),
    *("optuna", "packaging", "pandas", "plotly", "psycopg", "pymysql", "ray", "rich", "scipy"),
    "sklearn",
    *("sqlalchemy", "streamlit", "tensorboard", "torch", "torch_pruning", "torchao", "tqdm"),
    "yaml",
)


def shadowing(folder: str) -> str | None:
    """The first file or package in ``folder`` named like a library tuner loads, if any."""
    for name in LIBRARIES:
        for path in (os.path.join(folder, f"{name}.py"), os.path.join(folder, name)):
            if os.path.isfile(path) or os.path.isfile(os.path.join(path, "__init__.py")):
                return path
    return None


def shadowing_error(folder: str) -> str | None:
    """The one line that says what in ``folder`` would hide a library, or None."""
    path = shadowing(folder)
    if path is None:
        return None
    name = os.path.splitext(os.path.basename(path))[0]
    return (
        f"{path} would be imported in place of the installed {name} that tuner uses "
        "(workloads are imported from the working folder first); rename it, or run tuner "
        "from another folder"
    )

#!/usr/bin/env bash
# Downloads, into ./.whl, the wheels bench/gpu_check.sh installs on a GPU machine that has
# PyTorch (with CUDA), NumPy, SciPy, scikit-learn, ONNX and pytest but no network: tuner's
# other dependencies, at the versions .ci/constraints.txt pins.
#
#   bench/gpu_wheels.sh [PYTHON_VERSION]     # the GPU machine's Python, default 3.12
#
# Run it on a machine that reaches PyPI, from the repository root.
set -euo pipefail
version=${1:-3.12}
names=(optuna alembic Mako colorlog SQLAlchemy greenlet mnist1d torch-pruning torchao)
pins=()
for name in "${names[@]}"; do
    pin=$(grep -i -E "^${name}==" .ci/constraints.txt || true)
    if [ -z "$pin" ]; then
        echo "error: .ci/constraints.txt pins no version of $name" >&2
        exit 2
    fi
    pins+=("$pin")
done
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --dest .whl \
    --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "${pins[@]}"
ls -l .whl

#!/usr/bin/env bash
# Checks tuner's GPU paths on a machine with an NVIDIA GPU, in about five minutes:
#   1. what the machine has (GPU, PyTorch, CUDA, torchao);
#   2. tests/tuner/test_cuda.py: residual CNNs and Transformers trained, pruned, made int8
#      with torchao's CUDA kernels and timed on the GPU, and whole GPU studies in both
#      runtimes;
#   3. bench/compression.py --device cuda: latency at batch 1 and 32, size and accuracy on
#      the GPU for dense, 50% structured, int8 and both, int8 also compiled.
#
#   bench/gpu_check.sh [LOG_DIR]      # from the repository root; logs go to LOG_DIR
#
# Without network access, put the wheels of what the machine lacks in ./.whl first
# (bench/gpu_wheels.sh, on a machine that reaches PyPI): they and tuner are installed into
# a private folder, not into the machine's Python.
set -u
log=${1:-gpu-check}
py=${PYTHON:-python3}
mkdir -p "$log"
site=$(mktemp -d /tmp/tuner-site.XXXXXX)
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled

step() { echo; echo "== $1 ($(date +%T))"; }

step "machine"
nvidia-smi -L || echo "nvidia-smi: not found"
if ls .whl/*.whl > /dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl \
        || { echo "error: the wheels in .whl did not install"; exit 1; }
fi
"$py" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . \
    > "$log/install.log" 2>&1 || { tail -20 "$log/install.log"; echo "error: tuner did not install"; exit 1; }
# -P: the checkout's own tuner/ folder is not the installed package.
"$py" -P - <<'EOF' 2>&1 | tee "$log/machine.txt"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU 0: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB")
import importlib.metadata as md
for name in ("torchao", "optuna", "torch-pruning", "onnx", "onnxruntime", "onnxscript"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
import tuner._compression as c, torch.nn as nn
m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
q, layers = c.quantize(m, mode="int8", calibration_inputs=torch.randn(64, 64), device="cuda" if torch.cuda.is_available() else "cpu")
print(f"int8 layers of a probe MLP: {list(layers)}")
EOF

step "tests/tuner/test_cuda.py"
timeout 300 "$py" -P -m pytest tests/tuner/test_cuda.py -p no:cacheprovider -n 2 -q -rA \
    > "$log/test_cuda.log" 2>&1
echo "pytest exit $?"
grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed" "$log/test_cuda.log" | tail -20

step "bench/compression.py --device cuda"
timeout 300 "$py" -P bench/compression.py --device cuda --models "residual cnn,transformer" \
    --epochs 4 --rounds 5 --repeats 20 > "$log/compression.log" 2>&1
echo "bench exit $?"
grep -v -E "Warning|warn\(|^\s*$" "$log/compression.log" | tail -30

step "done"

#!/usr/bin/env bash
# Checks tuner's GPU paths on a machine with an NVIDIA GPU, in at most nine minutes:
#   1. what the machine has (GPU, PyTorch, CUDA, torchao);
#   2. tests/tuner/test_cuda.py: residual CNNs and Transformers trained, pruned, made int8
#      (and float8, on compute capability 8.9 and up) with torchao's CUDA kernels and timed
#      on the GPU, and whole GPU studies in both runtimes;
#   3. bench/compression.py --device cuda: latency at batch 1 and 32, size and accuracy on
#      the GPU for dense, 50% structured, int8 and both, int8 also compiled, float8 and
#      structured + float8 (also uncompiled) where the GPU has float8.
#
#   bench/gpu_check.sh [LOG_DIR]      # from the repository root; logs go to LOG_DIR;
#                                     # exits 1 if the tests or the bench failed
#
# Without network access, put the wheels of what the machine lacks in ./.whl first
# (bench/gpu_wheels.sh, on a machine that reaches PyPI): they and tuner are installed into
# a private folder, not into the machine's Python.
set -u
log=${1:-gpu-check}
py=${PYTHON:-python3}
mkdir -p "$log"
site=$(mktemp -d /tmp/tuner-site.XXXXXX)
trap 'rm -rf "$site"' EXIT
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
status=0

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
import importlib, importlib.metadata as md
for name, module in [("torchao", "torchao"), ("optuna", "optuna"), ("torch-pruning", "torch_pruning"),
                     ("SQLAlchemy", "sqlalchemy"), ("mnist1d", "mnist1d"), ("PyYAML", "yaml"),
                     ("tqdm", "tqdm"), ("rich", "rich"), ("scikit-learn", "sklearn"),
                     ("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("onnxscript", "onnxscript")]:
    try:
        importlib.import_module(module)
        print(f"{name} {md.version(name)}")
    except Exception as exc:
        print(f"{name}: cannot import ({exc})")
import tuner._compression as c, torch.nn as nn
m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
q, layers = c.quantize(m, mode="int8", calibration_inputs=torch.randn(64, 64), device="cuda" if torch.cuda.is_available() else "cpu")
print(f"int8 layers of a probe MLP: {list(layers)}")
if torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= c.FLOAT8_CAPABILITY:
    q, layers = c.quantize(m, mode="float8", device="cuda")
    print(f"float8 layers of a probe MLP: {list(layers)}")
EOF

step "tests/tuner/test_cuda.py"
# --dist load: the tests of this one file share both processes.
timeout 240 "$py" -P -m pytest tests/tuner/test_cuda.py -p no:cacheprovider -n 2 --dist load \
    -q -rA > "$log/test_cuda.log" 2>&1
code=$?
echo "pytest exit $code"
[ "$code" -eq 0 ] || status=1
grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed" "$log/test_cuda.log" | tail -20

step "bench/compression.py --device cuda"
timeout 240 "$py" -P bench/compression.py --device cuda --models "residual cnn,transformer" \
    --epochs 4 --rounds 5 --repeats 20 > "$log/compression.log" 2>&1
code=$?
echo "bench exit $code"
[ "$code" -eq 0 ] || status=1
grep -v -E "Warning|warn\(|^\s*$" "$log/compression.log" | tail -30

step "done"
exit $status

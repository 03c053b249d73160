#!/usr/bin/env bash
# The side-by-side benchmark (benchmarks/run_bench.py) on a machine with an NVIDIA GPU: spikeserve
# (batching on and off) is served with --device cuda:N, and compared, in the same run, with the Rust
# floor and the Python peer and floor. Not run by `make test`, and not yet run at all (the development
# machines have no GPU).
#   1. set-up, as in scripts/check-cuda.sh: a separate venv (.venv-gpu) with onnxruntime-gpu==1.31.1
#      and its CUDA 13 / cuDNN 9 libraries from PyPI, on the library path;
#   2. benchmarks/run_bench.py --device cuda:N --ort-library <the GPU wheel's libonnxruntime>;
#   3. results in benchmarks/results/bench-cuda.{json,md} and bench-cuda-{throughput,latency}.png;
#   4. the step by batch size (1..256) on the GPU for digits, event-digits and the papers' VGGSNN
#      (an untrained stand-in, exported as benchmarks/overhead.py does): states resident on the
#      device, bound in host memory, and a plain ONNX Runtime loop, with the bytes that cross per
#      step (spikeserve-tools step-bench; benchmarks/results/step-cuda-<model>.json).
# What runs where: both spikeserve servers on the GPU; the Rust floor (`spikeserve-tools bench --floor`
# steps on the CPU device, through the same GPU build of ONNX Runtime), the Python floor and the
# Python peer (the CPU onnxruntime of .venv) on the CPU. So on a GPU machine the floor ratios compare
# spikeserve on the GPU with CPU loops, and the Python ratios compare it with the Python CPU server.
# Usage: scripts/bench-cuda.sh [cuda-ordinal] [more run_bench.py flags, e.g. --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
ORDINAL="${1:-0}"
shift || true
GPU_VENV=.venv-gpu

command -v nvidia-smi >/dev/null || { echo "bench-cuda.sh: no nvidia-smi: this needs a machine with an NVIDIA GPU" >&2; exit 1; }
make venv build
if [ ! -f "$GPU_VENV/.installed" ]; then
  python3 -m venv "$GPU_VENV"
  "$GPU_VENV/bin/pip" install --quiet onnxruntime-gpu==1.31.1 nvidia-cuda-runtime nvidia-cublas \
    nvidia-cudnn-cu13 nvidia-cufft nvidia-curand nvidia-nvjitlink
  touch "$GPU_VENV/.installed"
fi
SITE=$("$GPU_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
GPU_ORT=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.1.31.1)
# The CUDA libraries come from the nvidia-* wheels; ONNX Runtime's CUDA provider finds them here.
LD_LIBRARY_PATH="$(find "$SITE/nvidia" -name lib -type d | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# The Python peer and floor run with .venv's interpreter (CPU onnxruntime), as on the CPU machine.
STEP_MODELS=$(mktemp -d)
trap 'rm -rf "$STEP_MODELS"' EXIT
PYTHONPATH=training:benchmarks .venv/bin/python -c "
import sys; from pathlib import Path; import overhead
print(overhead.export_vggsnn_standin(1.0, Path(sys.argv[1])))" "$STEP_MODELS"
for dir in models/digits models/event-digits "$STEP_MODELS"/vggsnn-x1; do
  target/release/spikeserve-tools step-bench --device "cuda:$ORDINAL" --ort-library "$GPU_ORT" \
    --model-dir "$dir" --json "benchmarks/results/step-cuda-$(basename "$dir").json"
done

.venv/bin/python benchmarks/run_bench.py --device "cuda:$ORDINAL" --ort-library "$GPU_ORT" --name bench-cuda "$@"
echo "results: benchmarks/results/bench-cuda.md, benchmarks/results/step-cuda-*.json"

#!/usr/bin/env bash
# End-to-end check of the CUDA path, for a machine with an NVIDIA GPU (not run by `make test`):
#   1. set-up: a separate venv with onnxruntime-gpu==1.31.1 and its CUDA 13 / cuDNN 9 libraries from PyPI;
#   2. the shipped models served twice: with --device cuda:N, and on the CPU;
#   3. parity (benchmarks/device_parity.py): every held-out sample of every shipped model answered
#      on the GPU and on the CPU at the model's default cutoff: same class and exit timestep,
#      probabilities within 1e-4;
#   4. the step by batch size on the GPU (spikeserve-tools step-bench on digits): states resident on
#      the device against states bound in host memory and a plain ONNX Runtime loop.
# Offline machines: point pip at a wheelhouse holding those wheels (PIP_FIND_LINKS=/path/to/wheels).
# Usage: scripts/check-cuda.sh [cuda-ordinal]
set -euo pipefail
cd "$(dirname "$0")/.."
ORDINAL="${1:-0}"
GPU_VENV=.venv-gpu

make venv build
if [ ! -f "$GPU_VENV/.installed" ]; then
  python3 -m venv "$GPU_VENV"
  "$GPU_VENV/bin/pip" install --quiet onnxruntime-gpu==1.31.1 nvidia-cuda-runtime nvidia-cublas \
    nvidia-cudnn-cu13 nvidia-cufft nvidia-curand nvidia-nvjitlink
  touch "$GPU_VENV/.installed"
fi
SITE=$("$GPU_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
GPU_ORT=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.1.31.1)
CPU_ORT=$(.venv/bin/python -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.*")))[-1])')
# The CUDA libraries come from the nvidia-* wheels; ONNX Runtime's CUDA provider finds them here.
LD_LIBRARY_PATH="$(find "$SITE/nvidia" -name lib -type d | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH

target/release/spikeserve serve --device "cuda:$ORDINAL" --ort-library "$GPU_ORT" --http-addr 127.0.0.1:18000 --grpc-addr 127.0.0.1:18050 &
GPU_PID=$!
target/release/spikeserve serve --device cpu --ort-library "$CPU_ORT" --http-addr 127.0.0.1:18001 --grpc-addr 127.0.0.1:18051 &
CPU_PID=$!
trap 'kill $GPU_PID $CPU_PID 2>/dev/null || true' EXIT

for base in http://127.0.0.1:18000 http://127.0.0.1:18001; do
  for _ in $(seq 300); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
  curl -sf "$base/health" >/dev/null || { echo "check-cuda.sh: the server at $base did not come up" >&2; exit 1; }
done
.venv/bin/python benchmarks/device_parity.py --a http://127.0.0.1:18000 --b http://127.0.0.1:18001
target/release/spikeserve-tools step-bench --device "cuda:$ORDINAL" --ort-library "$GPU_ORT" \
  --model-dir models/digits --batches 1,8,64,256 --steps 100

#!/usr/bin/env bash
# End-to-end check of the CUDA path, for a machine with an NVIDIA GPU (not run by `make test`):
#   1. set-up: a separate venv with onnxruntime-gpu==1.31.1 and its CUDA 13 / cuDNN 9 libraries from PyPI;
#   2. one model served with --device cuda:0;
#   3. parity: every held-out digit answered on the GPU and on the CPU, same labels and exits,
#      probabilities within 1e-4;
#   4. throughput: 64 concurrent clients for a fixed number of requests, GPU against CPU.
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

target/release/spikeserve serve --device "cuda:$ORDINAL" --ort-library "$GPU_ORT" --http-addr 127.0.0.1:18000 &
GPU_PID=$!
target/release/spikeserve serve --device cpu --ort-library "$CPU_ORT" --http-addr 127.0.0.1:18001 &
CPU_PID=$!
trap 'kill $GPU_PID $CPU_PID 2>/dev/null || true' EXIT

.venv/bin/python - <<'PY'
import concurrent.futures
import json
import time
import urllib.request

GPU, CPU = "http://127.0.0.1:18000", "http://127.0.0.1:18001"


def call(base: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base}/v1/models/digits/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


for base in (GPU, CPU):
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit(f"server at {base} did not come up")

heldout = json.load(open("models/digits/heldout.json"))
worst = 0.0
for i, x in enumerate(heldout["inputs"]):
    g, c = call(GPU, {"input": x}), call(CPU, {"input": x})
    if (g["class_index"], g["timesteps"]) != (c["class_index"], c["timesteps"]):
        print(f"sample {i}: GPU class {g['class_index']} at t={g['timesteps']}, CPU {c['class_index']} at t={c['timesteps']}")
    worst = max(worst, max(abs(a - b) for a, b in zip(g["probabilities"], c["probabilities"])))
print(f"parity over {len(heldout['inputs'])} held-out digits: largest probability difference {worst:.2e}")
assert worst < 1e-4, "GPU and CPU disagree"

for base, name in ((CPU, "cpu"), (GPU, "cuda")):
    body = {"input": heldout["inputs"][0], "threshold": 1.0}
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda _: call(base, body), range(4000)))
    elapsed = time.perf_counter() - started
    steps = sum(a["timesteps"] for a in answers)
    print(f"{name}: {len(answers) / elapsed:.0f} requests/s, {steps / elapsed:.0f} sample-steps/s at 64 clients")
PY

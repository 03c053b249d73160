#!/usr/bin/env bash
# The GPU run of issue 32, on the lent GPU machine, from the checkout (call plan: docs/operations.md,
# "GPU"). The machine reaches no registry, so everything beyond the tree and the image comes as the
# parts that scripts/gpu-bundle.sh cut, carried over consecutive calls into .gpu-bundle/.
#   1. waits until every part the manifest names is there, checks each part's size and SHA-256,
#      joins and unpacks them, and checks every unpacked file's SHA-256;
#   2. checks for a GPU (nvidia-smi) and for every CUDA library ONNX Runtime's CUDA provider loads
#      (the manifest's `needs` lines), in the nvidia-* packages of the image's python3 (found by
#      importing them there, not by path) and the system's library path;
#   3. benchmarks/gpu_run.py: parity on every held-out sample of every shipped model (GPU against the
#      CPU, through the same ONNX Runtime build), the closed-loop server benchmark at 1, 64 and 256
#      clients, the step by batch size (states resident, host-bound, plain loop) for digits,
#      event-digits and the VGGSNN stand-in; every result a file under RESULTS_DIR, summary.md first.
# All of it within TIME_BOUND_S (8 minutes); about 4 expected. A missing part, a wrong checksum, no
# GPU or no CUDA library stops it with one line naming the cause.
#
# Usage: scripts/gpu-run.sh [options] RESULTS_DIR
#   --dry-run        the whole sequence on the CPU (--device cpu, a bundle built with --allow-cpu-ort
#                    or not), each step cut short: what the tests run where no GPU is
#   --bundle DIR     where the manifest and parts are (default .gpu-bundle)
#   --wait S         how long to wait for missing parts (default 5)
#   --only STEPS     a comma list of parity,server,step: rerun only these (the bundle is not unpacked
#                    again when it already was, only checked)
#   --parts-only     check the parts that are there so far (size, SHA-256), list the missing; exit 0
#   --unpack-only    steps 1 only: verify, join, unpack, verify; no RESULTS_DIR
# Environment: GPU_RUN_PYTHON (default python3: the image's, which holds the nvidia-* packages),
# GPU_RUN_ORDINAL (default 0), GPU_RUN_LZMA=python (unpack with Python's lzma even where xz is).
set -euo pipefail
cd "$(dirname "$0")/.."

TIME_BOUND_S=480
bundle=.gpu-bundle
dry=0
wait_s=5
only=""
mode=run
results=""

stop() { echo "gpu-run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --bundle) bundle=$2; shift 2 ;;
    --wait) wait_s=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --parts-only) mode=parts; shift ;;
    --unpack-only) mode=unpack; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) stop "unknown option $1 (see --help)" ;;
    *) results=$1; shift ;;
  esac
done
[ "$mode" != run ] || [ -n "$results" ] || stop "give the folder for the results (see --help)"
py=${GPU_RUN_PYTHON:-python3}

manifest=$bundle/manifest.txt
[ -f "$manifest" ] || stop "missing manifest: $manifest (carry it with the parts)"
mapfile -t parts < <(awk '$1 == "part" { print $2, $3, $4 }' "$manifest")
[ "${#parts[@]}" -gt 0 ] || stop "wrong manifest: $manifest lists no part"

# One part: present, then its size and SHA-256 against the manifest.
check_part() {
  local name=$1 size=$2 sha=$3 got
  got=$(stat -c %s "$bundle/$name")
  [ "$got" = "$size" ] || stop "wrong checksum: $name ($got bytes, the manifest says $size)"
  got=$(sha256sum "$bundle/$name" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || stop "wrong checksum: $name (sha256 $got, the manifest says $sha)"
}

missing_parts() {
  local line name
  for line in "${parts[@]}"; do
    name=${line%% *}
    [ -f "$bundle/$name" ] || echo "$name"
  done
}

# The image's nvidia-* packages (CUDA 13, cuDNN 9): wherever its python3 finds them.
nvidia_dirs=$("$py" - <<'PY' 2>/dev/null || true
import os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
found = set()
for root in roots:
    for here, _, names in os.walk(root):
        if any(n.startswith("lib") and ".so" in n for n in names):
            found.add(here)
print(":".join(sorted(found)))
PY
)
if [ -n "$nvidia_dirs" ]; then
  export LD_LIBRARY_PATH="$nvidia_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# The first of the manifest's `needs` libraries that the dynamic loader cannot open, with its error.
cuda_library_missing() {
  "$py" - "$manifest" <<'PY'
import ctypes
import sys

for line in open(sys.argv[1]):
    words = line.split()
    if words[:1] == ["needs"]:
        try:
            ctypes.CDLL(words[1])
        except OSError as error:
            print(f"{words[1]} ({error})")
            break
PY
}

check_cuda_libraries() {
  local missing
  missing=$(cuda_library_missing)
  [ -z "$missing" ] ||
    stop "no CUDA library: $missing, which ONNX Runtime's CUDA provider loads (nvidia-* folders: ${nvidia_dirs:-none in $py})"
}

if [ "$mode" = parts ]; then
  present=0
  for line in "${parts[@]}"; do
    read -r name size sha <<<"$line"
    if [ -f "$bundle/$name" ]; then
      check_part "$name" "$size" "$sha"
      present=$((present + 1))
    fi
  done
  echo "gpu-run.sh: $present of ${#parts[@]} parts here and verified; missing: $(missing_parts | tr '\n' ' ')"
  # Known from the first call on, before the other parts cost device time.
  if grep -q '^needs ' "$manifest"; then
    check_cuda_libraries
    echo "gpu-run.sh: every CUDA library the provider loads opens here (nvidia-* folders: ${nvidia_dirs:-none})"
  fi
  exit 0
fi

# The parts come over several calls; on the device they are all there by the last one, so the wait
# is short (it is there for a copy still being written, and to say which part never came).
deadline=$((SECONDS + wait_s))
while missing=$(missing_parts) && [ -n "$missing" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    first=$(head -n1 <<<"$missing")
    stop "missing part: $first ($bundle/$first; missing: $(tr '\n' ' ' <<<"$missing")of ${#parts[@]})"
  fi
  sleep 1
done

unpacked=$bundle/unpacked
manifest_sha=$(sha256sum "$manifest" | cut -d' ' -f1)

# Undoes xz with the xz binary, or with Python's lzma where the image has no xz (or where
# GPU_RUN_LZMA=python asks for it: the tests).
unpacker=xz
if [ "${GPU_RUN_LZMA:-}" = python ] || ! command -v xz >/dev/null; then unpacker="Python's lzma"; fi
decompress() {
  if [ "$unpacker" = xz ]; then
    xz -dc -T0
  else
    "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1 << 20)'
  fi
}

verify_files() {
  local dir=$1 kind size sha path got
  while read -r kind size sha path; do
    [ "$kind" = file ] || continue
    [ -f "$dir/$path" ] || stop "missing file: $path (not in the unpacked bundle)"
    got=$(sha256sum "$dir/$path" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || stop "wrong checksum: $path (reassembled file: sha256 $got, the manifest says $sha)"
  done <"$manifest"
}

if [ -f "$unpacked/.verified" ] && [ "$(cat "$unpacked/.verified")" = "$manifest_sha" ]; then
  # Unpacked by an earlier call from these very parts (a rerun): checked again, not unpacked again.
  verify_files "$unpacked"
else
  for line in "${parts[@]}"; do
    read -r name size sha <<<"$line"
    check_part "$name" "$size" "$sha"
  done
  read -r _ archive archive_size archive_sha < <(awk '$1 == "archive"' "$manifest")
  rm -rf "$unpacked" "$unpacked.tmp"
  mkdir -p "$unpacked.tmp"
  for line in "${parts[@]}"; do cat "$bundle/${line%% *}"; done >"$bundle/$archive"
  got=$(stat -c %s "$bundle/$archive")
  [ "$got" = "$archive_size" ] || stop "wrong checksum: $archive (joined from the parts: $got bytes, the manifest says $archive_size)"
  got=$(sha256sum "$bundle/$archive" | cut -d' ' -f1)
  [ "$got" = "$archive_sha" ] || stop "wrong checksum: $archive (joined from the parts: sha256 $got, the manifest says $archive_sha)"
  # Two xz streams, each a tar: -i reads on past the first tar's end.
  decompress <"$bundle/$archive" | tar -x -i -C "$unpacked.tmp" || stop "could not unpack $archive ($unpacker)"
  echo "gpu-run.sh: unpacked with $unpacker"
  rm -f "$bundle/$archive"
  verify_files "$unpacked.tmp"
  mv "$unpacked.tmp" "$unpacked"
  echo "$manifest_sha" >"$unpacked/.verified"
fi
files=$(grep -c '^file ' "$manifest")
echo "gpu-run.sh: bundle verified: ${#parts[@]} parts, $files files in $unpacked (${SECONDS}s)"
[ "$mode" = run ] || exit 0

# Built on a development machine: its glibc must not be newer than this one's.
need_glibc=$(awk '$1 == "needs_glibc" { print $2 }' "$manifest")
have_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }' || true)
if [ -n "$need_glibc" ] && [ -n "$have_glibc" ] &&
  [ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | head -n1)" != "$need_glibc" ]; then
  stop "too old a glibc: the bundle's binaries need $need_glibc, this machine has $have_glibc"
fi

ort_library=""
for found in "$unpacked"/ort/libonnxruntime.so.*.*.*; do [ -f "$found" ] && ort_library=$found; done
[ -n "$ort_library" ] || stop "wrong manifest: the bundle holds no libonnxruntime.so.X.Y.Z"
standin=$(awk '$1 == "standin" { print $2 }' "$manifest")

if [ "$dry" = 1 ]; then
  device=cpu
  gpu="none (dry run: --device cpu)"
else
  command -v nvidia-smi >/dev/null || stop "no GPU: nvidia-smi is not on PATH"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1 || true)
  [ -n "$gpu" ] || stop "no GPU: nvidia-smi lists none"
  [ -f "$unpacked/ort/libonnxruntime_providers_cuda.so" ] ||
    stop "no CUDA library: the bundle holds no libonnxruntime_providers_cuda.so (built with --allow-cpu-ort: use --dry-run)"
  # Each library the CUDA provider loads, opened the way the provider will open it (dlopen, with the
  # library path above, the loader's cache and default folders, where the driver's libcuda.so.1 is),
  # so that a library its own dependencies lack is caught here too.
  check_cuda_libraries
  device=cuda:${GPU_RUN_ORDINAL:-0}
fi

mkdir -p "$results"
{
  echo "gpu: $gpu"
  echo "device: $device"
  echo "bundle: $(awk '$1 == "commit" || $1 == "created" || $1 == "compression" { printf "%s;  ", $0 }' "$manifest")"
  echo "checkout: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "ort_library: $ort_library"
  echo "nvidia library folders: ${nvidia_dirs:-none}"
  echo "python: $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  echo "bundle ready after: ${SECONDS}s"
} >"$results/environment.txt"

remaining=$((TIME_BOUND_S - SECONDS))
[ "$remaining" -gt 30 ] || stop "the time bound (${TIME_BOUND_S}s) ran out before the measuring began"
dry_flag=()
[ "$dry" = 1 ] && dry_flag=(--dry-run)
only_flag=()
[ -n "$only" ] && only_flag=(--only "$only")
status=0
ORT_DYLIB_PATH="$ort_library" timeout -k 10 "$remaining" "$py" benchmarks/gpu_run.py \
  --device "$device" --ort-library "$ort_library" --bin-dir "$unpacked/bin" \
  --standin "$unpacked/models/$standin" --results "$results" --deadline-s "$remaining" \
  "${dry_flag[@]}" "${only_flag[@]}" || status=$?
[ "$status" -ne 124 ] || stop "the time bound (${TIME_BOUND_S}s) ran out; what finished is in $results"
echo "gpu-run.sh: done in ${SECONDS}s, exit $status; results in $results (summary.md)"
exit "$status"

#!/usr/bin/env bash
# Builds the bundle that the GPU run carries (issue 32; call plan in docs/operations.md, "GPU").
# Runs on a development machine, which reaches PyPI. The lent GPU machine reaches no registry and takes
# at most 64 MiB of working tree per call (tracked files, untracked files git does not ignore, a
# shared/ folder inside the checkout, carried paths), so what the run needs beyond its image travels
# here: compressed, cut into numbered parts that each fit one call beside the tree, and listed in a
# manifest that scripts/gpu-run.sh checks before it uses anything.
#
# What travels (everything else comes from the tree or from the image):
#   ort/      the CUDA build of ONNX Runtime from the pinned onnxruntime-gpu wheel: the core library
#             (which also runs the CPU side of the parity check, so both sides are the same build),
#             the CUDA provider and the shared provider library; not TensorRT's provider.
#   bin/      the release spikeserve and spikeserve-tools, stripped of their debug info (the server
#             goes from 87 MB to 17 MB).
#   models/   the untrained VGGSNN stand-in the step benchmark times (exported here as
#             benchmarks/overhead.py does, since the image's torch/onnx exporter is another version).
# The shipped models and their held-out files are tracked, so they travel with the tree. No Python
# wheel travels: the run's Python (benchmarks/gpu_run.py and what it imports) needs only the standard
# library, and the image's python3 is 3.12. The CUDA 13 / cuDNN 9 libraries do not travel: the image's
# python3 holds them as nvidia-* packages (see the manifest's `needs` lines, read from the provider).
#
# Compression: xz. Size barely decides (the CUDA provider, mostly GPU code NVIDIA already compressed,
# packs to 186.5 MB with xz -6, 185.6 MB with zstd -19 --long, 191.2 MB with zstd -3); what decides
# is that the GPU machine can always undo it: if its image has no xz binary, Python's standard library
# has lzma, while its Python 3.12 has no zstd module and a zstd binary is not promised there.
#
# Usage: scripts/gpu-bundle.sh [options]
#   --out DIR          where the parts and manifest go (default .gpu-bundle, git-ignored)
#   --wheel FILE       the onnxruntime-gpu wheel to take ONNX Runtime from (default: download the
#                      pinned one with .venv/bin/pip into DIR/cache)
#   --ort-dir DIR      take the libraries from a folder instead (onnxruntime/capi of an install)
#   --allow-cpu-ort    accept libraries without the CUDA provider (the tests' CPU bundle; gpu-run.sh
#                      then only runs --dry-run)
#   --bin-dir DIR      the release binaries (default target/release)
#   --standin-dir DIR  an already exported stand-in model folder (default: export VGGSNN here)
#   --vggsnn-width W   the stand-in's width when exporting it (default 1, the papers' network)
#   --part-size BYTES  part size (default: computed from the tree, see "the part size" below)
#   --margin-mib N     head room kept under the 64 MiB of a call (default 4)
#   --level N          xz preset (default 6; the tests use 0 to stay fast)
#   --print-part-size  print the part size and the tree's bytes, and stop
#   --check-fit        check that the tree as it is now, the manifest and the largest part of the
#                      bundle in --out still make at most 64 MiB (run it just before the calls)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

ORT_VERSION=1.31.1
CALL_LIMIT_BYTES=$((64 * 1024 * 1024))
# The manifest travels with every part; its room is reserved so the arithmetic stays on the safe side.
MANIFEST_RESERVE_BYTES=$((64 * 1024))
ARCHIVE=spikeserve-gpu.tar.xz

out=.gpu-bundle
wheel=""
ort_dir=""
allow_cpu_ort=0
bin_dir=target/release
standin_dir=""
vggsnn_width=1
part_size=""
margin_mib=4
level=6
print_part_size=0
check_fit=0

die() { echo "gpu-bundle.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --wheel) wheel=$2; shift 2 ;;
    --ort-dir) ort_dir=$2; shift 2 ;;
    --allow-cpu-ort) allow_cpu_ort=1; shift ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --standin-dir) standin_dir=$2; shift 2 ;;
    --vggsnn-width) vggsnn_width=$2; shift 2 ;;
    --part-size) part_size=$2; shift 2 ;;
    --margin-mib) margin_mib=$2; shift 2 ;;
    --level) level=$2; shift 2 ;;
    --print-part-size) print_part_size=1; shift ;;
    --check-fit) check_fit=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -z "$wheel" ] || [ -z "$ort_dir" ] || die "give --wheel or --ort-dir, not both"

# --- the part size ----------------------------------------------------------------------------------
# What a call sends besides the part: every file git does not ignore (tracked or not) and a shared/
# folder inside the checkout. Computed now; the margin absorbs what is committed before the calls.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard |
  xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }' || true)
if [ -d shared ]; then
  tree_bytes=$((tree_bytes + $(du -sb shared | cut -f1)))
fi
if [ "$check_fit" = 1 ]; then
  # Just before the calls: the tree may have grown since the bundle was cut.
  [ -f "$out/manifest.txt" ] || die "no bundle in $out"
  largest=$(awk '$1 == "part" && $3 > m { m = $3 } END { print m + 0 }' "$out/manifest.txt")
  call=$((tree_bytes + $(stat -c %s "$out/manifest.txt") + largest))
  [ "$call" -le "$CALL_LIMIT_BYTES" ] ||
    die "does not fit: the tree ($tree_bytes bytes), the manifest and a part ($largest) make $call bytes, over 64 MiB: build the bundle again"
  echo "gpu-bundle.sh: fits: the tree ($tree_bytes bytes), the manifest and the largest part ($largest) make $call bytes, $(((CALL_LIMIT_BYTES - call) / 1024)) KiB under 64 MiB"
  exit 0
fi
if [ -z "$part_size" ]; then
  part_size=$((CALL_LIMIT_BYTES - tree_bytes - MANIFEST_RESERVE_BYTES - margin_mib * 1024 * 1024))
  part_size=$((part_size / 1048576 * 1048576))
  [ "$part_size" -ge 1048576 ] || die "the tree takes $tree_bytes bytes: no room for a part under 64 MiB"
fi
if [ "$print_part_size" = 1 ]; then
  echo "$part_size $tree_bytes"
  exit 0
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
staging=$(mktemp -d "$out/staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/ort" "$staging/bin" "$staging/models"

# --- ONNX Runtime -------------------------------------------------------------------------------
# The core library, the CUDA provider and the shared provider library, nothing else of the wheel
# (its TensorRT provider and Python module are not used).
if [ -z "$ort_dir" ]; then
  if [ -z "$wheel" ]; then
    # One version for any Python: only the native libraries are used, so the Python tag does not
    # matter; the platform tags make the download work from a non-x86 machine too.
    mkdir -p "$out/cache"
    first_wheel() {
      local found
      for found in "$out"/cache/onnxruntime_gpu-"$ORT_VERSION"-*.whl; do
        [ -f "$found" ] && echo "$found" && return
      done
    }
    wheel=$(first_wheel)
    if [ -z "$wheel" ]; then
      "$REPO/.venv/bin/pip" download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$out/cache" "onnxruntime-gpu==$ORT_VERSION" || die "could not download onnxruntime-gpu==$ORT_VERSION"
      wheel=$(first_wheel)
    fi
  fi
  [ -f "$wheel" ] || die "no wheel at $wheel"
  python3 - "$wheel" "$staging/ort" <<'PY'
import re, shutil, sys, zipfile
from pathlib import Path

wanted = re.compile(r"onnxruntime/capi/(libonnxruntime\.so\.\d+\.\d+\.\d+|libonnxruntime_providers_(cuda|shared)\.so)$")
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if wanted.search(name):
            with wheel.open(name) as source, open(Path(sys.argv[2]) / Path(name).name, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
PY
else
  [ -d "$ort_dir" ] || die "no folder $ort_dir"
  for lib in "$ort_dir"/libonnxruntime.so.*.*.* "$ort_dir"/libonnxruntime_providers_cuda.so \
    "$ort_dir"/libonnxruntime_providers_shared.so; do
    [ -f "$lib" ] && cp "$lib" "$staging/ort/"
  done
fi
core=""
for found in "$staging"/ort/libonnxruntime.so.*.*.*; do [ -f "$found" ] && core=$found; done
[ -n "$core" ] || die "no libonnxruntime.so.X.Y.Z in ${wheel:-$ort_dir}"
case "$core" in *".so.$ORT_VERSION") ;; *) die "$(basename "$core") is not the pinned $ORT_VERSION" ;; esac
if [ -f "$staging/ort/libonnxruntime_providers_cuda.so" ]; then
  ort_build=cuda
elif [ "$allow_cpu_ort" = 1 ]; then
  ort_build=cpu
else
  die "no libonnxruntime_providers_cuda.so in ${wheel:-$ort_dir} (a CPU build; --allow-cpu-ort for a dry-run bundle)"
fi

# --- binaries -----------------------------------------------------------------------------------
for name in spikeserve spikeserve-tools; do
  [ -x "$bin_dir/$name" ] || die "no $bin_dir/$name (cargo build --release --locked --workspace)"
  # The GPU machine is x86-64 whatever this machine is.
  readelf -h "$bin_dir/$name" | grep -q 'X86-64' || die "$bin_dir/$name is not an x86-64 binary"
  strip -o "$staging/bin/$name" "$bin_dir/$name"
done

# --- the VGGSNN stand-in --------------------------------------------------------------------------
if [ -z "$standin_dir" ]; then
  export_dir="$staging/export"
  mkdir -p "$export_dir"
  standin_dir=$(PYTHONPATH="$REPO/training:$REPO/benchmarks" "$REPO/.venv/bin/python" -c '
import sys
from pathlib import Path
import overhead
print(overhead.export_vggsnn_standin(float(sys.argv[1]), Path(sys.argv[2])))' "$vggsnn_width" "$export_dir" | tail -n1)
fi
[ -f "$standin_dir/model.onnx" ] || die "no model.onnx in $standin_dir"
standin_name=$(basename "$standin_dir")
mkdir -p "$staging/models/$standin_name"
# The graph (and external data, if the exporter wrote any); the held-out file is event-digits', tracked.
find "$standin_dir" -maxdepth 1 -type f -name 'model.onnx*' -exec cp {} "$staging/models/$standin_name/" \;
rm -rf "${export_dir:-/nonexistent}"

# --- archive, parts, manifest -------------------------------------------------------------------
rm -f "$out"/part-?? "$out/manifest.txt" "$out/$ARCHIVE"
files=$(cd "$staging" && find ort bin models -type f | LC_ALL=C sort)
# Two xz streams in one file, each with the filters that suit it: the x86 branch filter for the
# libraries and binaries (about 1 MB less on the core library), and 4-byte literals for the
# stand-in's float32 weights (about 2 MB less). Each stream is a tar of its own; `xz -d` joins them
# and `tar -i` reads past the first one's end. Fixed order, owner and times: the same inputs give
# the same archive.
tar_of() {
  (cd "$staging" && grep "$@" <<<"$files" |
    tar --owner=0 --group=0 --numeric-owner --mtime=@0 --no-recursion -T - -cf -)
}
{
  tar_of -v '^models/' | nice xz -T0 --x86 "--lzma2=preset=$level" -c
  tar_of '^models/' | nice xz -T0 "--lzma2=preset=$level,lc=0,lp=2,pb=2" -c
} >"$out/$ARCHIVE"
archive_bytes=$(stat -c %s "$out/$ARCHIVE")
archive_sha=$(sha256sum "$out/$ARCHIVE" | cut -d' ' -f1)
split -b "$part_size" -d -a 2 --numeric-suffixes=1 "$out/$ARCHIVE" "$out/part-"
rm -f "$out/$ARCHIVE"

{
  echo "# The spikeserve GPU bundle (scripts/gpu-bundle.sh); scripts/gpu-run.sh checks everything below."
  echo "format 1"
  echo "created $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "ort_version $ORT_VERSION"
  echo "ort_build $ort_build"
  echo "standin $standin_name"
  echo "compression xz preset $level, two streams (x86 filter; lc=0,lp=2,pb=2)"
  echo "tree_bytes $tree_bytes"
  echo "part_size $part_size"
  echo "archive $ARCHIVE $archive_bytes $archive_sha"
  for part in "$out"/part-??; do
    echo "part $(basename "$part") $(stat -c %s "$part") $(sha256sum "$part" | cut -d' ' -f1)"
  done
  while IFS= read -r file; do
    echo "file $(stat -c %s "$staging/$file") $(sha256sum "$staging/$file" | cut -d' ' -f1) $file"
  done <<<"$files"
  # The newest glibc the binaries and libraries ask for: gpu-run.sh compares it with the machine's.
  echo "needs_glibc $(for f in "$staging"/bin/* "$staging"/ort/*; do objdump -T "$f"; done |
    grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n1)"
  # The libraries the CUDA provider loads that do not travel: the image's nvidia-* packages hold them.
  if [ "$ort_build" = cuda ]; then
    readelf -d "$staging/ort/libonnxruntime_providers_cuda.so" |
      sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
      grep -Ev '^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux.*)\.so|^libonnxruntime' |
      sed 's/^/needs /' || true
    # cuDNN is opened by the provider itself (dlopen), so the dynamic section does not list it.
    echo "needs libcudnn.so.9"
  fi
} >"$out/manifest.txt"

parts=("$out"/part-??)
echo "gpu-bundle.sh: ${#parts[@]} part(s) of at most $part_size bytes in $out (tree $tree_bytes bytes, archive $archive_bytes bytes, xz preset $level)"
grep -E '^(part|needs) ' "$out/manifest.txt"

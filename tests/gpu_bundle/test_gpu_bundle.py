"""scripts/gpu-bundle.sh and scripts/gpu-run.sh where no GPU is (issue 32).

One bundle is built from real files: the CPU onnxruntime library of .venv standing in for the GPU
wheel's (which is 255 MB and stays off CI), the release binaries, and a narrow VGGSNN stand-in
exported as the real bundle's is; cut into 4 MiB parts at xz's fastest preset. Each test works on a
copy of the parts, since gpu-run.sh unpacks beside them."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_run as gpu_run_py

REPO = Path(__file__).resolve().parents[2]
GPU_BUNDLE = REPO / "scripts" / "gpu-bundle.sh"
GPU_RUN = REPO / "scripts" / "gpu-run.sh"
PART_SIZE = 4 * 1024 * 1024
STANDIN = "vggsnn-x0.125"
CALL_LIMIT = 64 * 1024 * 1024


def ort_library() -> Path:
    configured = os.environ.get("ORT_DYLIB_PATH")
    if configured:
        return Path(configured)
    found = sorted(REPO.glob(".venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*"))
    assert found, "no onnxruntime in .venv (make venv)"
    return found[-1]


def bin_dir() -> Path:
    server = Path(os.environ.get("SPIKESERVE_BIN", "target/release/spikeserve"))
    return (server if server.is_absolute() else REPO / server).parent


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(bundle: Path) -> dict[str, list[list[str]]]:
    """The manifest's lines by their first word."""
    lines: dict[str, list[list[str]]] = {}
    for line in (bundle / "manifest.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            kind, *rest = line.split()
            lines.setdefault(kind, []).append(rest)
    return lines


def gpu_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GPU_RUN_PYTHON=sys.executable, **(env or {}))
    return subprocess.run(
        [str(GPU_RUN), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    done = subprocess.run(
        [
            str(GPU_BUNDLE), "--out", str(out), "--ort-dir", str(ort_library().parent), "--allow-cpu-ort",
            "--bin-dir", str(bin_dir()), "--vggsnn-width", "0.125", "--part-size", str(PART_SIZE),
            "--level", "0",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    """The manifest and parts alone, as the calls leave them on the GPU machine: the manifest copied
    (tests edit it), the parts linked (CI's disk is small; a test that changes one replaces it)."""
    target = tmp_path / "bundle"
    target.mkdir()
    shutil.copy(bundle / "manifest.txt", target / "manifest.txt")
    for path in sorted(bundle.glob("part-??")):
        os.link(path, target / path.name)
    return target


def test_the_parts_fit_a_call_and_the_manifest_lists_each(bundle: Path) -> None:
    lines = manifest(bundle)
    parts = sorted(bundle.glob("part-??"))
    assert [p.name for p in parts] == [f"part-{i:02d}" for i in range(1, len(parts) + 1)]
    assert len(parts) >= 3
    assert all(p.stat().st_size == PART_SIZE for p in parts[:-1])
    assert 0 < parts[-1].stat().st_size <= PART_SIZE
    assert [[p.name, str(p.stat().st_size), sha256(p)] for p in parts] == lines["part"]
    _, size, digest = lines["archive"][0]
    joined = b"".join(p.read_bytes() for p in parts)
    assert (len(joined), hashlib.sha256(joined).hexdigest()) == (int(size), digest)
    assert joined[:6] == b"\xfd7zXZ\x00", "xz's magic"
    paths = {row[2] for row in lines["file"]}
    assert paths == {
        "ort/libonnxruntime.so.1.31.1",
        "ort/libonnxruntime_providers_shared.so",
        "bin/spikeserve",
        "bin/spikeserve-tools",
        f"models/{STANDIN}/model.onnx",
    }
    assert lines["ort_build"] == [["cpu"]] and lines["standin"] == [[STANDIN]]
    assert "needs" not in lines, "a CPU build loads no CUDA library"
    # The newest glibc symbol the binaries use, at most this machine's (they run here).
    needed = tuple(map(int, lines["needs_glibc"][0][0].split(".")))
    assert (2, 17) <= needed <= tuple(map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")))


def test_the_part_size_leaves_the_tree_and_a_margin_under_64_mib() -> None:
    done = subprocess.run([str(GPU_BUNDLE), "--print-part-size"], cwd=REPO, capture_output=True, text=True, check=True)
    part_size, tree_bytes = map(int, done.stdout.split())
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    paths = [REPO / os.fsdecode(p) for p in listed if p]
    # Links count as links (stat -c %s), as they travel.
    expected_tree = sum(p.lstat().st_size for p in paths if os.path.lexists(p))
    assert tree_bytes == expected_tree
    assert part_size % (1 << 20) == 0
    # The tree, the manifest's room (64 KiB) and 4 MiB of margin, then one part: under a call's 64 MiB.
    assert CALL_LIMIT - (4 << 20) - (1 << 20) < tree_bytes + (64 << 10) + part_size <= CALL_LIMIT - (4 << 20)


def test_the_fit_is_checked_again_before_the_calls(copy: Path) -> None:
    done = subprocess.run(
        [str(GPU_BUNDLE), "--check-fit", "--out", str(copy)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "fits: " in done.stdout, done.stderr
    # A part that, beside today's tree, would make a call larger than 64 MiB.
    manifest_path = copy / "manifest.txt"
    text = manifest_path.read_text().replace(f"part part-01 {PART_SIZE} ", f"part part-01 {40 << 20} ")
    manifest_path.write_text(text)
    done = subprocess.run(
        [str(GPU_BUNDLE), "--check-fit", "--out", str(copy)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and done.stderr.startswith("gpu-bundle.sh: does not fit: "), done.stderr
    assert "build the bundle again" in done.stderr


def test_reassembled_the_bundle_is_byte_identical_to_its_sources(copy: Path, tmp_path: Path) -> None:
    done = gpu_run("--bundle", str(copy), "--unpack-only")
    assert done.returncode == 0, done.stderr
    assert "unpacked with xz" in done.stdout
    unpacked = copy / "unpacked"
    assert (unpacked / "ort/libonnxruntime.so.1.31.1").read_bytes() == ort_library().read_bytes()
    shared = ort_library().parent / "libonnxruntime_providers_shared.so"
    assert (unpacked / "ort/libonnxruntime_providers_shared.so").read_bytes() == shared.read_bytes()
    for name in ("spikeserve", "spikeserve-tools"):
        stripped = tmp_path / name
        subprocess.run(["strip", "-o", str(stripped), str(bin_dir() / name)], check=True)
        assert (unpacked / "bin" / name).read_bytes() == stripped.read_bytes()
        assert stripped.stat().st_size < (bin_dir() / name).stat().st_size
        assert subprocess.run([str(unpacked / "bin" / name), "--help"], capture_output=True).returncode == 0
    on_disk = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file() and p.name != ".verified"}
    assert on_disk == {row[2] for row in manifest(copy)["file"]}
    for size, digest, path in manifest(copy)["file"]:
        assert (unpacked / path).stat().st_size == int(size) and sha256(unpacked / path) == digest


def test_without_xz_python_unpacks_the_same_files(copy: Path) -> None:
    done = gpu_run("--bundle", str(copy), "--unpack-only", env={"GPU_RUN_LZMA": "python"})
    # gpu-run.sh checks every unpacked file against the manifest's SHA-256 itself.
    assert done.returncode == 0, done.stderr
    assert "unpacked with Python's lzma" in done.stdout
    assert (copy / "unpacked/ort/libonnxruntime.so.1.31.1").read_bytes() == ort_library().read_bytes()


def test_a_corrupted_part_is_refused_with_its_name(copy: Path) -> None:
    part = copy / "part-02"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.unlink()  # a link to the built bundle's part: replaced, not written through
    part.write_bytes(bytes(data))
    done = gpu_run("--bundle", str(copy), "--unpack-only")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpu-run.sh: wrong checksum: part-02 ("), done.stderr
    assert not (copy / "unpacked").exists()


def test_a_run_out_of_time_stops_naming_the_step(tmp_path: Path) -> None:
    standin = tmp_path / "standin"
    standin.mkdir()
    shutil.copy(REPO / "models/digits/model.onnx", standin / "model.onnx")
    done = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "gpu_run.py"), "--device", "cpu",
            "--ort-library", str(ort_library()), "--bin-dir", str(bin_dir()), "--standin", str(standin),
            "--results", str(tmp_path / "results"), "--deadline-s", "0.5",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "gpu-run.sh: the time bound ran out before starting device\n"
    assert "Stopped: the time bound ran out before starting device" in (tmp_path / "results/summary.md").read_text()


def test_a_missing_part_is_refused_with_its_name(copy: Path) -> None:
    (copy / "part-03").unlink()
    done = gpu_run("--bundle", str(copy), "--wait", "1", "--unpack-only")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpu-run.sh: missing part: part-03 ("), done.stderr
    # Between calls: what has come so far is checked, the rest listed.
    done = gpu_run("--bundle", str(copy), "--parts-only")
    assert done.returncode == 0 and "missing: part-03" in done.stdout, done.stdout


def test_a_library_the_cuda_provider_needs_is_looked_for_from_the_first_call(copy: Path) -> None:
    manifest_path = copy / "manifest.txt"
    original = manifest_path.read_text()
    # Opened through the dynamic loader, as the provider opens them: present, then absent.
    manifest_path.write_text(original + "needs libc.so.6\n")
    done = gpu_run("--bundle", str(copy), "--parts-only")
    assert done.returncode == 0 and "every CUDA library the provider loads opens here" in done.stdout, done.stderr
    manifest_path.write_text(original + "needs libc.so.6\nneeds libspikeserve-absent.so.9\n")
    done = gpu_run("--bundle", str(copy), "--parts-only")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("gpu-run.sh: no CUDA library: libspikeserve-absent.so.9 (libspikeserve-absent.so.9: ")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_without_a_gpu_the_run_stops_in_one_line(copy: Path, tmp_path: Path) -> None:
    done = gpu_run("--bundle", str(copy), str(tmp_path / "results"))
    assert done.returncode == 1
    assert done.stderr == "gpu-run.sh: no GPU: nvidia-smi is not on PATH\n"


def test_the_dry_run_runs_every_step_on_the_cpu(copy: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = gpu_run("--bundle", str(copy), "--dry-run", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "device: cpu" in (results / "environment.txt").read_text()
    parity = json.loads((results / "parity.json").read_text())
    shipped = {p.parent.name for p in (REPO / "models").glob("*/heldout.json")}
    assert {m["model"] for m in parity["models"]} == shipped
    assert all(m["samples"] == 3 and m["disagreements"] == [] for m in parity["models"]), parity
    for model in ("digits", STANDIN):
        for clients in (1, 64, 256):
            report = json.loads((results / f"server-{model}-c{clients}.json").read_text())
            assert (report["model"], report["clients"], report["errors"]) == (model, clients, {})
            assert report["ok"] == report["requests"] > 0
    for model in ("digits", "event-digits", STANDIN):
        report = json.loads((results / f"step-{model}.json").read_text())
        assert [row["batch"] for row in report["rows"]] == [1, 64]
        assert all(row["resident_us"] > 0 and row["raw_loop_us"] > 0 for row in report["rows"])
    summary = (results / "summary.md").read_text()
    assert "Parity against the CPU: 0 disagreements" in summary
    # The server at 64 clients set against the plain loop at batch 64.
    assert any(line.startswith("| digits | 64 | 128 | 0 |") and "% of" in line for line in summary.splitlines())

    # The same reports read as a GPU run's: the targets are judged.
    run = gpu_run_py.Run(
        argparse.Namespace(dry_run=False, device="cuda:0", standin=Path(STANDIN)), gpu_run_py.FULL, 0.0
    )
    steps = {m: json.loads((results / f"step-{m}.json").read_text()) for m in ("digits", "event-digits", STANDIN)}
    servers = [
        json.loads((results / f"server-{m}-c{c}.json").read_text()) for m in ("digits", STANDIN) for c in (1, 64, 256)
    ]
    judged = gpu_run_py.summary(run, parity, servers, steps)
    assert judged.startswith("# GPU run\n")
    assert re.search(r"^Target, digits at 64 clients: \d+% of the plain loop \(>= 70%: (met|missed)\)\.$", judged, re.M)
    assert re.search(
        rf"^Target, {re.escape(STANDIN)} at batch 64: resident [\d.]+x faster than host-bound", judged, re.M
    )

    # The rerun of the measuring step alone: the bundle is checked, not unpacked again.
    again = tmp_path / "again"
    done = gpu_run("--bundle", str(copy), "--dry-run", "--only", "step", str(again))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in again.glob("*.json")) == sorted(
        f"step-{m}.json" for m in ("digits", "event-digits", STANDIN)
    )

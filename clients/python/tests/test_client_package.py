"""The package itself: the committed stubs are what protoc makes of proto/ today, and a wheel built from
``clients/python`` carries the stubs, ``py.typed`` and the command."""

import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACKAGE / "tools"))

import generate_stubs  # noqa: E402


def test_the_committed_stubs_match_the_protos() -> None:
    for name, text in generate_stubs.generate().items():
        committed = (generate_stubs.OUTPUT / name).read_text()
        assert committed == text, f"{name} is stale: run clients/python/tools/generate_stubs.py"


def test_the_stubs_import_inside_the_package() -> None:
    from spikeserve_client._proto import anytime_pb2, anytime_pb2_grpc

    assert anytime_pb2.DESCRIPTOR.package == "spikeserve.anytime.v1"
    assert hasattr(anytime_pb2_grpc, "AnytimeStub")


def test_a_wheel_holds_the_stubs_types_and_command(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(tmp_path), str(PACKAGE)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("spikeserve_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        assert "spikeserve-client = spikeserve_client.cli:main" in archive.read(entry_points).decode()
    for name in ("py.typed", "_proto/anytime_pb2.py", "_proto/anytime_pb2.pyi", "_proto/anytime_pb2_grpc.py"):
        assert f"spikeserve_client/{name}" in names
    for requirement in ("grpcio", "protobuf", "httpx", "numpy"):
        assert f"Requires-Dist: {requirement}" in metadata

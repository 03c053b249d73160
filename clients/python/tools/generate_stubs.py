"""Regenerates the committed protobuf/gRPC stubs of ``proto/anytime/v1/anytime.proto`` with the protoc
that grpcio-tools bundles, their imports made relative so that they work inside the package.

    .venv/bin/python clients/python/tools/generate_stubs.py          # rewrites src/spikeserve_client/_proto
    .venv/bin/python clients/python/tools/generate_stubs.py --check  # exits 1 when they differ

``tests/test_stubs.py`` runs the same generation and compares it with the committed files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parents[1]
PROTO_DIR = REPO / "proto"
PROTO = "anytime/v1/anytime.proto"
OUTPUT = PACKAGE / "src" / "spikeserve_client" / "_proto"
FILES = ("anytime_pb2.py", "anytime_pb2.pyi", "anytime_pb2_grpc.py")
ABSOLUTE_IMPORT = "from anytime.v1 import anytime_pb2 as"
RELATIVE_IMPORT = "from . import anytime_pb2 as"


def generate() -> dict[str, str]:
    """The stubs as they should be committed: file name -> text."""
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as out:
        arguments = [f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}"]
        arguments.append(f"--grpc_python_out={out}")
        if protoc.main(["protoc", *arguments, PROTO]) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        generated = Path(out) / "anytime" / "v1"
        texts = {name: (generated / name).read_text() for name in FILES}
    grpc_module = texts["anytime_pb2_grpc.py"]
    if ABSOLUTE_IMPORT not in grpc_module:
        raise RuntimeError(f"the generated gRPC module no longer imports its messages as {ABSOLUTE_IMPORT!r}")
    texts["anytime_pb2_grpc.py"] = grpc_module.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed stubs, write nothing")
    arguments = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = OUTPUT / name
        if arguments.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale stubs in {OUTPUT}: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

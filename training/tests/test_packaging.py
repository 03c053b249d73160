"""The container recipe refers to files that exist and to the same pinned ONNX Runtime as the venv."""

import re

from conftest import PROJECT_ROOT


def test_dockerfile_copies_files_that_exist():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    copies = [
        line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line
    ]
    assert copies, "the Dockerfile copies the sources and models"
    for sources in copies:
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), f"Dockerfile copies {source}, which is missing"


def test_dockerfile_and_venv_pin_the_same_onnxruntime():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    requirements = (PROJECT_ROOT / "training" / "requirements.txt").read_text()
    pinned = re.search(r"^onnxruntime==(\S+)$", requirements, re.MULTILINE)
    assert pinned is not None
    version = pinned.group(1)
    assert f"onnxruntime=={version}" in dockerfile
    assert f"libonnxruntime.so.{version}" in dockerfile

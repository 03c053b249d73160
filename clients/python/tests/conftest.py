"""The release binary serving the shipped models, once per test module (as ``tests/clients`` starts it),
and the package from this checkout's ``src`` (so that the tests see the code, installed or not)."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "clients"))

from spikeserve_process import REPO, Server, ServerStartError, release_binary, started


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    try:
        with started(release_binary(), REPO / "models") as running:
            yield running
    except ServerStartError as error:
        pytest.fail(str(error))

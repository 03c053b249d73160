"""Fixtures shared by the client tests: the release binary serving the shipped models
(``benchmarks/spikeserve_process.py`` starts it)."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from spikeserve_process import REPO, Server, ServerStartError, release_binary, started


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The release binary serving the shipped models, once per test module."""
    try:
        with started(release_binary(), REPO / "models") as running:
            yield running
    except ServerStartError as error:
        pytest.fail(str(error))

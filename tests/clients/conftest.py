"""Fixtures shared by the client tests."""

from collections.abc import Iterator

import pytest
from spikeserve_process import Server, run_server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The release binary serving the shipped models, once per test module."""
    yield from run_server()

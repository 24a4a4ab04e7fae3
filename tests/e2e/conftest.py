"""End-to-end fixtures: the three services as separate processes on free ports, reached only through the public
gRPC API (the `imagineer_client` module and the generated stubs).

Only the services compute with torch; the test process never does (two torch processes on these two cores slow
each other down a hundredfold).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.platform import Platform, start_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory, demo_model_dir) -> Iterator[Platform]:
    """One platform for a whole module (the story tests)."""
    running = start_platform(tmp_path_factory.mktemp("platform"), demo_model_dir)
    yield running
    running.stop()


@pytest.fixture
def fresh_platform(tmp_path, demo_model_dir) -> Iterator[Platform]:
    """A platform of its own, for tests that kill and restart services."""
    running = start_platform(tmp_path, demo_model_dir)
    try:
        yield running
    finally:
        running.stop()

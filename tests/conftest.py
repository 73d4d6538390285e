from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.helpers import Clock, RunningServer, running_server, spec_areas


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spec_server(tmp_path: pathlib.Path, clock: Clock) -> Iterator[RunningServer]:
    """A real server on 127.0.0.1:0 following a repository that publishes SPEC.md's bundle B
    at the clock's now."""
    with running_server(tmp_path / "srv", spec_areas(now=clock.now), clock=clock) as s:
        yield s

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from staycheck.trust.keys import Ed25519Signer

from tests.helpers import Clock, RunningServer, running_server, spec_bundle


@pytest.fixture
def authority() -> Ed25519Signer:
    """A fresh authority key for each test."""
    return Ed25519Signer.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spec_server(
    tmp_path: pathlib.Path, authority: Ed25519Signer, clock: Clock
) -> Iterator[RunningServer]:
    """A real server on 127.0.0.1:0 serving SPEC.md's bundle B at the clock's now."""
    with running_server(
        tmp_path / "srv", spec_bundle(authority, now=clock.now), authority=authority, clock=clock
    ) as s:
        yield s

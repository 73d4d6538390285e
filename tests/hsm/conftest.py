"""Fixtures of the PKCS#11 tests: SoftHSM2 tokens in temporary directories.

- ``hsm`` (one per test session): the token this pytest process itself signs with. A
  PKCS#11 module reads ``SOFTHSM2_CONF`` when it is initialised, once per process, so the
  in-process tests share one configuration; each test makes keys of its own on it.
- ``own_hsm`` (one per test): a token for the processes a test starts (``staycheck serve``,
  the CLI), which get its ``SOFTHSM2_CONF`` in their environment; a test may remove it.

Without SoftHSM2 and OpenSC the tests are skipped, and fail under CI (``CI`` set), where
``make test`` must have installed them.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from tests.hsm.softhsm import SoftHsm, missing_tools


@pytest.fixture(scope="session")
def softhsm_installed() -> None:
    missing = missing_tools()
    if missing:
        message = f"SoftHSM2/OpenSC missing ({', '.join(missing)}): `make test` installs them"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory, softhsm_installed: None) -> Iterator[SoftHsm]:
    token = SoftHsm.create(tmp_path_factory.mktemp("softhsm"))
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    try:
        yield token
    finally:
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before


@pytest.fixture
def own_hsm(tmp_path: pathlib.Path, softhsm_installed: None) -> SoftHsm:
    return SoftHsm.create(tmp_path / "softhsm")

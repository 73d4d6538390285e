"""The verdict key on a SoftHSM2 token for ``make bench`` (issue 12): a throwaway token in the
run's temporary directory (``tests/hsm/softhsm.py``), a key pair made on it by our own
``generate_key_pair``, its signer for the in-process figures and its URI for a server.

A machine without SoftHSM2 (``make bench`` installs it from Debian's packages) or without the
``hsm`` extra gets no token and the figures without it, with a note saying why.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Any

from tests.hsm.softhsm import SoftHsm, missing_tools


@dataclass
class BenchToken:
    hsm: SoftHsm
    uri: str
    """The key's URI with its pin-source: ``staycheck serve --verdict-key`` takes it."""
    signer: Any
    """A ``staycheck.server.pkcs11.Pkcs11Signer`` in this process."""

    @property
    def env(self) -> dict[str, str]:
        return self.hsm.env


def make_token(root: pathlib.Path) -> tuple[BenchToken | None, str]:
    """A token with an Ed25519 verdict key, or None and the reason."""
    missing = missing_tools()
    if missing:
        return None, f"no SoftHSM2 ({', '.join(missing)})"
    try:
        import PyKCS11  # noqa: F401
    except ModuleNotFoundError:
        return None, "no PyKCS11 (pip install 'staycheck[hsm]')"
    from staycheck.server.pkcs11 import generate_key_pair

    hsm = SoftHsm.create(root / "softhsm")
    # A PKCS#11 module reads its configuration once per process, when first initialised.
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    uri = hsm.uri("bench-verdict")
    signer = generate_key_pair(uri)
    return BenchToken(hsm, str(signer.uri), signer), ""

"""A throwaway SoftHSM2 token in a temporary directory, and OpenSC's ``pkcs11-tool`` to make
and read keys on it independently of our code.

``SOFTHSM2_CONF`` points at a configuration file whose token directory is under the test's
temporary directory; ``softhsm2-util --init-token --free`` makes the token. Nothing here
stands in for the token: the module is Debian's ``libsofthsm2.so``, as a server would load
it. ``make test`` installs ``softhsm2`` and ``opensc`` when they are missing.

This module imports no pytest (the bench makes its token with it too).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

_KNOWN_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def module_path() -> str | None:
    """Where Debian put ``libsofthsm2.so`` (``dpkg -L softhsm2``), else a known path."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for package in ("softhsm2", "libsofthsm2"):
            out = subprocess.run(
                ["dpkg", "-L", package], capture_output=True, text=True, timeout=30, check=False
            ).stdout
            for line in out.splitlines():
                if line.endswith("/libsofthsm2.so") and os.path.isfile(line):
                    return line
    return next((p for p in _KNOWN_PATHS if os.path.isfile(p)), None)


def missing_tools() -> list[str]:
    """What of SoftHSM2 and OpenSC is not installed."""
    missing = [t for t in ("softhsm2-util", "pkcs11-tool") if shutil.which(t) is None]
    if module_path() is None:
        missing.append("libsofthsm2.so")
    return missing


@dataclass
class SoftHsm:
    """One SoftHSM2 configuration and its token directory, with a token ``label``."""

    root: pathlib.Path
    module: str
    label: str
    pin: str
    so_pin: str

    @property
    def conf(self) -> pathlib.Path:
        return self.root / "softhsm2.conf"

    @property
    def tokens(self) -> pathlib.Path:
        return self.root / "tokens"

    @property
    def pin_file(self) -> pathlib.Path:
        return self.root / "pin"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to find this token (SoftHSM reads it when initialised)."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    @classmethod
    def create(cls, root: pathlib.Path, *, label: str = "staycheck") -> SoftHsm:
        module = module_path()
        assert module is not None, "SoftHSM2 is not installed"
        root.mkdir(parents=True, exist_ok=True)
        # Distinctive PINs, so a test can look for them in every output.
        hsm = cls(root, module, label, f"pin-{secrets.token_hex(6)}", f"so-{secrets.token_hex(6)}")
        hsm.tokens.mkdir(mode=0o700)
        hsm.conf.write_text(
            f"directories.tokendir = {hsm.tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n"
        )
        hsm.pin_file.write_text(hsm.pin + "\n")
        hsm.pin_file.chmod(0o600)
        hsm.run(
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            hsm.pin,
            "--so-pin",
            hsm.so_pin,
        )
        return hsm

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            env={**os.environ, **self.env},
        )

    def tool(self, *args: str, login: bool = True, check: bool = True) -> Any:
        """``pkcs11-tool --module ... --token-label LABEL [--login --pin PIN] ARGS``."""
        base = ["pkcs11-tool", "--module", self.module, "--token-label", self.label]
        if login:
            base += ["--login", "--pin", self.pin]
        return self.run(*base, *args, check=check)

    def keygen(self, label: str, *, key_type: str = "EC:edwards25519", key_id: str = "") -> str:
        """A key pair made by ``pkcs11-tool --keypairgen``; returns its URI (pin-source)."""
        key_id = key_id or secrets.token_hex(4)
        self.tool("--keypairgen", "--key-type", key_type, "--label", label, "--id", key_id)
        return self.uri(label)

    def read_public_key(self, label: str) -> Any:
        """The public key ``pkcs11-tool --read-object --type pubkey`` reads from the token."""
        out = self.root / f"{label}.pub"
        self.tool(
            "--read-object", "--type", "pubkey", "--label", label, "-o", str(out), login=False
        )
        data = out.read_bytes()
        if data.startswith(b"-----BEGIN"):
            return serialization.load_pem_public_key(data)
        return serialization.load_der_public_key(data)

    def uri(self, label: str, *, pin: str = "source", **extra: str) -> str:
        """The key's RFC 7512 URI; ``pin``: ``source`` (the PIN file), ``value`` (in the
        URI) or ``none``."""
        query = f"module-path={self.module}"
        if pin == "source":
            query += f"&pin-source=file:{self.pin_file}"
        elif pin == "value":
            query += f"&pin-value={self.pin}"
        path = f"token={self.label};object={label}" + "".join(f";{k}={v}" for k, v in extra.items())
        return f"pkcs11:{path}?{query}"

    @contextlib.contextmanager
    def removed(self) -> Iterator[None]:
        """The token's directory moved away (the device pulled), and put back after."""
        (token,) = [p for p in self.tokens.iterdir() if p.is_dir()]
        away = self.root / "removed-token"
        token.rename(away)
        try:
            yield
        finally:
            away.rename(token)


def with_env(env: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **env}

"""Helpers for the partner-listener tests: a throwaway PKI made in the test, a partners file,
a controllable monotonic clock, and a real StayCheckServer with TLS on 127.0.0.1:0.

Nothing here stands in for a StayCheck component: certificates come from ``staycheck.cli.certs``,
the server is ``staycheck.server.app.StayCheckServer`` and the channels are real gRPC TLS channels.
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from staycheck.cli import certs
from staycheck.client.client import tls_credentials
from staycheck.v1 import partner_pb2_grpc as ppb_grpc

from tests.harness import Areas, InProcessServer, in_process
from tests.helpers import Clock

ALL_METHODS = ("VerifyVerdict", "VerifyVerdicts", "SubmitItineraries")


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost, written under ``root``."""

    ca: certs.KeyPair
    server: certs.KeyPair
    ca_path: pathlib.Path
    cert_path: pathlib.Path
    key_path: pathlib.Path

    def partner(self, identity: str, **kwargs: Any) -> certs.KeyPair:
        """A client certificate from this CA whose SAN is ``identity``."""
        return certs.partner_cert(self.ca, identity, **kwargs)

    def credentials(self, pair: certs.KeyPair | None = None) -> grpc.ChannelCredentials:
        """TLS trusting this CA; with ``pair``, presenting that client certificate."""
        if pair is None:
            return tls_credentials(ca=self.ca.cert_pem)
        return tls_credentials(ca=self.ca.cert_pem, cert=pair.cert_pem, key=pair.key_pem)


def make_pki(root: pathlib.Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca("StayCheck test CA")
    server = certs.server_cert(ca)
    certs.write_pair(root, "ca", ca)
    certs.write_pair(root, "server", server)
    return Pki(ca, server, root / "ca.pem", root / "server.pem", root / "server.key")


@dataclass(frozen=True)
class PartnerEntry:
    id: str
    province: str
    identity: str
    methods: Sequence[str] = ALL_METHODS
    requests_per_second: float = 1000
    burst: float = 1000
    max_streams: int | None = None
    ca: str | None = None


def write_partners(path: pathlib.Path, entries: Sequence[PartnerEntry]) -> pathlib.Path:
    """The partners file in the format of ``staycheck.server.partner_access``' docstring, written
    by hand."""
    lines: list[str] = []
    for e in entries:
        methods = ", ".join(f'"{m}"' for m in e.methods)
        lines += [
            "[[partner]]",
            f'id = "{e.id}"',
            f'province = "{e.province}"',
            f'identity = "{e.identity}"',
            f"methods = [{methods}]",
            f"requests_per_second = {e.requests_per_second}",
            f"burst = {e.burst}",
            *([f"max_streams = {e.max_streams}"] if e.max_streams is not None else []),
            *([f'ca = "{e.ca}"'] if e.ca is not None else []),
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class FakeMonotonic:
    """A monotonic clock (float seconds) that only moves when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self._value = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._value += seconds


# The in-process server with TLS (tests/harness.py): ``client`` trusts the test CA,
# ``partner(pair)`` is a mutual-TLS partner client.
TlsServer = InProcessServer


@contextlib.contextmanager
def partner_stub(
    target: str, credentials: grpc.ChannelCredentials | None
) -> Iterator[ppb_grpc.PartnerVerificationStub]:
    """A bare PartnerVerification stub (no retry policy, no wait-for-ready): a refused
    handshake shows as UNAVAILABLE at once. ``credentials=None`` means plaintext."""
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, credentials)
    try:
        yield ppb_grpc.PartnerVerificationStub(channel)
    finally:
        channel.close()


@contextlib.contextmanager
def tls_server(
    root: pathlib.Path,
    *,
    pki: Pki,
    areas: Areas,
    partners: Sequence[PartnerEntry] | None = None,
    clock: Clock | None = None,
    issuer: str = "110000",
    monotonic: FakeMonotonic | None = None,
    **config: Any,
) -> Iterator[InProcessServer]:
    """A real StayCheckServer on 127.0.0.1:0 following a repository that publishes
    ``areas``: TLS on the public listener and, when ``partners`` is given, the mutual-TLS
    partner listener on 127.0.0.1:0 as well."""
    if partners is not None:
        root.mkdir(parents=True, exist_ok=True)
        config.setdefault("partner_ca_path", pki.ca_path)
        config.update(
            partner_listen="127.0.0.1:0",
            partners_path=write_partners(root / "partners.toml", partners),
        )
    with in_process(
        root,
        areas=areas,
        clock=clock or Clock(),
        issuer=issuer,
        pki=pki,
        monotonic=monotonic,
        **config,
    ) as s:
        yield s

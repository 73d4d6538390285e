"""Throwaway X.509 certificates for demos and tests: a CA, a server certificate, partner
client certificates.

``staycheck certs demo --out DIR`` writes a set so that the partner flow can be shown in a
few commands; tests use the same functions to make rogue CAs and expired certificates. Real
deployments bring their own PKI: nothing here is meant for production keys.

A partner's identity is the DNS name in its certificate's subject alternative name, e.g.
``tianjin.partner.staycheck.test``; the server's partners file maps it to a partner entry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from staycheck.client.files import atomic_write

DEMO_PARTNERS = {
    "tianjin": ("120000", "tianjin.partner.staycheck.test"),
    "hebei": ("130000", "hebei.partner.staycheck.test"),
}


@dataclass(frozen=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StayCheck demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _window(now: dt.datetime, days: int) -> tuple[dt.datetime, dt.datetime]:
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def make_ca(
    common_name: str = "StayCheck demo CA",
    *,
    now: dt.datetime | None = None,
    days: int = 365,
) -> KeyPair:
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _window(now, days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    now: dt.datetime | None = None,
    days: int = 90,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> KeyPair:
    """A leaf certificate signed by ``ca``; explicit bounds override ``now``/``days``."""
    now = now or dt.datetime.now(dt.UTC)
    start, end = _window(now, days)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or start)
        .not_valid_after(not_after or end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


def server_cert(ca: KeyPair, **kwargs: object) -> KeyPair:
    """For a server on this machine: SANs localhost, 127.0.0.1 and ::1."""
    return issue(
        ca,
        "localhost",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1", "::1"],
        server=True,
        **kwargs,  # type: ignore[arg-type]
    )


def partner_cert(ca: KeyPair, dns_name: str, **kwargs: object) -> KeyPair:
    return issue(ca, dns_name, dns_names=[dns_name], client=True, **kwargs)  # type: ignore[arg-type]


def write_pair(out: pathlib.Path, stem: str, pair: KeyPair) -> None:
    atomic_write(out / f"{stem}.pem", pair.cert_pem, mode=0o644)
    atomic_write(out / f"{stem}.key", pair.key_pem, mode=0o600)


def partners_toml(entries: dict[str, tuple[str, str]]) -> str:
    """A partners file allowing every partner method, 200 requests/s each."""
    lines = ["# Partners allowed on the partner listener (staycheck serve --partners).", ""]
    for pid, (province, san) in entries.items():
        lines += [
            "[[partner]]",
            f'id = "{pid}"',
            f'province = "{province}"',
            f'identity = "{san}"',
            'methods = ["VerifyVerdict", "VerifyVerdicts", "SubmitItineraries"]',
            "requests_per_second = 200",
            "burst = 400",
            "",
        ]
    return "\n".join(lines)


def write_demo(out: pathlib.Path) -> list[pathlib.Path]:
    """A demo CA, a server certificate and one client certificate per demo partner, plus a
    partners file naming them. Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    write_pair(out, "ca", ca)
    write_pair(out, "server", server_cert(ca))
    for pid, (_, san) in DEMO_PARTNERS.items():
        write_pair(out, pid, partner_cert(ca, san))
    (out / "partners.toml").write_text(partners_toml(DEMO_PARTNERS))
    return sorted(out.iterdir())

"""The health authority's bundle signing with a key on a token (issue 12): ``authority keygen
--private pkcs11:...`` makes the key pair on the token, ``authority sign --key pkcs11:...``
signs with it, and ``authority inspect`` (the server's own check) accepts the bundle with
the public key, whether we made the key or ``pkcs11-tool`` did."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import subprocess

from cryptography.hazmat.primitives import serialization
from staycheck.trust.keys import PublicKey

from tests.harness import STAYCHECK
from tests.hsm.softhsm import SoftHsm, with_env

AREAS = pathlib.Path(__file__).resolve().parents[2] / "examples" / "areas.geojson"


def cli(hsm: SoftHsm, cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STAYCHECK, "authority", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=with_env(hsm.env),
        cwd=cwd,
    )


def expires() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(hsm: SoftHsm, cwd: pathlib.Path, key: str) -> subprocess.CompletedProcess[str]:
    return cli(
        hsm,
        cwd,
        "sign",
        "--areas",
        str(AREAS),
        "--version",
        "1",
        "--expires",
        expires(),
        "--key",
        key,
        "--out",
        "bundle.cose",
        "--force",
    )


def test_an_authority_key_made_on_the_token_signs_a_bundle_that_inspects(
    own_hsm: SoftHsm, tmp_path: pathlib.Path
):
    uri = own_hsm.uri("authority-2026")
    made = cli(own_hsm, tmp_path, "keygen", "--private", uri, "--public", "authority.pub")
    assert made.returncode == 0, made.stderr
    assert "private key on the token, sensitive and not extractable" in made.stdout
    public = PublicKey.from_pem((tmp_path / "authority.pub").read_bytes())
    on_token = own_hsm.read_public_key("authority-2026")  # pkcs11-tool
    assert public.raw == on_token.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert not list(tmp_path.glob("*.key")) and b"PRIVATE" not in made.stdout.encode()

    signed = sign(own_hsm, tmp_path, uri)
    assert signed.returncode == 0, signed.stderr
    shown = cli(own_hsm, tmp_path, "inspect", "bundle.cose", "--authority-key", "authority.pub")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["signed_by"] == public.kid.hex()
    for r in (made, signed, shown):
        assert own_hsm.pin not in r.stdout + r.stderr


def test_a_pkcs11_tool_key_signs_a_bundle_and_a_wrong_pin_is_refused_without_showing_it(
    own_hsm: SoftHsm, tmp_path: pathlib.Path
):
    uri = own_hsm.keygen("authority-tool")
    key = own_hsm.read_public_key("authority-tool")
    (tmp_path / "authority.pub").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signed = sign(own_hsm, tmp_path, uri)
    assert signed.returncode == 0, signed.stderr
    shown = cli(own_hsm, tmp_path, "inspect", "bundle.cose", "--authority-key", "authority.pub")
    assert shown.returncode == 0, shown.stderr

    wrong = "not-the-pin-93817"
    refused = sign(
        own_hsm, tmp_path, own_hsm.uri("authority-tool", pin="none") + f"&pin-value={wrong}"
    )
    assert refused.returncode == 2
    assert "the PIN was refused (CKR_PIN_INCORRECT" in refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    assert own_hsm.pin not in refused.stdout + refused.stderr

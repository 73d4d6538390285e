"""The health authority's keys on a token (issue 12): ``authority keygen --private
pkcs11:...`` makes the key pair on the token (sensitive, not extractable) and writes only
its public key; that key then signs a department's TUF metadata (``authority repo
add-department NAME --key-uri pkcs11:...``), which a stock ngclient follower verifies. A
wrong PIN is refused with a clear error that shows no PIN. (A department key that
``pkcs11-tool`` made: test_repository.py.)"""

from __future__ import annotations

import json
import pathlib
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from staycheck.server.follower import RepositoryFollower
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


def repo(hsm: SoftHsm, ws: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(hsm, ws.parent, "repo", *args, "--workspace", str(ws))


def role_versions(hsm: SoftHsm, ws: pathlib.Path) -> dict[str, int]:
    shown = repo(hsm, ws, "inspect")
    assert shown.returncode == 0, shown.stderr
    return {r["role"]: r["version"] for r in json.loads(shown.stdout)["roles"]}


def test_a_key_made_on_the_token_signs_a_departments_publications(
    own_hsm: SoftHsm, tmp_path: pathlib.Path
):
    uri = own_hsm.uri("health-2026")
    made = cli(own_hsm, tmp_path, "keygen", "--private", uri, "--public", "health.pub")
    assert made.returncode == 0, made.stderr
    assert "private key on the token, sensitive and not extractable" in made.stdout
    public = PublicKey.from_pem((tmp_path / "health.pub").read_bytes())
    on_token = own_hsm.read_public_key("health-2026")  # pkcs11-tool
    assert public.raw == on_token.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert not list(tmp_path.glob("*.key")) and b"PRIVATE" not in made.stdout.encode()

    ws = tmp_path / "ws"
    steps = [
        repo(own_hsm, ws, "create"),
        repo(own_hsm, ws, "add-department", "health", "--key-uri", uri),
        repo(own_hsm, ws, "publish", "health", "--areas", str(AREAS)),
    ]
    for step in steps:
        assert step.returncode == 0, step.stderr
    # The health role is delegated to the key keygen made, and to no other.
    targets = max(
        (ws / "repository" / "metadata").glob("*.targets.json"),
        key=lambda p: int(p.name.split(".")[0]),
    )
    delegations = json.loads(targets.read_text())["signed"]["delegations"]
    (role,) = [r for r in delegations["roles"] if r["name"] == "health"]
    assert [delegations["keys"][k]["keyval"]["public"] for k in role["keyids"]] == [
        public.raw.hex()
    ]
    # What a server follows verifies: the department's signatures came from the token.
    root = (ws / "repository" / "metadata" / "1.root.json").read_bytes()
    got = RepositoryFollower(tmp_path / "s", str(ws / "repository"), trusted_root=root).refresh(
        now=int(time.time())
    )
    assert got.departments == ("health",) and got.bundle.areas
    for r in (made, *steps):
        assert own_hsm.pin not in r.stdout + r.stderr


@pytest.mark.parametrize("step", ["keygen", "publish"])
def test_a_wrong_pin_is_refused_without_showing_it(
    own_hsm: SoftHsm, tmp_path: pathlib.Path, step: str
):
    wrong = "not-the-pin-93817"
    if step == "keygen":
        uri = own_hsm.uri("health-2027", pin="none") + f"&pin-value={wrong}"
        refused = cli(own_hsm, tmp_path, "keygen", "--private", uri, "--public", "health.pub")
        assert not (tmp_path / "health.pub").exists()
    else:
        ws = tmp_path / "ws"
        uri = own_hsm.keygen("health-department")
        assert repo(own_hsm, ws, "create").returncode == 0
        added = repo(own_hsm, ws, "add-department", "health", "--key-uri", uri)
        assert added.returncode == 0, added.stderr
        before = role_versions(own_hsm, ws)
        own_hsm.pin_file.write_text(wrong + "\n")  # the PIN file the URI names, now wrong
        refused = repo(own_hsm, ws, "publish", "health", "--areas", str(AREAS))
        own_hsm.pin_file.write_text(own_hsm.pin + "\n")
        assert role_versions(own_hsm, ws) == before  # nothing published
    assert refused.returncode == 2, (refused.returncode, refused.stderr)
    assert "the PIN was refused (CKR_PIN_INCORRECT" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    assert own_hsm.pin not in refused.stdout + refused.stderr

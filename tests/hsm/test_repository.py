"""A department's repository signatures from a key on a token (issue 12 with issue 11):
``authority repo add-department NAME --key-uri pkcs11:...`` names a key ``pkcs11-tool``
made on a SoftHSM2 token; its publications are signed on the token, verified by stock
ngclient, and the workspace holds the key's URI (no PIN value), no private key."""

from __future__ import annotations

import pathlib
import subprocess
import time

from staycheck.server.follower import RepositoryFollower

from tests.harness import STAYCHECK
from tests.hsm.softhsm import SoftHsm, with_env

AREAS = pathlib.Path(__file__).resolve().parents[2] / "examples" / "areas.geojson"


def repo(hsm: SoftHsm, ws: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STAYCHECK, "authority", "repo", *args, "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=120,
        env=with_env(hsm.env),
    )


def test_a_department_signs_its_publications_on_a_token(hsm: SoftHsm, tmp_path: pathlib.Path):
    ws = tmp_path / "ws"
    uri = hsm.keygen("rail-department")
    assert repo(hsm, ws, "create").returncode == 0
    added = repo(hsm, ws, "add-department", "rail", "--key-uri", uri)
    assert added.returncode == 0, added.stderr
    published = repo(hsm, ws, "publish", "rail", "--areas", str(AREAS))
    assert published.returncode == 0, published.stderr
    assert hsm.pin not in added.stdout + added.stderr + published.stdout + published.stderr

    keys = ws / "keys"
    assert not list(keys.glob("rail-*.pem"))  # no private key of the department's
    (stored,) = keys.glob("rail-*.uri")
    assert stored.read_text().strip() == uri and "pin-value" not in uri
    root = (ws / "repository" / "metadata" / "1.root.json").read_bytes()
    got = RepositoryFollower(tmp_path / "s", str(ws / "repository"), trusted_root=root).refresh(
        now=int(time.time())
    )
    assert got.departments == ("rail",) and got.bundle.areas


def test_a_pin_value_is_never_stored_in_the_workspace(hsm: SoftHsm, tmp_path: pathlib.Path):
    ws = tmp_path / "ws"
    hsm.keygen("police-department")
    assert repo(hsm, ws, "create").returncode == 0
    r = repo(
        hsm, ws, "add-department", "police", "--key-uri", hsm.uri("police-department", pin="value")
    )
    assert r.returncode == 2 and "pin-source" in r.stderr
    assert hsm.pin not in r.stdout + r.stderr
    assert not list((ws / "keys").glob("police-*"))

"""The risk-area repository through TUF (issue 11, first step): a repository made by
``staycheck.cli.repository`` and followed by a stock ``tuf.ngclient.Updater``
(``staycheck.server.follower``), over real loopback HTTP and from a folder, with the
attacks python-tuf's own attack tests model. Each attack: what is refused, and that the
follower's last good set is unchanged (the caller keeps serving it).

Times: ngclient checks expiry against the wall clock, so the repository is made at the real
``time.time()``; a frozen repository is one made in the past.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import http.server
import json
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
from staycheck.cli.repository import AuthorityRepository
from staycheck.cli.samples import feature, square
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.errors import ConfigurationError, MalformedError
from staycheck.geo.itinerary import Status, Stay
from staycheck.geo.matching import evaluate
from staycheck.server.follower import RepositoryFollower
from tuf.api import exceptions
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

DAY, HOUR = 86400, 3600
TJ = (39.1256, 117.1902)  # Tianjin centre (shared/data)
LF = (39.5375, 116.6837)  # Langfang centre


def areas(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def high_square(area_id: str, centre: tuple[float, float], city: str, now: int) -> dict:
    return feature(area_id, city, "high", square(*centre, 1000), active_from=now - 5 * DAY)


@pytest.fixture
def now() -> int:
    return int(time.time())


def two_departments(workspace: pathlib.Path, now: int) -> AuthorityRepository:
    """The health authority's repository with two departments, police and health, each
    with one area (police in Tianjin, health in Langfang)."""
    repo = AuthorityRepository(workspace)
    repo.create(now=now, policy=Policy())
    repo.add_department("police", now=now)
    repo.add_department("health", now=now)
    repo.publish_areas("police", areas(high_square("tj-1", TJ, "120100", now)), now=now)
    repo.publish_areas("health", areas(high_square("lf-1", LF, "131000", now)), now=now)
    return repo


@pytest.fixture
def authority(tmp_path: pathlib.Path, now: int) -> AuthorityRepository:
    return two_departments(tmp_path / "authority", now)


@contextlib.contextmanager
def http_served(folder: pathlib.Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1:0 serving ``folder`` (any static server would do)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def status(bundle_msg, now: int, centre: tuple[float, float], city: str) -> Status:
    bundle = RiskAreaBundle.from_proto(bundle_msg, digest="")
    stay = Stay(city, now - 3 * DAY, now - 3 * DAY + 6 * HOUR, centre)
    return evaluate([stay], bundle, now=now)


@pytest.fixture
def follower(tmp_path: pathlib.Path, authority: AuthorityRepository) -> RepositoryFollower:
    return RepositoryFollower(
        tmp_path / "state", str(authority.published), trusted_root=authority.trusted_root()
    )


# --- the stock client follows what the authority made ----------------------------------------


def test_stock_updater_over_http_downloads_every_department(tmp_path, authority, now):
    with http_served(authority.published) as url:
        follower = RepositoryFollower(tmp_path / "s", url, trusted_root=authority.trusted_root())
        got = follower.refresh(now=now)
    assert got.departments == ("police", "health")
    assert sorted(a.id for a in got.bundle.areas) == ["health/lf-1", "police/tj-1"]
    # SPEC: the verdict's bundle version is the repository snapshot's version.
    assert got.bundle.version == got.snapshot_version
    # Fails closed at the earliest expiry of the metadata it came through: the timestamp's.
    assert now + 5 * HOUR < got.expires_at <= now + 6 * HOUR + 1


def test_a_department_publishes_then_removes_an_area(follower, authority, now):
    first = follower.refresh(now=now)
    assert status(first.bundle, now, TJ, "120100") is Status.REVIEW_REQUIRED
    authority.publish_areas("police", areas(), now=now)
    second = follower.refresh(now=now)
    assert status(second.bundle, now, TJ, "120100") is Status.NO_ABNORMALITY
    assert second.snapshot_version > first.snapshot_version
    # The other department's area is untouched.
    assert status(second.bundle, now, LF, "131000") is Status.REVIEW_REQUIRED


def test_from_a_folder_and_after_a_restart(tmp_path, authority, now):
    state = tmp_path / "state"
    a = RepositoryFollower(state, str(authority.published), trusted_root=authority.trusted_root())
    version = a.refresh(now=now).snapshot_version
    # A new process on the same state dir resumes from the metadata it trusted.
    b = RepositoryFollower(state, str(authority.published), trusted_root=b"not read again")
    assert b.refresh(now=now).snapshot_version == version


# --- attacks -------------------------------------------------------------------------------


def _resign(repo: AuthorityRepository, path: pathlib.Path, edit, *, keys: list[str]) -> None:
    """Edit a metadata file and sign it with the named private key files (an attacker who
    holds those keys and nothing else)."""
    from staycheck.cli.repository import signers_for

    md = Metadata.from_file(str(path))
    edit(md.signed)
    md.signatures.clear()
    for signer in signers_for([repo.keys_dir / f"{k}.pem" for k in keys]).values():
        md.sign(signer, append=True)
    path.write_bytes(md.to_bytes(JSONSerializer()))


def test_one_department_key_cannot_publish_under_another_department(follower, authority, now):
    """The police key (and, worse, the online key too, so that the snapshot names the forged
    version) lists a file for health's path in police's role: ngclient accepts police's new
    version, but asks only health's role about health's path, so nothing changes."""
    from staycheck.v1 import bundle_pb2
    from tuf.api.metadata import TargetFile

    good = follower.refresh(now=now)
    empty = bundle_pb2.RiskAreaSet(department="health").SerializeToString()
    forged = TargetFile.from_data("areas/health.pb", empty, ["sha256"])
    (authority.targets_dir / "areas" / f"{forged.hashes['sha256']}.health.pb").write_bytes(empty)
    police = authority._md["police"].signed  # the attacker's keys: police-1 and online-1
    police.targets["areas/health.pb"] = forged
    police.version += 1
    authority._sign_and_write("police")
    authority.refresh(now=now)
    after = follower.refresh(now=now)
    assert after.snapshot_version > good.snapshot_version  # the forged version was taken
    assert sorted(a.id for a in after.bundle.areas) == ["health/lf-1", "police/tj-1"]
    assert status(after.bundle, now, LF, "131000") is Status.REVIEW_REQUIRED


def test_threshold_not_met(tmp_path, now):
    """A department whose role needs 2 of 2 signatures, signed by one key only."""
    repo = AuthorityRepository(tmp_path / "authority")
    repo.create(now=now, policy=Policy())
    repo.add_department("border", now=now, keys=2, threshold=2)
    follower = RepositoryFollower(
        tmp_path / "s", str(repo.published), trusted_root=repo.trusted_root()
    )
    follower.refresh(now=now)
    border = max(repo.metadata_dir.glob("*.border.json"), key=lambda p: int(p.name.split(".")[0]))
    _resign(repo, border, lambda s: None, keys=["border-1"])
    with pytest.raises(exceptions.UnsignedMetadataError):
        RepositoryFollower(
            tmp_path / "fresh", str(repo.published), trusted_root=repo.trusted_root()
        ).refresh(now=now)


def test_rollback_of_the_timestamp_is_refused(follower, authority, now):
    follower.refresh(now=now)
    old = (authority.metadata_dir / "timestamp.json").read_bytes()
    authority.refresh(now=now)
    follower.refresh(now=now)
    (authority.metadata_dir / "timestamp.json").write_bytes(old)  # replay the older one
    with pytest.raises(exceptions.BadVersionNumberError):
        follower.refresh(now=now)


def test_frozen_repository_expires(tmp_path, now):
    """A repository last refreshed 7 h ago: its timestamp (6 h) has expired."""
    repo = AuthorityRepository(tmp_path / "authority")
    repo.create(now=now - 7 * HOUR, policy=Policy())
    follower = RepositoryFollower(
        tmp_path / "s", str(repo.published), trusted_root=repo.trusted_root()
    )
    with pytest.raises(exceptions.ExpiredMetadataError):
        follower.refresh(now=now)


def test_a_target_whose_hash_does_not_match(follower, authority, now):
    good = follower.refresh(now=now)
    authority.publish_areas("police", areas(), now=now)
    (target,) = [
        p for p in (authority.targets_dir / "areas").glob("*.police.pb") if p.stat().st_size < 10
    ]
    target.write_bytes(target.read_bytes()[:-1] + b"X" if target.read_bytes() else b"X")
    with pytest.raises(exceptions.RepositoryError):
        follower.refresh(now=now)
    assert good.bundle.areas


def test_endless_data_is_cut_at_the_signed_length(follower, authority, now):
    follower.refresh(now=now)
    authority.publish_areas("police", areas(), now=now)
    for target in (authority.targets_dir / "areas").glob("*.police.pb"):
        with target.open("ab") as f:
            f.write(b"\0" * (1 << 20))
    with pytest.raises(exceptions.DownloadLengthMismatchError):
        follower.refresh(now=now)


def test_content_tuf_cannot_judge_is_refused_by_ours(follower, authority, now):
    """A department's file naming another department (signed properly by its own role)."""
    follower.refresh(now=now)
    from staycheck.trust.riskset import merge, read_policy
    from staycheck.v1 import bundle_pb2

    policy = read_policy(
        bundle_pb2.RiskPolicy(
            policy=Policy().to_proto(),
            departments=[bundle_pb2.Department(name="police", path="areas/police.pb")],
        ).SerializeToString()
    )
    wrong = bundle_pb2.RiskAreaSet(department="health").SerializeToString()
    with pytest.raises(MalformedError):
        merge(policy, {"police": wrong}, version=1, issued_at=now, expires_at=now + 1)


def test_root_rotation_moves_followers_to_the_new_keys(follower, authority, now):
    follower.refresh(now=now)
    authority.rotate_root(now=now)
    authority.refresh(now=now)
    assert follower.refresh(now=now).departments == ("police", "health")
    assert (
        json.loads((authority.metadata_dir / "2.root.json").read_text())["signed"]["version"] == 2
    )


def test_the_state_dir_copy_of_the_root_is_private(tmp_path, follower, now):
    follower.refresh(now=now)
    root = tmp_path / "state" / "tuf" / "metadata" / "root.json"
    assert root.stat().st_mode & 0o077 == 0
    shutil.rmtree(tmp_path / "state")


# --- the online key alone, and mix-and-match -----------------------------------------------


def _latest(repo: AuthorityRepository, role: str) -> pathlib.Path:
    return max(repo.metadata_dir.glob(f"*.{role}.json"), key=lambda p: int(p.name.split(".")[0]))


def test_online_key_alone_cannot_sign_a_department_role(follower, authority, now):
    """A thief of the online (snapshot/timestamp) key writes police's role and signs it
    with the online key: not police's key, so ngclient refuses it."""
    good = follower.refresh(now=now)
    police = authority._md["police"].signed
    police.targets = {}
    police.version += 1
    authority._signers["police"] = authority._signers["timestamp"]  # the thief's only key
    authority._sign_and_write("police")
    authority.refresh(now=now)
    with pytest.raises(exceptions.UnsignedMetadataError):
        follower.refresh(now=now)
    assert good.bundle.areas


def test_online_key_alone_cannot_serve_stale_areas(follower, authority, now):
    """The thief re-signs a snapshot naming police's previous version (stale areas): a
    rollback of police's role, refused."""
    authority.publish_areas("police", areas(), now=now)
    follower.refresh(now=now)
    snapshot = authority._md["snapshot"].signed
    authority._md["police"].signed.version -= 1  # the snapshot will name the older version
    authority.refresh(now=now)
    assert snapshot.meta["police.json"].version == authority._md["police"].signed.version
    with pytest.raises(exceptions.BadVersionNumberError):
        follower.refresh(now=now)


def test_mix_and_match_an_old_target_file_under_new_metadata(follower, authority, now):
    """Serving the police file of an earlier publication under today's metadata: the hash
    in today's police role does not match."""
    follower.refresh(now=now)
    old_targets = {p.name: p.read_bytes() for p in (authority.targets_dir / "areas").iterdir()}
    authority.publish_areas("police", areas(), now=now)
    new_info = authority._md["police"].signed.targets["areas/police.pb"]
    new_file = authority.targets_dir / "areas" / f"{new_info.hashes['sha256']}.police.pb"
    # The publication before, with Tianjin's area (the largest police file).
    old_police = max((d for n, d in old_targets.items() if n.endswith(".police.pb")), key=len)
    assert old_police != new_file.read_bytes()
    new_file.write_bytes(old_police)
    with pytest.raises((exceptions.LengthOrHashMismatchError, exceptions.DownloadError)):
        follower.refresh(now=now)


def test_frozen_snapshot_behind_a_fresh_timestamp(tmp_path, now):
    """The online key keeps the timestamp fresh but the snapshot it names has expired."""
    repo = AuthorityRepository(tmp_path / "authority")
    repo.create(now=now - 2 * DAY, policy=Policy())
    ts = repo._md["timestamp"].signed
    ts.version += 1
    ts.expires = dt.datetime.fromtimestamp(now + HOUR, dt.UTC)
    repo._sign_and_write("timestamp")
    follower = RepositoryFollower(
        tmp_path / "s", str(repo.published), trusted_root=repo.trusted_root()
    )
    with pytest.raises(exceptions.ExpiredMetadataError):
        follower.refresh(now=now)


def test_rollback_of_targets_is_refused(follower, authority, now):
    follower.refresh(now=now)
    authority.add_department("rail", now=now)  # targets version goes up
    follower.refresh(now=now)
    authority._md["targets"].signed.version -= 2
    authority._sign_and_write("targets")
    authority.refresh(now=now)
    with pytest.raises(exceptions.BadVersionNumberError):
        follower.refresh(now=now)


def test_fast_forward_then_recovery_by_rotating_the_online_key(follower, authority, now):
    """A stolen online key pushes the timestamp to a huge version; followers take it, then
    refuse the genuine ones (rollback). The authority rotates the timestamp key in root:
    followers drop the fast-forwarded timestamp and follow the repository again."""
    follower.refresh(now=now)
    authority._md["timestamp"].signed.version = 10**6
    authority._sign_and_write("timestamp")
    follower.refresh(now=now)
    authority._md["timestamp"].signed.version = 5
    authority.refresh(now=now)
    with pytest.raises(exceptions.BadVersionNumberError):
        follower.refresh(now=now)
    authority.rotate_online_key(now=now)
    assert follower.refresh(now=now).departments == ("police", "health")


# --- the server's side: the last good set keeps serving ------------------------------------


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_refreshes_keep_the_last_good_set_and_fail_closed_at_expiry(follower, authority, now):
    from staycheck.geo.errors import UnavailableError
    from staycheck.server.bundles import RepositoryBundles

    ticks = Ticks()
    bundles = RepositoryBundles(follower, clock=lambda: now, refresh_interval_s=60, monotonic=ticks)
    with pytest.raises(UnavailableError):
        bundles.bundle_for(now)  # nothing yet: fail closed
    assert bundles.changed() and bundles.reload().accepted
    first = bundles.bundle_for(now)
    assert not bundles.changed()
    ticks.t += 60
    assert bundles.changed()

    # Only the metadata moved on (the hourly re-signing): same index, newer version.
    authority.refresh(now=now)
    assert bundles.reload().accepted
    resigned = bundles.bundle_for(now)
    assert resigned.version > first.version and resigned.index is first.index

    # A refused refresh changes nothing.
    (authority.metadata_dir / "timestamp.json").write_bytes(b"{}")
    result = bundles.reload()
    assert not result.accepted and "Error" in result.reason
    assert bundles.bundle_for(now) is resigned
    assert sum(v for k, v in bundles.stats.outcomes.items() if k != "accepted") == 1

    # The set expires with its timestamp: fail closed, as with a bundle file.
    with pytest.raises(UnavailableError):
        bundles.bundle_for(resigned.expires_at)
    assert not bundles.serving(resigned.expires_at)


def test_a_hung_repository_does_not_hold_the_watcher(tmp_path, authority, now):
    import socket

    from staycheck.server.bundles import (
        ReadNotFinishedError,  # noqa: F401 (the reason named)
        RepositoryBundles,
    )

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    follower = RepositoryFollower(tmp_path / "s", url, trusted_root=authority.trusted_root())
    bundles = RepositoryBundles(follower, clock=lambda: now, refresh_timeout_s=0.5)
    started = time.monotonic()
    result = bundles.reload()
    assert not result.accepted and result.reason.startswith("ReadNotFinishedError")
    assert time.monotonic() - started < 3
    # While that refresh is still stuck, the next one is refused at once, not queued.
    assert bundles.reload().reason.startswith("ReadNotFinishedError")
    listener.close()


def test_a_new_root_without_the_old_threshold_is_refused(follower, authority, now):
    """Root rotation must be signed by a threshold of the old root keys as well as of the new
    ones: a thief who makes a new root with keys of their own (and one stolen old key) does
    not move followers."""
    follower.refresh(now=now)
    root_md = authority._md["root"]
    old = authority._signers["root"]
    authority.rotate_root(now=now)  # genuine: old and new sign
    genuine_v2 = (authority.metadata_dir / "2.root.json").read_bytes()
    # The thief's version 2: the new keys and only one of the old (threshold is 2).
    root_md.signatures.clear()
    for signer in [old[0], *authority._signers["root"]]:
        root_md.sign(signer, append=True)
    (authority.metadata_dir / "2.root.json").write_bytes(root_md.to_bytes(JSONSerializer()))
    with pytest.raises(exceptions.UnsignedMetadataError):
        follower.refresh(now=now)
    (authority.metadata_dir / "2.root.json").write_bytes(genuine_v2)
    assert follower.refresh(now=now).departments == ("police", "health")


# --- verifiers follow the issuer's key set through the same repository ---------------------


def _issuer_token(signer, *, issuer: str = "110000") -> str:
    from staycheck.trust.verdict import TokenSigner, issue_verdict

    verdict = issue_verdict(
        Status.REVIEW_REQUIRED,
        now=int(time.time()),
        issuer=issuer,
        riskset_version=3,
        bundle_expires_at=int(time.time()) + DAY,
    )
    return TokenSigner(signer).sign(verdict)


def test_verify_follows_the_issuers_key_set_in_the_repository(tmp_path, authority, now):
    """``staycheck verify --repository URL --trusted-root ROOT.json``: the key set comes
    through TUF; a key set published by another issuer's role (or a department's) is not
    taken for Beijing's."""
    import subprocess

    from staycheck.trust.keys import Ed25519Signer, KeySet

    from tests.harness import STAYCHECK

    beijing, rogue = Ed25519Signer.generate(), Ed25519Signer.generate()
    authority.add_issuer("110000", now=now)
    authority.publish_keys(
        "110000", KeySet([beijing.public_key], issuer="110000").to_json().encode(), now=now
    )
    root = tmp_path / "root.json"
    root.write_bytes(authority.trusted_root())

    def verify(token: str) -> subprocess.CompletedProcess[str]:
        with http_served(authority.published) as url:
            return subprocess.run(
                [*STAYCHECK, "verify", token, "--repository", url, "--trusted-root", str(root),
                 "--cache", str(tmp_path / "cache"), "--json"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip

    ok = verify(_issuer_token(beijing))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["issuer"] == "110000"
    assert verify(_issuer_token(rogue)).returncode == 1  # unknown key
    # An issuer with no role in the repository: no key set to be had.
    other = verify(_issuer_token(rogue, issuer="120000"))
    assert other.returncode == 2 and "120000" in other.stderr


def test_the_authority_commands_make_a_repository_the_follower_reads(tmp_path, now):
    """``staycheck authority repo ...`` end to end, as the README's block does it."""
    import subprocess

    from tests.harness import STAYCHECK

    ws = tmp_path / "ws"
    geojson = tmp_path / "police.geojson"
    geojson.write_text(json.dumps(areas(high_square("tj-1", TJ, "120100", now))))

    def repo(*args: str) -> str:
        r = subprocess.run(
            [*STAYCHECK, "authority", "repo", *args, "--workspace", str(ws)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    repo("create")
    repo("add-department", "police")
    repo("add-department", "rail", "--keys", "2", "--threshold", "2")
    assert "published 1 areas" in repo("publish", "police", "--areas", str(geojson))
    repo("refresh")
    shown = json.loads(repo("inspect"))
    assert [d["name"] for d in shown["departments"]] == ["police", "rail"]
    rail = next(r for r in shown["roles"] if r["role"] == "rail")
    assert (rail["threshold"], rail["keys"]) == (2, 2)
    root = next(r for r in shown["roles"] if r["role"] == "root")
    assert (root["threshold"], root["keys"]) == (2, 3)
    follower = RepositoryFollower(
        tmp_path / "s",
        str(ws / "repository"),
        trusted_root=(ws / "repository/metadata/1.root.json").read_bytes(),
    )
    got = follower.refresh(now=now)
    assert [a.id for a in got.bundle.areas] == ["police/tj-1"]
    assert (ws / "keys" / "root-1.pem").stat().st_mode & 0o077 == 0


# --- the authority's own mistakes are refused before anything is written ------------------


def test_rotate_root_needs_the_old_threshold_of_keys_at_hand(authority, now):
    """The ceremony moved two of the three root keys offline: a rotation with one at hand
    would publish a root every client refuses (the fleet would fail closed)."""
    for name in ("root-2.pem", "root-3.pem"):
        (authority.keys_dir / name).unlink()
    repo = AuthorityRepository.open(authority.workspace)
    with pytest.raises(ConfigurationError, match="needed to sign the new root"):
        repo.rotate_root(now=now)
    assert not (authority.metadata_dir / "2.root.json").exists()


@pytest.mark.parametrize("threshold", [0, 2])
def test_a_department_threshold_outside_its_keys_is_refused(authority, now, threshold):
    with pytest.raises(ConfigurationError, match="threshold"):
        authority.rotate_department_keys("police", now=now, keys=1, threshold=threshold)


def test_the_targets_role_needs_two_of_its_three_keys(follower, authority, now):
    """SPEC: no single key can change the policy; a targets version signed by one key only
    is refused by every follower."""
    targets_info = next(r for r in authority.roles() if r.name == "targets")
    assert (targets_info.threshold, len(targets_info.keyids)) == (2, 3)
    follower.refresh(now=now)
    targets = authority._md["targets"].signed
    targets.version += 1
    authority._signers["targets"] = authority._signers["targets"][:1]
    authority._threshold = lambda role: 1  # type: ignore[method-assign]  (the thief's view)
    authority._sign_and_write("targets")
    authority.refresh(now=now)
    with pytest.raises(exceptions.UnsignedMetadataError):
        follower.refresh(now=now)


def test_a_fifo_in_the_repository_folder_does_not_hold_the_refresh(follower, authority, now):
    import os

    follower.refresh(now=now)
    authority.refresh(now=now)
    ts = authority.metadata_dir / "timestamp.json"
    ts.unlink()
    os.mkfifo(ts)
    started = time.monotonic()
    with pytest.raises((exceptions.DownloadError, exceptions.RepositoryError)):
        follower.refresh(now=now)
    assert time.monotonic() - started < 5


def test_a_timestamp_only_resigning_moves_the_expiry(follower, authority, now):
    """The online key may re-sign the timestamp alone (same snapshot): the set in use must
    then expire later, or the server would fail closed while TUF trusts fresh metadata."""
    from staycheck.server.bundles import RepositoryBundles

    bundles = RepositoryBundles(follower, clock=lambda: now)
    assert bundles.reload().accepted
    before = bundles.bundle_for(now).expires_at
    ts = authority._md["timestamp"].signed
    ts.version += 1
    ts.expires = dt.datetime.fromtimestamp(now + 7 * HOUR, dt.UTC)
    authority._sign_and_write("timestamp")
    assert bundles.reload().accepted
    assert bundles.bundle_for(now).expires_at > before

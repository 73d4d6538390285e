"""``staycheck serve --repository URL --trusted-root ROOT.json`` (issue 11): a real server
process follows a real TUF repository over loopback HTTP, and its verdicts change as the
departments publish.

Issue 11, done when: "A verdict for an itinerary through an area published by one
department is REVIEW_REQUIRED; after that department publishes its removal,
NO_ABNORMALITY; a forged publication with one department key under another department's
path changes nothing."
"""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from staycheck.client import StayCheckClient
from staycheck.geo.itinerary import Status
from staycheck.trust.verdict import decode_token
from staycheck.v1 import bundle_pb2
from staycheck.v1 import verification_pb2 as pb
from tuf.api.metadata import TargetFile

from tests.harness import STAYCHECK, spawn
from tests.integration.test_tuf_repository import (
    LF,
    TJ,
    areas,
    http_served,
    two_departments,
)

DAY, HOUR = 86400, 3600


def itinerary(city: str, centre: tuple[float, float], now: int) -> pb.Itinerary:
    stay = pb.Stay(city_code=city, location=pb.LatLng(latitude=centre[0], longitude=centre[1]))
    stay.arrival.FromSeconds(now - 3 * DAY)
    stay.departure.FromSeconds(now - 3 * DAY + 6 * HOUR)
    return pb.Itinerary(stays=[stay])


def status_of(client: StayCheckClient, city: str, centre: tuple[float, float]) -> Status:
    return Status(client.submit(itinerary(city, centre, int(time.time()))).status)


def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the server did not follow the repository in time"
        time.sleep(0.2)


def test_a_server_follows_the_departments_publications(tmp_path):
    now = int(time.time())
    authority = two_departments(tmp_path / "authority", now)
    root = tmp_path / "root.json"
    root.write_bytes(authority.trusted_root())
    with http_served(authority.published) as url:
        command = [
            *STAYCHECK, "serve", "--listen", "127.0.0.1:0", "--repository", url,
            "--trusted-root", str(root), "--repository-refresh-s", "1",
            "--state-dir", str(tmp_path / "state"), "--issuer", "110000",
        ]  # fmt: skip
        with spawn(command, tmp_path / "srv") as served:
            target = f"127.0.0.1:{served.port}"
            with StayCheckClient(target) as client:
                assert status_of(client, "120100", TJ) is Status.REVIEW_REQUIRED
                assert status_of(client, "131000", LF) is Status.REVIEW_REQUIRED
                first = client.submit(itinerary("120100", TJ, now))
                version = decode_token(first.token)[1].riskset_version
                assert version == first.riskset_version  # the snapshot's version

                # Police publishes the removal: the server follows by itself.
                authority.publish_areas("police", areas(), now=now)
                wait_for(lambda: status_of(client, "120100", TJ) is Status.NO_ABNORMALITY)
                assert client.submit(itinerary("120100", TJ, now)).riskset_version > version

                # Police's key (and the online key) list a file for health's path in
                # police's own role: health's area stays.
                before = client.submit(itinerary("131000", LF, now)).riskset_version
                empty = bundle_pb2.RiskAreaSet(department="health").SerializeToString()
                forged = TargetFile.from_data("areas/health.pb", empty, ["sha256"])
                name = f"{forged.hashes['sha256']}.health.pb"
                (authority.targets_dir / "areas" / name).write_bytes(empty)
                police = authority._md["police"].signed
                police.targets["areas/health.pb"] = forged
                police.version += 1
                authority._sign_and_write("police")
                authority.refresh(now=now)
                wait_for(
                    lambda: client.submit(itinerary("131000", LF, now)).riskset_version > before
                )
                assert status_of(client, "131000", LF) is Status.REVIEW_REQUIRED

                # A withheld or broken repository: the last good set keeps serving.
                (authority.metadata_dir / "timestamp.json").write_bytes(b"{}")
                assert served.wait_for_stderr("repository refresh refused", timeout=30)
                assert status_of(client, "131000", LF) is Status.REVIEW_REQUIRED
                channel = grpc.insecure_channel(target)
                health = health_pb2_grpc.HealthStub(channel)
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
                channel.close()
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(timeout=20) == 0
    log = (tmp_path / "srv" / "server.err").read_text()
    assert "repository refresh refused" in log


def test_serve_needs_the_repository_and_its_root(tmp_path):
    import subprocess

    base = [*STAYCHECK, "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"),
            "--issuer", "110000"]  # fmt: skip
    for given, missing in (
        (["--repository", str(tmp_path)], "trusted_root"),
        (["--trusted-root", str(tmp_path / "r.json")], "repository"),
    ):
        r = subprocess.run([*base, *given], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and missing in r.stderr, r.stderr
    # The retired flags are unknown now (a local folder replaces a bundle file).
    old = subprocess.run([*base, "--bundle", "b.cose"], capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert old.returncode == 2 and "--bundle" in old.stderr


@pytest.mark.parametrize("flag", ["--repository-refresh-s"])
def test_the_refresh_interval_is_bounded(tmp_path, flag):
    import subprocess

    r = subprocess.run(
        [*STAYCHECK, "serve", "--listen", "127.0.0.1:0", "--repository", str(tmp_path),
         "--trusted-root", str(tmp_path / "r.json"), flag, "0.1",
         "--state-dir", str(tmp_path / "s"), "--issuer", "110000"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and "repository_refresh_s" in r.stderr


def test_the_demo_serves_from_a_repository_and_keeps_it(tmp_path):
    """``make demo``: two departments' areas through a TUF repository, verdicts scanned back
    from their QR codes; ``--keep DIR`` leaves the repository a follower can read."""
    import subprocess

    from staycheck.server.follower import RepositoryFollower

    r = subprocess.run(
        [*STAYCHECK, "demo", "--keep", str(tmp_path / "kept")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "follows the repository" in r.stdout
    assert r.stdout.count("binding: checked") == 2
    # The risky trip again, sealed through an Oblivious HTTP relay: the same verdict.
    assert "through an Oblivious HTTP relay" in r.stdout
    assert "verdict: REVIEW_REQUIRED (弹窗), verified offline" in r.stdout
    assert "rejected: bad signature" in r.stdout
    published = tmp_path / "kept" / "repository"
    root = (published / "metadata" / "1.root.json").read_bytes()
    got = RepositoryFollower(tmp_path / "s", str(published), trusted_root=root).refresh(
        now=int(time.time())
    )
    assert got.departments == ("police", "health")


def test_a_server_publishes_its_key_set_and_a_hotel_follows_it(tmp_path):
    """The whole path with the commands a province runs: the authority gives the issuer a
    role (``repo add-issuer``), the issuer publishes the key set its server serves
    (``staycheck keys`` then ``repo publish-keys``), and a verifier checks a verdict with
    keys that came through TUF (``verify --repository``). A key set naming another issuer
    is refused at publication."""
    import json
    import subprocess

    from tests.harness import serve_process
    from tests.helpers import spec_areas

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*STAYCHECK, *args], capture_output=True, text=True, timeout=60)

    with serve_process(tmp_path / "srv", areas=spec_areas(now=int(time.time()))) as served:
        files = served.files
        assert files is not None
        workspace = str(files.repository.workspace)
        files.repository.close()  # the commands below write the workspace
        added = run("authority", "repo", "add-issuer", "110000", "--workspace", workspace)
        assert added.returncode == 0, added.stderr
        keys = run("keys", "--server", served.target)
        assert keys.returncode == 0, keys.stderr
        jwks = tmp_path / "keys.json"
        jwks.write_text(keys.stdout)
        published = run("authority", "repo", "publish-keys", "110000", "--jwks", str(jwks),
                        "--workspace", workspace)  # fmt: skip
        assert published.returncode == 0, published.stderr
        files.serve()
        with StayCheckClient(served.target) as client:
            token = client.submit(itinerary("120100", TJ, int(time.time()))).token
        # The other way round: Beijing's key set offered for Tianjin's role.
        assert run("authority", "repo", "add-issuer", "120000", "--workspace",
                   workspace).returncode == 0  # fmt: skip
        wrong = run("authority", "repo", "publish-keys", "120000", "--jwks", str(jwks),
                    "--workspace", workspace)  # fmt: skip
        assert wrong.returncode == 2 and "names issuer 110000" in wrong.stderr
    verified = run("verify", token, "--repository", str(files.served),
                   "--trusted-root", str(files.trusted_root),
                   "--cache", str(tmp_path / "cache"), "--json")  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    out = json.loads(verified.stdout)
    assert (out["status"], out["issuer"]) == ("REVIEW_REQUIRED", "110000")

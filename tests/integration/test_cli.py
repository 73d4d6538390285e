"""The ``staycheck`` command line, driven as subprocesses exactly as issue 2 lists it.

Everything lives in pytest's tmp dirs; the CLI reads the real clock, so itineraries and risk
areas are placed relative to the real ``now``. A server follows a TUF repository made in
the test (``tests.harness.write_server_files``, or ``staycheck authority repo`` where the
test is about those commands); the risk-area version it reports is the snapshot version of
that repository. Servers listen on 127.0.0.1:0 and are always terminated at teardown.
Expected values come from SPEC.md and the issue's CLI contract: exit 0 success, 1 a
refusal, 2 a usage or input error.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from staycheck.cli.samples import feature, rfc3339, square
from staycheck.server.follower import RepositoryFollower
from staycheck.trust import base45

from tests import harness
from tests.harness import Areas, ServerFiles, free_port, write_server_files
from tests.helpers import risk_areas
from tests.integration.partner_helpers import make_pki, tls_server

DAY = 86400
HOUR = 3600
ISSUER = "110000"
SUBJECT_ID = "11010519491231002X"  # made up; hashed on the client, never sent
# City centres from shared/data/jjj_cities.json.
TJ = (39.1256, 117.1902)
BJ = (39.9042, 116.4074)
LF = (39.5375, 116.6837)
# 5 km north of the square's centre, i.e. 4.5 km outside its edge.
TJ_5KM_NORTH = (TJ[0] + 5000 / 111_320, TJ[1])
BASE45 = re.compile(r"[0-9A-Z $%*+\-./:]+")

# --- helpers ------------------------------------------------------------------------------


def run(*args: str | os.PathLike[str], stdin: str | None = None, timeout: float = 30):
    return subprocess.run(
        [*harness.STAYCHECK, *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )


def parse_time(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def stay(
    city: str, arrival: int, departure: int, location: tuple[float, float] | None = None
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "city_code": city,
        "arrival": rfc3339(arrival),
        "departure": rfc3339(departure),
    }
    if location is not None:
        s["location"] = {"latitude": location[0], "longitude": location[1]}
    return s


def write_json(path: pathlib.Path, obj: Any) -> pathlib.Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_itinerary(path: pathlib.Path, *stays: dict[str, Any]) -> pathlib.Path:
    return write_json(path, {"stays": list(stays)})


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def high_square(
    area_id: str, centre: tuple[float, float], city: str, now: int, level: str = "high"
) -> dict[str, Any]:
    return feature(area_id, city, level, square(*centre, 1000), active_from=now - 5 * DAY)


def spec_areas(now: int) -> dict[str, Any]:
    """SPEC.md's B: one high-risk 1 km square in 120100 (Tianjin), active from now-5d."""
    return collection(high_square("TJ-B", TJ, "120100", now))


def spec_risk_areas(now: int) -> Areas:
    """SPEC.md's B as a test repository's department publishes it."""
    return risk_areas(spec_areas(now)["features"])


NO_AREAS = risk_areas([])


def one_line_refusal(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def poll(fn: Callable[[], Any], done: Callable[[Any], bool], *, timeout: float) -> Any:
    """Call ``fn`` until ``done(result)`` or the deadline; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def timestamp_expiry(files: ServerFiles) -> int:
    """When the published set expires: its timestamp role's expiry (the earliest)."""
    return next(r.expires for r in files.repository.roles() if r.name == "timestamp")


def served_metadata(files: ServerFiles) -> dict[str, bytes]:
    """Every metadata file the server's folder holds now (to put back later: a rollback)."""
    return {p.name: p.read_bytes() for p in (files.served / "metadata").iterdir()}


def put_back(files: ServerFiles, metadata: dict[str, bytes]) -> None:
    """Serve older metadata again, the way a mirror that went back in time would:
    ``timestamp.json`` last, by rename."""
    folder = files.served / "metadata"
    for name, data in sorted(metadata.items(), key=lambda item: item[0] == "timestamp.json"):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)


# --- the server as a subprocess -----------------------------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    banner: str
    log: pathlib.Path
    files: ServerFiles

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def submit(self, itinerary: pathlib.Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run("submit", "--server", self.target, "--itinerary", itinerary, *extra)

    def submit_ok(self, itinerary: pathlib.Path, *extra: str) -> dict[str, Any]:
        r = self.submit(itinerary, *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def keys(self, out: pathlib.Path) -> dict[str, Any]:
        r = run("keys", "--server", self.target)
        assert r.returncode == 0, r.stderr
        out.write_text(r.stdout, encoding="utf-8")
        return json.loads(r.stdout)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def serving(
    files: ServerFiles,
    *,
    issuer: str = ISSUER,
    log_level: str = "info",
    extra: Sequence[str] = (),
    name: str = "serve",
) -> Iterator[Served]:
    """``staycheck serve --repository DIR --trusted-root ROOT.json`` over ``files`` on
    127.0.0.1:0 (tests/harness.py); waits for its ``serving on`` line; always ends it. Each
    run keeps its own stderr log."""
    run_dir = files.root / f"{name}.{time.monotonic_ns()}"
    command = [
        *harness.STAYCHECK,
        *files.serve_args(issuer=issuer, log_level=log_level),
        *extra,
    ]
    with harness.spawn(command, run_dir, start_timeout_s=20) as p:
        yield Served(p.proc, p.port, p.banner, p.stderr_path, files)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def now() -> int:
    return int(time.time())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def main_server(home: pathlib.Path, now: int) -> Iterator[Served]:
    """One server for the read-only flows, following a repository that publishes SPEC.md's
    area B with the default policy, at debug level so its log can be checked."""
    files = write_server_files(home / "main", areas=spec_risk_areas(now))
    with serving(files, log_level="debug") as s:
        yield s


@pytest.fixture(scope="module")
def main_jwks(home: pathlib.Path, main_server: Served) -> pathlib.Path:
    path = home / "main-jwks.json"
    main_server.keys(path)
    return path


@pytest.fixture(scope="module")
def bound_verdict(home: pathlib.Path, main_server: Served, now: int) -> dict[str, Any]:
    """A REVIEW_REQUIRED verdict bound to SUBJECT_ID, as ``submit --subject-id`` prints it."""
    it = write_itinerary(
        home / "bound.json", stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, TJ)
    )
    return main_server.submit_ok(it, "--subject-id", SUBJECT_ID)


# --- authority keygen ---------------------------------------------------------------------


def test_keygen_writes_private_key_0600_and_refuses_to_overwrite(tmp_path):
    private, public = tmp_path / "a.key", tmp_path / "a.pub"
    r = run("authority", "keygen", "--private", private, "--public", public)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    assert b"PRIVATE" not in public.read_bytes()
    before = (private.read_bytes(), public.read_bytes())

    r = run("authority", "keygen", "--private", private, "--public", public)
    assert r.returncode == 2
    assert "--force" in r.stderr
    assert (private.read_bytes(), public.read_bytes()) == before

    r = run("authority", "keygen", "--private", private, "--public", public, "--force")
    assert r.returncode == 0, r.stderr
    assert private.read_bytes() != before[0]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_keygen_refuses_when_only_the_public_file_exists(tmp_path):
    private, public = tmp_path / "a.key", tmp_path / "a.pub"
    public.write_text("keep me")
    r = run("authority", "keygen", "--private", private, "--public", public)
    assert r.returncode == 2
    assert public.read_text() == "keep me"
    assert not private.exists()


def test_keygen_into_a_missing_folder_is_a_clean_input_error(tmp_path):
    r = run(
        "authority",
        "keygen",
        "--private",
        tmp_path / "missing" / "a.key",
        "--public",
        tmp_path / "a.pub",
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "a.pub").exists()


# --- authority repo: render, diff, policy, publish ----------------------------------------
# (create, add-department, publish, refresh and inspect end to end, read by a follower:
# tests/integration/test_tuf_repository.py)


def repo(ws: pathlib.Path, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return run("authority", "repo", *args, "--workspace", ws, timeout=60)


def repo_ok(ws: pathlib.Path, *args: str | os.PathLike[str]) -> str:
    r = repo(ws, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def role_versions(ws: pathlib.Path) -> dict[str, int]:
    return {r["role"]: r["version"] for r in json.loads(repo_ok(ws, "inspect"))["roles"]}


def published_metadata(ws: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (ws / "repository" / "metadata").iterdir()}


def what_servers_read(ws: pathlib.Path, state: pathlib.Path) -> Any:
    """The merged risk-area bundle a server following the workspace's repository gets."""
    root = (ws / "repository" / "metadata" / "1.root.json").read_bytes()
    follower = RepositoryFollower(state, str(ws / "repository"), trusted_root=root)
    return follower.refresh(now=int(time.time())).bundle


def _area_ids(svg: pathlib.Path) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg.read_text(encoding="utf-8"))
    return sorted(e.get("data-area-id", "") for e in root.iter() if e.get("data-area-id"))


POLICE_TJ2 = (TJ[0] + 0.05, TJ[1])  # about 5.5 km north of tj-1


@pytest.fixture(scope="module")
def two_departments(home: pathlib.Path, now: int) -> pathlib.Path:
    """A workspace made with the CLI: police publishes tj-1 (high) and tj-2 (medium) in
    Tianjin, health publishes lf-1 (high) in Langfang. The tests using it only read it."""
    ws = home / "two-departments"
    repo_ok(ws, "create")
    repo_ok(ws, "add-department", "police")
    repo_ok(ws, "add-department", "health")
    police = write_json(
        home / "police.geojson",
        collection(
            high_square("tj-1", TJ, "120100", now),
            high_square("tj-2", POLICE_TJ2, "120100", now, level="medium"),
        ),
    )
    health = write_json(home / "health.geojson", collection(high_square("lf-1", LF, "131000", now)))
    repo_ok(ws, "publish", "police", "--areas", police)
    repo_ok(ws, "publish", "health", "--areas", health)
    return ws


def test_repo_render_draws_every_departments_areas(tmp_path, two_departments):
    out = repo_ok(two_departments, "render", "--out", tmp_path / "map.svg")
    # Ids as servers merge them: each prefixed with its department.
    assert _area_ids(tmp_path / "map.svg") == ["health/lf-1", "police/tj-1", "police/tj-2"]
    # SPEC: the risk-area version is the repository snapshot's.
    assert f"risk areas version {role_versions(two_departments)['snapshot']}" in out


@pytest.mark.parametrize(
    ("department", "ids"),
    [("police", ["police/tj-1", "police/tj-2"]), ("health", ["health/lf-1"])],
)
def test_repo_render_of_one_department_draws_its_areas_only(
    tmp_path, two_departments, department, ids
):
    svg = tmp_path / "map.svg"
    out = repo_ok(two_departments, "render", "--department", department, "--out", svg)
    assert _area_ids(svg) == ids
    assert f"department {department}" in out


def test_repo_render_of_an_unknown_department_is_refused(tmp_path, two_departments):
    r = repo(two_departments, "render", "--department", "rail", "--out", tmp_path / "map.svg")
    assert r.returncode != 0
    assert "rail" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "map.svg").exists()


def test_repo_diff_lists_what_publishing_would_change_and_publishes_nothing(
    tmp_path, two_departments, now
):
    """police's new file: tj-1 down to medium, tj-2 gone, tj-3 new (ids as the department
    writes them); health's area is not police's business."""
    new = write_json(
        tmp_path / "police-new.geojson",
        collection(
            high_square("tj-1", TJ, "120100", now, level="medium"),
            high_square("tj-3", (TJ[0] - 0.05, TJ[1]), "120100", now),
        ),
    )
    versions, metadata = role_versions(two_departments), published_metadata(two_departments)
    out = repo_ok(two_departments, "diff", "police", "--areas", new)
    lines = out.splitlines()
    assert lines == [
        "+ added     tj-3",
        "- removed   tj-2",
        "~ level     tj-1: high -> medium",
        "1 added, 1 removed, 1 level, 0 window, 0 geometry, 0 city, 0 policy changed; 0 unchanged",
    ]
    assert "lf-1" not in out
    # Nothing was published: the same metadata, the same versions.
    assert published_metadata(two_departments) == metadata
    assert role_versions(two_departments) == versions


@pytest.mark.parametrize(
    ("department", "text", "needle"),
    [
        ("rail", None, "department rail"),
        ("police", '{"type": "FeatureCollection", "features": [', "--areas"),
        ("police", "bad level", "features[0] (id tj-1).level"),
    ],
    ids=["unknown department", "not JSON", "invalid feature"],
)
def test_repo_diff_refuses_a_mistake_naming_it(
    tmp_path, two_departments, now, department, text, needle
):
    areas = tmp_path / "new.geojson"
    if text == "bad level":
        write_json(areas, collection(high_square("tj-1", TJ, "120100", now, level="severe")))
    elif text is None:
        write_json(areas, collection(high_square("tj-1", TJ, "120100", now)))
    else:
        areas.write_text(text)
    r = repo(two_departments, "diff", department, "--areas", areas)
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr


def test_repo_policy_flags_reach_what_servers_read(tmp_path):
    from staycheck.v1 import bundle_pb2

    ws = tmp_path / "ws"
    repo_ok(ws, "create")
    policy = what_servers_read(ws, tmp_path / "state").policy
    # SPEC.md's defaults: a 14-day window, 4 hours, medium and high flagged, tolerance 0.
    assert (policy.window_days, policy.min_stay_seconds, policy.tolerance_m) == (14, 4 * HOUR, 0)
    assert set(policy.flagged_levels) == {bundle_pb2.RISK_LEVEL_MEDIUM, bundle_pb2.RISK_LEVEL_HIGH}

    repo_ok(
        ws, "policy", "--window-days", "10", "--min-stay-hours", "2.5", "--tolerance-m", "25",
        "--flag-levels", "high",
    )  # fmt: skip
    policy = what_servers_read(ws, tmp_path / "state").policy
    assert (policy.window_days, policy.min_stay_seconds, policy.tolerance_m) == (10, 9000, 25)
    assert list(policy.flagged_levels) == [bundle_pb2.RISK_LEVEL_HIGH]


def test_repo_publish_refuses_a_self_intersecting_polygon_naming_the_feature(tmp_path, now):
    ws = tmp_path / "ws"
    repo_ok(ws, "create")
    repo_ok(ws, "add-department", "police")
    lat, lon = TJ
    d = 0.01
    # A bow tie: the ring's edges cross in the middle.
    bowtie = [
        [
            [lon - d, lat - d],
            [lon + d, lat + d],
            [lon + d, lat - d],
            [lon - d, lat + d],
            [lon - d, lat - d],
        ]
    ]
    areas = spec_areas(now)
    areas["features"].append(
        feature("TJ-BOWTIE-7", "120100", "medium", bowtie, active_from=now - DAY)
    )
    before = role_versions(ws)
    r = repo(ws, "publish", "police", "--areas", write_json(tmp_path / "areas.geojson", areas))
    assert r.returncode == 2
    assert "TJ-BOWTIE-7" in r.stderr
    assert "Traceback" not in r.stderr
    assert role_versions(ws) == before  # nothing published


# --- serve + submit: SPEC.md's example cases ----------------------------------------------


def _spec_cases(now: int) -> list[tuple[str, list[dict[str, Any]], str]]:
    return [
        ("14 days in 110100 only", [stay("110100", now - 14 * DAY, now, BJ)], "NO_ABNORMALITY"),
        (
            "6 h in 120100 at now-3d inside the square",
            [stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, TJ)],
            "REVIEW_REQUIRED",
        ),
        (
            "6 h in 120100 at now-3d 5 km outside the square",
            [stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, TJ_5KM_NORTH)],
            "NO_ABNORMALITY",
        ),
        (
            "2 h in 120100 inside the square at now-3d",
            [stay("120100", now - 3 * DAY, now - 3 * DAY + 2 * HOUR, TJ)],
            "NO_ABNORMALITY",
        ),
        (
            "6 h in 120100 inside the square at now-7d",
            [stay("120100", now - 7 * DAY, now - 7 * DAY + 6 * HOUR, TJ)],
            "NO_ABNORMALITY",
        ),
        (
            "6 h in 120100 with no location at now-3d",
            [stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR)],
            "REVIEW_REQUIRED",
        ),
        (
            "6 h in 120100 inside the square at now-16d",
            [stay("120100", now - 16 * DAY, now - 16 * DAY + 6 * HOUR, TJ)],
            "NO_ABNORMALITY",
        ),
    ]


SPEC_CASE_IDS = [
    "14d-beijing",
    "6h-inside",
    "6h-5km-outside",
    "2h-inside",
    "6h-inside-before-active",
    "6h-no-location",
    "6h-inside-outside-window",
]


def test_serve_banner_names_the_risk_area_version(main_server):
    assert main_server.banner.startswith("serving on 127.0.0.1:")
    # SPEC: the risk-area version is the snapshot version of the repository followed.
    assert f"risk areas version {main_server.files.snapshot_version()}" in main_server.banner
    assert main_server.proc.poll() is None


@pytest.mark.parametrize("case", range(len(SPEC_CASE_IDS)), ids=SPEC_CASE_IDS)
def test_submit_spec_example(tmp_path, main_server, now, case):
    title, stays, expected = _spec_cases(now)[case]
    out = main_server.submit_ok(write_itinerary(tmp_path / "it.json", *stays))
    assert out["status"] == expected, title
    assert out["token"].startswith("SC1:")
    # Text form: base45, which fits a QR code's alphanumeric mode.
    assert BASE45.fullmatch(out["token"])
    assert "salt" not in out


def test_keys_prints_an_ed25519_jwks(main_jwks):
    jwks = json.loads(main_jwks.read_text())
    assert jwks["keys"], "at least one verdict key"
    for key in jwks["keys"]:
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert key["alg"] == "EdDSA"
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        assert len(raw) == 32
        # kid: the first 8 bytes of SHA-256 of the raw public key (hex or base64url).
        kid8 = hashlib.sha256(raw).digest()[:8]
        assert key["kid"] in (kid8.hex(), base64.urlsafe_b64encode(kid8).decode().rstrip("="))
        assert "d" not in key, "never the private part"


# --- submit --subject-id, keys, verify ----------------------------------------------------


def test_submit_with_subject_id_prints_a_presentation_with_the_salt(bound_verdict):
    assert bound_verdict["status"] == "REVIEW_REQUIRED"
    assert re.fullmatch(r"[0-9a-f]{32}", bound_verdict["salt"])
    assert SUBJECT_ID not in json.dumps(bound_verdict)
    # docs/formats.md: SCP1: + base45(token bytes || salt), the token alone beside it.
    presentation = bound_verdict["presentation"]
    assert presentation.startswith("SCP1:") and BASE45.fullmatch(presentation)
    body = base45.b45decode(presentation[len("SCP1:") :])
    token = base45.b45decode(bound_verdict["token"][len("SC1:") :])
    assert body == token + bytes.fromhex(bound_verdict["salt"])


def verify(
    *args: str | os.PathLike[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run("verify", *args, stdin=stdin)


def lines_of(r: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``verify``'s text output: a status line, then ``name: value`` lines."""
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    first, *rest = r.stdout.splitlines()
    out = dict(line.split(": ", 1) for line in rest)
    out["status"] = first
    return out


def test_verify_accepts_the_bearers_verdict(main_server, main_jwks, bound_verdict, now):
    version = main_server.files.snapshot_version()
    r = verify(
        bound_verdict["presentation"],
        "--keys",
        main_jwks,
        "--subject-id",
        SUBJECT_ID.lower(),  # the check character x may be written either way
        "--min-riskset-version",
        str(version),
    )
    out = lines_of(r)
    assert out["status"] == "弹窗 REVIEW_REQUIRED"
    assert out["binding"] == "checked"
    assert out["issuer"] == ISSUER
    assert out["risk-area version"] == str(version)
    iat, exp = parse_time(out["issued at"]), parse_time(out["expires at"])
    # iat is rounded to a coarse bucket: minutes, never seconds.
    assert iat % 60 == 0
    assert now - 15 * 60 <= iat <= int(time.time())
    # 24 h at most, never past the risk areas' expiry (their timestamp's, 6 h after
    # publication).
    assert exp == min(iat + 24 * HOUR, timestamp_expiry(main_server.files))


def test_verify_json_says_what_was_checked(main_jwks, bound_verdict):
    r = verify(
        bound_verdict["presentation"], "--keys", main_jwks, "--subject-id", SUBJECT_ID, "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["status"], out["binding"], out["issuer"]) == ("REVIEW_REQUIRED", "checked", ISSUER)
    assert "bound" not in out


def test_verify_of_a_bound_verdict_without_an_identity_choice_is_refused(main_jwks, bound_verdict):
    """A clerk who forgot --subject-id is told how to proceed; nothing reads as "checked"."""
    line = one_line_refusal(verify(bound_verdict["presentation"], "--keys", main_jwks))
    assert "--subject-id" in line and "--no-binding-check" in line


def test_verify_with_no_binding_check_says_not_checked(main_jwks, bound_verdict):
    r = verify(bound_verdict["presentation"], "--keys", main_jwks, "--no-binding-check")
    assert lines_of(r)["binding"] == "not checked"


def test_verify_of_an_unbound_verdict_says_none(tmp_path, main_server, main_jwks, now):
    it = write_itinerary(tmp_path / "it.json", stay("110100", now - 14 * DAY, now, BJ))
    out = main_server.submit_ok(it)
    assert "salt" not in out
    assert lines_of(verify(out["presentation"], "--keys", main_jwks))["binding"] == "none"
    # Asked to check the identity, an unbound verdict cannot pass.
    line = one_line_refusal(
        verify(out["presentation"], "--keys", main_jwks, "--subject-id", SUBJECT_ID)
    )
    assert "binding mismatch" in line


def test_verify_reads_the_presentation_from_stdin(main_jwks, bound_verdict):
    stdin = bound_verdict["presentation"] + "\n"
    r = verify("-", "--keys", main_jwks, "--subject-id", SUBJECT_ID, stdin=stdin)
    assert lines_of(r)["binding"] == "checked"


def test_verify_a_bare_token_with_its_salt(main_jwks, bound_verdict):
    r = verify(
        bound_verdict["token"],
        "--keys",
        main_jwks,
        "--subject-id",
        SUBJECT_ID,
        "--salt",
        bound_verdict["salt"],
    )
    assert lines_of(r)["binding"] == "checked"


def test_verify_refuses_another_subject(main_jwks, bound_verdict):
    r = verify(
        bound_verdict["presentation"], "--keys", main_jwks, "--subject-id", "110105194912310037"
    )
    assert "binding mismatch" in one_line_refusal(r)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--salt", "00" * 16], "--salt goes with --subject-id"),
        (["--subject-id", SUBJECT_ID, "--no-binding-check"], "not allowed with"),
        (["--subject-id", SUBJECT_ID, "--salt", "00" * 16], "carries its salt"),
        (["--subject-id", "  "], "--subject-id"),
    ],
    ids=["salt-alone", "both-choices", "salt-twice", "blank-id"],
)
def test_verify_usage_errors(main_jwks, bound_verdict, extra, needle):
    r = verify(bound_verdict["presentation"], "--keys", main_jwks, *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr


def test_verify_warns_when_the_key_set_is_older_than_its_refresh_interval(tmp_path, main_jwks, now):
    """The key set says how often to fetch it (6 h by default); a new key is published 24 h
    before it signs, so a verifier that keeps to the interval never meets an unknown key.
    A verdict ends with the risk areas it was made with (6 h after their publication, when
    their timestamp expires), so the late check is made with a server that asks for hourly
    fetches."""
    assert json.loads(main_jwks.read_text())["refresh_interval_s"] == 6 * HOUR
    files = write_server_files(tmp_path / "hourly", areas=spec_risk_areas(now))
    it = write_itinerary(tmp_path / "it.json", stay("110100", now - 14 * DAY, now, BJ))
    with serving(files, extra=("--key-refresh-interval-s", str(HOUR))) as s:
        jwks = s.keys(tmp_path / "jwks.json")
        presentation = s.submit_ok(it)["presentation"]
    assert jwks["refresh_interval_s"] == HOUR
    fresh = verify(presentation, "--keys", tmp_path / "jwks.json")
    assert fresh.returncode == 0 and fresh.stderr == ""
    late = jwks["published_at"] + 2 * HOUR  # the verdict is still valid then
    r = verify(presentation, "--keys", tmp_path / "jwks.json", "--at", str(late))
    assert r.returncode == 0, r.stderr  # a warning, not a refusal
    assert "warning" in r.stderr and "every 1 h" in r.stderr and "staycheck keys" in r.stderr


# --- the QR code: submit --qr, verify --qr ---------------------------------------------------


@pytest.fixture(scope="module")
def bound_qr(
    home: pathlib.Path, main_server: Served, now: int
) -> tuple[pathlib.Path, dict[str, Any]]:
    it = write_itinerary(
        home / "qr.json", stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, TJ)
    )
    png = home / "v.png"
    return png, main_server.submit_ok(it, "--subject-id", SUBJECT_ID, "--qr", png)


def test_the_qr_round_trip_checks_the_bearer(main_jwks, bound_qr):
    """Issue 10, done when: submit --qr v.png, verify --qr v.png with the right ID exits 0
    with "binding: checked", with another ID 1 "binding mismatch", without an ID 1 and says
    how to proceed."""
    png, _ = bound_qr
    ok = verify("--qr", png, "--keys", main_jwks, "--subject-id", SUBJECT_ID)
    assert ok.returncode == 0, ok.stderr
    assert "binding: checked" in ok.stdout.splitlines()
    other = verify("--qr", png, "--keys", main_jwks, "--subject-id", "110105194912310037")
    assert "binding mismatch" in one_line_refusal(other)
    neither = one_line_refusal(verify("--qr", png, "--keys", main_jwks))
    assert "--subject-id" in neither


def test_the_qr_holds_the_printed_presentation(bound_qr):
    png, out = bound_qr
    from staycheck.client.qr import read_qr

    assert read_qr(png) == out["presentation"]


def test_submit_qr_svg_and_terminal(tmp_path, main_server, now):
    it = write_itinerary(tmp_path / "it.json", stay("110100", now - 14 * DAY, now, BJ))
    out = main_server.submit_ok(it, "--qr", tmp_path / "v.svg")
    assert (tmp_path / "v.svg").read_text().lstrip().startswith("<?xml")
    assert out["presentation"].startswith("SCP1:")
    drawn = main_server.submit(it, "--qr", "-")
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert set("".join(lines[:-1])) <= {" ", "\u2580", "\u2584", "\u2588"}
    assert lines[-1] == "未见异常 NO_ABNORMALITY"


def test_submit_qr_refuses_another_image_type_before_submitting(tmp_path, main_server, now):
    it = write_itinerary(tmp_path / "it.json", stay("110100", now - 14 * DAY, now, BJ))
    r = main_server.submit(it, "--qr", tmp_path / "v.gif")
    assert r.returncode == 2
    assert ".png or .svg" in r.stderr
    assert not (tmp_path / "v.gif").exists()


def test_verify_qr_of_a_picture_without_a_code(tmp_path, main_jwks):
    from PIL import Image

    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    r = verify("--qr", tmp_path / "blank.png", "--keys", main_jwks, "--no-binding-check")
    assert "no readable QR code" in r.stderr
    assert r.returncode == 2  # the picture is bad input, not a refused verdict


def test_verify_refuses_a_stale_riskset_version(main_server, main_jwks, bound_verdict):
    r = verify(
        bound_verdict["presentation"],
        "--keys",
        main_jwks,
        "--no-binding-check",
        "--min-riskset-version",
        str(main_server.files.snapshot_version() + 1),
    )
    assert "stale" in one_line_refusal(r)


def test_verify_refuses_a_tampered_token(main_jwks, bound_verdict):
    token = bound_verdict["token"]
    i = len(token) // 2
    forged = token[:i] + ("0" if token[i] != "0" else "1") + token[i + 1 :]
    assert forged != token
    r = run("verify", forged, "--keys", main_jwks)
    one_line_refusal(r)


def test_verify_refuses_a_garbage_token_as_malformed(main_jwks):
    r = run("verify", "SC1:this is not a token", "--keys", main_jwks)
    assert "malformed" in one_line_refusal(r)
    r = run("verify", "hello", "--keys", main_jwks)
    assert "malformed" in one_line_refusal(r)


def test_verify_refuses_a_token_under_another_servers_keys(tmp_path, bound_verdict, now):
    files = write_server_files(tmp_path / "other", areas=spec_risk_areas(now))
    with serving(files) as other:
        other.keys(tmp_path / "other-jwks.json")
    r = verify(bound_verdict["presentation"], "--keys", tmp_path / "other-jwks.json")
    assert "unknown key" in one_line_refusal(r)
    assert "unknown key" in one_line_refusal(r)


# --- submit: bad input --------------------------------------------------------------------


def test_submit_invalid_itinerary_names_the_field_not_the_values(tmp_path, main_server, now):
    arrival, departure = now - 2 * DAY, now - 2 * DAY - HOUR
    location = (39.13579, 117.24680)
    it = write_itinerary(tmp_path / "bad.json", stay("120100", arrival, departure, location))
    r = main_server.submit(it)
    assert r.returncode == 2  # an input error, whoever catches it (issue 10)
    assert "stays[0].departure" in r.stderr
    assert "INVALID_ARGUMENT" in r.stderr
    for value in (
        rfc3339(arrival),
        rfc3339(departure),
        rfc3339(departure)[:10],
        str(arrival),
        str(departure),
        "39.13579",
        "117.2468",
    ):
        assert value not in r.stderr
    # The server is still answering.
    ok = write_itinerary(tmp_path / "ok.json", stay("110100", now - 14 * DAY, now, BJ))
    assert main_server.submit_ok(ok)["status"] == "NO_ABNORMALITY"


def test_submit_unparsable_itinerary_is_an_input_error(tmp_path, main_server):
    it = tmp_path / "bad.json"
    it.write_text('{"stays": [{"city_code": "130600", "secret_field": 38.87654321}]}')
    r = main_server.submit(it)
    assert r.returncode == 2
    assert "38.87654321" not in r.stderr
    assert "130600" not in r.stderr
    assert "Traceback" not in r.stderr


def test_server_log_holds_no_itinerary_bytes_at_debug_level(tmp_path, main_server, now):
    arrival = now - 5 * DAY + 1234
    departure = arrival + 7 * HOUR + 17
    located = write_itinerary(
        tmp_path / "a.json", stay("130600", arrival, departure, (38.8765432, 115.4654321))
    )
    backwards = write_itinerary(
        tmp_path / "b.json", stay("130600", departure, arrival, (38.8765432, 115.4654321))
    )
    assert main_server.submit_ok(located)["status"] == "NO_ABNORMALITY"
    assert main_server.submit(backwards).returncode == 2  # an input error (issue 10)
    log = main_server.log_text()
    for value in (
        "130600",
        "38.876",
        "115.465",
        str(arrival),
        str(departure),
        rfc3339(arrival),
        rfc3339(departure),
    ):
        assert value not in log


# --- new publications, rollback, restart, SIGTERM -----------------------------------------


def test_a_publication_is_adopted_on_sighup_and_a_rollback_is_refused(tmp_path, now):
    """The department publishes; SIGHUP makes the server refresh now (its own refresh is a
    minute away). Older metadata served again is refused and the newest set keeps serving."""
    files = write_server_files(tmp_path / "files", areas=spec_risk_areas(now))
    risky = write_itinerary(
        tmp_path / "risky.json", stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, TJ)
    )
    with serving(files) as s:
        first = s.submit_ok(risky)
        assert (first["status"], first["riskset_version"]) == (
            "REVIEW_REQUIRED",
            files.snapshot_version(),
        )
        older = served_metadata(files)

        files.publish(NO_AREAS)
        newest = files.snapshot_version()
        assert newest > first["riskset_version"]
        s.proc.send_signal(signal.SIGHUP)
        out = poll(lambda: s.submit_ok(risky), lambda o: o["riskset_version"] == newest, timeout=10)
        assert out["riskset_version"] == newest, "the publication was not adopted within 10 s"
        assert out["status"] == "NO_ABNORMALITY"

        # The older metadata back in the served folder: refused, the newest set stays.
        mark = len(s.log_text())
        put_back(files, older)
        s.proc.send_signal(signal.SIGHUP)
        poll(lambda: s.log_text()[mark:], lambda t: "refused" in t, timeout=10)
        assert "refused" in s.log_text()[mark:], "the older metadata was not considered"
        out = s.submit_ok(risky)
        assert (out["status"], out["riskset_version"]) == ("NO_ABNORMALITY", newest)
        assert s.proc.poll() is None

        # The verdict says the same offline.
        s.keys(tmp_path / "jwks.json")
        r = run("verify", out["token"], "--keys", tmp_path / "jwks.json", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["riskset_version"] == newest


def test_restart_cannot_roll_back_and_reuses_the_verdict_key(tmp_path, now):
    files = write_server_files(tmp_path / "files", areas=spec_risk_areas(now))
    older = served_metadata(files)
    files.publish(spec_risk_areas(now))  # the same areas, a newer snapshot
    newest = files.snapshot_version()
    risky = write_itinerary(
        tmp_path / "risky.json", stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, TJ)
    )
    with serving(files) as s:
        out = s.submit_ok(risky)
        assert (out["status"], out["riskset_version"]) == ("REVIEW_REQUIRED", newest)
        kids_before = {k["kid"] for k in s.keys(tmp_path / "jwks-1.json")["keys"]}
        assert s.stop(timeout=15) == 0

    # The served folder went back in time while the server was down: TUF's trusted
    # metadata in the state dir refuses it, so the restarted server serves nothing.
    put_back(files, older)
    with serving(files, extra=("--repository-refresh-s", "1")) as s:
        assert "serving on 127.0.0.1:" in s.banner
        assert "no valid risk areas: NOT_SERVING" in s.banner
        r = s.submit(risky)
        assert r.returncode == 1
        assert "FAILED_PRECONDITION" in r.stderr
        kids_after = {k["kid"] for k in s.keys(tmp_path / "jwks-2.json")["keys"]}
        assert kids_after == kids_before

        # A new publication brings the service back; no SIGHUP this time: the server's
        # own refresh (every second here) must find it.
        files.publish(spec_risk_areas(now))
        r = poll(lambda: s.submit(risky), lambda res: res.returncode == 0, timeout=15)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["status"], out["riskset_version"]) == (
            "REVIEW_REQUIRED",
            files.snapshot_version(),
        )
        assert out["riskset_version"] > newest
        # The key set published before the restart still verifies today's verdicts.
        r = run("verify", out["token"], "--keys", tmp_path / "jwks-1.json")
        assert r.returncode == 0, r.stderr


def test_sigterm_stops_the_server_with_exit_code_0(tmp_path, now):
    files = write_server_files(tmp_path / "files", areas=spec_risk_areas(now))
    with serving(files) as s:
        assert s.stop(timeout=15) == 0


def test_serve_on_a_busy_port_fails_cleanly(tmp_path, now):
    files = write_server_files(tmp_path / "files", areas=spec_risk_areas(now))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(*files.serve_args(listen=f"127.0.0.1:{port}", issuer=ISSUER), timeout=20)
    assert r.returncode != 0
    assert "serving on" not in r.stdout
    assert "Traceback" not in r.stderr
    assert str(port) in r.stderr


# --- demo and help ------------------------------------------------------------------------


def test_demo_tells_the_whole_story():
    r = run("demo", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "未见异常" in r.stdout
    assert "弹窗" in r.stdout
    assert "rejected" in r.stdout


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["authority"],
        ["authority", "keygen"],
        ["authority", "render"],
        ["authority", "diff"],
        ["authority", "repo"],
        ["authority", "repo", "render"],
        ["authority", "repo", "diff"],
        ["serve"],
        ["submit"],
        ["keys"],
        ["verify"],
        ["demo"],
    ],
    ids=lambda c: " ".join(c) or "staycheck",
)
def test_help(command):
    r = run(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: staycheck")


# --- client errors a person can act on (issue 10) -----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"stays": [', "itinerary: not valid JSON (line 1, column 12"),
        ('{"stay": []}', "itinerary: unknown field 'stay'"),
        ('{"stays": [{"citycode": "110100"}]}', "stays[0]: unknown field 'citycode'"),
        (
            '{"stays": [{"city_code": "110100", "arrival": "2026-11-28 08:00"}]}',
            "stays[0].arrival: an RFC 3339 time with a zone, e.g. 2026-11-28T08:00:00Z "
            "(got '2026-11-28 08:00')",
        ),
        (
            '{"stays": [{"city_code": "110100", "departure": "2026-11-28T08:00:00"}]}',
            "stays[0].departure: an RFC 3339 time with a zone",
        ),
        ('{"stays": [{"location": {"lat": 39.9}}]}', "stays[0].location: an object with"),
        ('{"stays": [{"city_code": 110100}]}', "stays[0].city_code: a text of six digits"),
    ],
    ids=["broken", "top-level typo", "field typo", "no zone", "no offset", "location", "code"],
)
def test_an_itinerary_file_mistake_names_the_field_and_the_rule(tmp_path, text, expected):
    path = tmp_path / "trip.json"
    path.write_text(text)
    # Caught before any connection: the port needs no server.
    r = run("submit", "--server", f"127.0.0.1:{free_port()}", "--itinerary", path)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_nothing_listening_is_said_at_once(tmp_path, now):
    it = write_itinerary(tmp_path / "ok.json", stay("110100", now - 14 * DAY, now, BJ))
    port = free_port()
    r = run("submit", "--server", f"127.0.0.1:{port}", "--itinerary", it, timeout=20)
    assert r.returncode == 1
    assert r.stderr.strip() == f"staycheck: nothing is listening at 127.0.0.1:{port}"
    k = run("keys", "--server", f"127.0.0.1:{port}", timeout=20)
    assert k.stderr.strip() == f"staycheck: nothing is listening at 127.0.0.1:{port}"


def test_tls_to_a_plaintext_server_says_which_flag(tmp_path, main_server):
    pki = tmp_path / "pki"
    assert run("certs", "demo", "--out", pki).returncode == 0
    r = run("keys", "--server", main_server.target, "--ca", pki / "ca.pem", timeout=20)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # no gRPC C-core log lines
    assert "does not answer as a TLS gRPC server" in lines[0] and "drop --ca" in lines[0]


def test_plaintext_to_a_tls_server_says_which_flag(tmp_path, now):
    pki = make_pki(tmp_path / "pki")
    with tls_server(tmp_path / "srv", pki=pki, areas=spec_risk_areas(now)) as s:
        r = run("keys", "--server", s.target, timeout=20)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "does not answer plaintext gRPC" in lines[0] and "add --ca PEM" in lines[0]


@pytest.mark.parametrize("server", ["127.0.0.1", "localhost:", ":50051", "host:http"])
def test_a_server_without_a_port_is_a_usage_error(tmp_path, server):
    r = run("keys", "--server", server)
    assert r.returncode == 2
    assert "give HOST:PORT" in r.stderr


# --- authority render and diff: GeoJSON files before anything is published ----------------


def test_render_draws_a_geojson_file_before_it_is_published(tmp_path, now):
    """README: the authority looks at the areas before publishing them (issue 10)."""
    areas = write_json(tmp_path / "areas.geojson", spec_areas(now))
    r = run("authority", "render", areas, "--out", tmp_path / "map.svg")
    assert r.returncode == 0, r.stderr
    assert "unpublished" in r.stdout
    ids = [f["properties"]["id"] for f in spec_areas(now)["features"]]
    assert _area_ids(tmp_path / "map.svg") == sorted(ids)  # the file's own ids, no prefix


def test_render_into_a_missing_folder_is_a_clean_input_error(tmp_path, now):
    areas = write_json(tmp_path / "areas.geojson", spec_areas(now))
    r = run("authority", "render", areas, "--out", tmp_path / "missing" / "map.svg")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_diff_of_two_geojson_files_lists_each_change(tmp_path, now):
    old = write_json(
        tmp_path / "old.geojson",
        collection(
            high_square("TJ-1", TJ, "120100", now),
            high_square("TJ-2", POLICE_TJ2, "120100", now, level="low"),
            high_square("LF-1", LF, "131000", now),
        ),
    )
    new = write_json(
        tmp_path / "new.geojson",
        collection(
            high_square("TJ-1", TJ, "120100", now, level="medium"),
            high_square("LF-1", LF, "131000", now),
            high_square("LF-2", (LF[0] + 0.05, LF[1]), "131000", now),
        ),
    )
    r = run("authority", "diff", old, new)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "+ added     LF-2",
        "- removed   TJ-2",
        "~ level     TJ-1: high -> medium",
        "1 added, 1 removed, 1 level, 0 window, 0 geometry, 0 city, 0 policy changed; 1 unchanged",
    ]


@pytest.mark.parametrize("command", ["render", "diff"])
@pytest.mark.parametrize("mistake", ["not JSON", "invalid feature", "missing"])
def test_a_mistake_in_a_geojson_file_names_the_file_or_the_field(tmp_path, now, command, mistake):
    good = write_json(tmp_path / "good.geojson", spec_areas(now))
    bad = tmp_path / "bad.geojson"
    if mistake == "not JSON":
        bad.write_text('{"type": "FeatureCollection", "features": [')
        needle = f"{bad} is not valid JSON"
    elif mistake == "invalid feature":
        areas = spec_areas(now)
        areas["features"][0]["properties"]["level"] = "severe"
        write_json(bad, areas)
        needle = "features[0] (id TJ-B).level"
    else:
        needle = f"cannot read {bad}"
    svg = tmp_path / "map.svg"
    args = ["render", bad, "--out", svg] if command == "render" else ["diff", good, bad]
    r = run("authority", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not svg.exists()

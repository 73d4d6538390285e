"""Verdict key rotation on a real server (issue 10, "Keys published before they sign").

A hotel fetches the key set once (GetVerdictKeys) and verifies offline. SPEC.md: a new key
is published a publish-ahead period (default 24 h) before it signs, so that hotel never
meets an unknown key; only an emergency rotation switches at once and marks the old key
revoked. The switch time is ``now + publish_ahead`` rounded up to the 300 s ``iat`` bucket;
NOW = 1_795_000_000 is 100 s past a boundary, so a rotation at ROT = NOW + 1000 switches at
ROT + 24 h = 1_795_087_400 rounded up, 1_795_087_500 (worked out by hand).

The servers run on an injected clock that the tests move; the key reload that the watcher
thread does every ``reload_interval_s`` is called directly (``reload_keys``), so nothing
waits on a timer. When the clock passes the risk areas' expiry (their timestamp's, 6 h after
signing), the repository's online key re-signs them first, as it does hourly in production.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import subprocess
import time
from collections.abc import Iterator

import pytest
from staycheck.geo.errors import ConfigurationError, RevokedKeyError, UnknownKeyError
from staycheck.server.keystore import INDEX_FILE, SigningKey, VerdictKeyStore
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.verdict import decode_token
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token

from tests.harness import STAYCHECK
from tests.helpers import (
    BJ_LAT,
    BJ_LON,
    DAY,
    HOUR,
    NOW,
    Clock,
    RunningServer,
    itinerary,
    running_server,
    spec_areas,
    stay,
)

ROT = NOW + 1000
ROT_SWITCH = 1_795_087_500
FIRST_PENDING_NB = 1_795_086_600  # NOW + 24 h rounded up: the pending key made at start
QUIET = 59.0  # the watcher's interval, seconds: it stays out of the way; tests reload


def submit_at(s: RunningServer, clock: Clock, t: int) -> str:
    """A verdict token issued at ``t`` (the server's clock set there) for a clean stay."""
    clock.now = t
    if s.server.bundles.current.expires_at <= t:
        assert s.refresh().accepted  # fresh risk areas at t: not what these tests are about
    clean = itinerary(stay("110100", t - 2 * DAY, t - DAY, (BJ_LAT, BJ_LON)))
    return str(s.client.submit(clean).token)


def kid_of(token: str) -> str:
    kid = decode_token(token)[0].kid
    assert kid is not None
    return kid.hex()


def fetch_keys(s: RunningServer) -> VerdictKeySet:
    """What a verifier does: GetVerdictKeys, parse the JWKS."""
    return VerdictKeySet(KeySet.from_jwks(s.client.verdict_keys_json()))


def verify(token: str, keys: VerdictKeySet, t: int) -> None:
    verify_token(token, keys, now=t, identity=NO_BINDING_CHECK)


def rotate_cli(state_dir: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STAYCHECK, "keys", "rotate", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def server(tmp_path: pathlib.Path, clock: Clock) -> Iterator[RunningServer]:
    """A server at NOW following a repository that publishes SPEC.md's area B."""
    with running_server(tmp_path / "srv", spec_areas(), clock=clock, reload_interval_s=QUIET) as s:
        yield s


# --- scheduled rotation ------------------------------------------------------------------------


def test_a_key_set_fetched_before_the_rotation_verifies_every_verdict_after_it(server, clock):
    s = server
    before = fetch_keys(s)  # the hotel's copy, fetched at first start
    old = kid_of(submit_at(s, clock, NOW))
    clock.now = ROT
    rotation = VerdictKeyStore(s.state_dir, issuer="110000").rotate(now=ROT)  # another process
    s.server.reload_keys()
    assert s.server.keys.pending_kid == rotation.pending_kid
    assert rotation.signs_from == ROT_SWITCH and rotation.replaces == old
    published = {k["kid"]: k for k in json.loads(s.client.verdict_keys_json())["keys"]}
    assert published[rotation.kid]["nbf"] == ROT_SWITCH
    assert published[old]["exp"] == ROT_SWITCH + 60
    assert rotation.pending_kid in published
    # Through the publish-ahead period and beyond it: the old copy accepts every verdict.
    expected = [
        (ROT, old),
        (ROT + 12 * HOUR, old),
        (ROT_SWITCH - 1, old),
        (ROT_SWITCH, rotation.kid),
        (ROT_SWITCH + 60, rotation.kid),
        (ROT_SWITCH + DAY, rotation.kid),
    ]
    for t, kid in expected:
        token = submit_at(s, clock, t)
        assert kid_of(token) == kid, t
        verify(token, before, t)  # UnknownKeyError here is the bug this fixes
        verify(token, fetch_keys(s), t)  # a verifier that did refresh accepts it too


def test_the_switch_needs_no_file_change_and_no_key_search_per_call(server, clock, monkeypatch):
    s = server
    old = kid_of(submit_at(s, clock, NOW))
    rotation = VerdictKeyStore(s.state_dir, issuer="110000").rotate(now=ROT)
    s.server.reload_keys()
    index = s.state_dir / INDEX_FILE
    stat_before = index.stat().st_mtime_ns
    asked: list[int] = []
    real = s.server.keys.signing_key

    def counting(*, now: int) -> SigningKey:
        asked.append(now)
        return real(now=now)

    monkeypatch.setattr(s.server.keys, "signing_key", counting)
    for t in (ROT, ROT + HOUR, ROT_SWITCH - 1):
        assert kid_of(submit_at(s, clock, t)) == old
    assert asked == []  # one comparison per call, not a search
    for t in (ROT_SWITCH, ROT_SWITCH + 1, ROT_SWITCH + HOUR):
        assert kid_of(submit_at(s, clock, t)) == rotation.kid
    assert asked == [ROT_SWITCH]  # asked once, when the switch time came
    assert index.stat().st_mtime_ns == stat_before


def test_a_call_racing_a_key_reload_cannot_put_back_a_revoked_key(server, clock, monkeypatch):
    """A call that looks up the signer at the switch time while the watcher reloads an
    emergency rotation must not leave the server signing with the key it revoked."""
    s = server
    rotation = VerdictKeyStore(s.state_dir, issuer="110000").rotate(now=ROT)
    s.server.reload_keys()
    real = s.server.keys.signing_key
    emergencies = []

    def racing(*, now: int) -> SigningKey:
        answer = real(now=now)  # from the keys loaded before the emergency...
        if not emergencies:  # ...which lands, and is reloaded, before the call goes on
            store = VerdictKeyStore(s.state_dir, issuer="110000")
            emergencies.append(store.rotate(now=now, emergency=True))
            s.server.reload_keys()
        return answer

    monkeypatch.setattr(s.server.keys, "signing_key", racing)
    assert kid_of(submit_at(s, clock, ROT_SWITCH)) == rotation.kid  # that call, as it began
    (emergency,) = emergencies
    assert rotation.kid in emergency.revoked
    for t in (ROT_SWITCH + 1, ROT_SWITCH + HOUR):
        assert kid_of(submit_at(s, clock, t)) == emergency.kid


def test_the_cli_schedules_a_rotation_that_a_running_server_follows(tmp_path):
    t0 = int(time.time())
    clock = Clock(t0)
    with running_server(
        tmp_path / "srv",
        spec_areas(now=t0),
        clock=clock,
        reload_interval_s=QUIET,
        key_publish_ahead_s=2 * HOUR,
        key_refresh_interval_s=HOUR,
    ) as s:
        before = fetch_keys(s)
        old = kid_of(submit_at(s, clock, t0))
        (new,) = {k.kid.hex() for k in before} - {old}  # the pending key, published at start
        r = rotate_cli(s.state_dir, "--publish-ahead", "2h")
        t1 = int(time.time())
        assert r.returncode == 0, r.stderr
        s.server.reload_keys()
        switch = s.server.keys.record(new).not_before
        # t + 2 h rounded up to 300 s, for the CLI's own now t in [t0, t1].
        assert switch % 300 == 0 and t0 + 2 * HOUR <= switch < t1 + 2 * HOUR + 300
        assert new in r.stdout and utc(switch) in r.stdout
        assert "need nothing else" in r.stdout
        assert s.server.keys.pending_kid is not None and s.server.keys.pending_kid in r.stdout
        for t, kid in [(switch - 1, old), (switch, new), (switch + 3 * HOUR, new)]:
            token = submit_at(s, clock, t)
            assert kid_of(token) == kid
            verify(token, before, t)


# --- emergency rotation ------------------------------------------------------------------------


def test_an_emergency_rotation_revokes_every_key_for_verifiers_that_fetch_again(tmp_path):
    t0 = int(time.time())
    clock = Clock(t0)
    with running_server(
        tmp_path / "srv",
        spec_areas(now=t0),
        clock=clock,
        reload_interval_s=QUIET,
    ) as s:
        before = fetch_keys(s)
        old_token = submit_at(s, clock, t0)
        old = kid_of(old_token)
        (pending,) = {k.kid.hex() for k in before} - {old}
        r = rotate_cli(s.state_dir, "--now")
        assert r.returncode == 0, r.stderr
        assert old in r.stdout and pending in r.stdout and "revoked" in r.stdout
        assert "must fetch the key set again now" in r.stdout
        s.server.reload_keys()
        t = int(time.time())  # the new key's not_before is the CLI's now, rounded down
        published = {k["kid"]: k for k in json.loads(s.client.verdict_keys_json())["keys"]}
        assert published[old]["revoked"] is True and published[pending]["revoked"] is True
        new_token = submit_at(s, clock, t)
        new = kid_of(new_token)
        assert new not in (old, pending) and "revoked" not in published[new]
        after = fetch_keys(s)
        with pytest.raises(RevokedKeyError):
            verify(old_token, after, t)
        verify(new_token, after, t)
        # Until it fetches again, a verifier knows nothing of the new key.
        with pytest.raises(UnknownKeyError) as e:
            verify(new_token, before, t)
        assert not isinstance(e.value, RevokedKeyError)


# --- what the key set says, and the configuration ----------------------------------------------


def test_the_key_set_says_when_it_was_published_and_how_often_to_fetch_it(server, clock):
    clock.now = NOW + 123
    jwks = json.loads(server.client.verdict_keys_json())
    assert jwks["published_at"] == NOW + 123
    assert jwks["refresh_interval_s"] == 6 * HOUR  # the default
    pending = server.server.keys.pending_kid
    assert {k["kid"]: k for k in jwks["keys"]}[pending]["nbf"] == FIRST_PENDING_NB


def test_a_configured_refresh_interval_is_published(tmp_path, clock):
    with running_server(
        tmp_path / "srv",
        spec_areas(),
        clock=clock,
        key_refresh_interval_s=HOUR,
    ) as s:
        assert json.loads(s.client.verdict_keys_json())["refresh_interval_s"] == 3600


def test_a_server_refuses_a_refresh_interval_not_shorter_than_the_publish_ahead(tmp_path, clock):
    with (
        pytest.raises(ConfigurationError) as e,
        running_server(
            tmp_path / "srv",
            spec_areas(),
            clock=clock,
            key_refresh_interval_s=DAY,
        ),
    ):
        pass
    assert "key_refresh_interval_s" in str(e.value) and "key_publish_ahead_s" in str(e.value)


def test_config_check_shows_and_checks_the_key_timing(tmp_path):
    base = (
        'listen = "127.0.0.1:0"\nrepository = "/srv/repository"\n'
        'trusted_root = "/srv/root.json"\n'
        'state_dir = "/srv/state"\nissuer = "110000"\n'
    )
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(base + "key_publish_ahead_s = 172800\n")
    bad.write_text(base + "key_refresh_interval_s = 86400\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAYCHECK_")}
    r = subprocess.run(
        [*STAYCHECK, "config", "check", str(good)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["key_publish_ahead_s"], shown["key_refresh_interval_s"]) == (172800, 21600)
    r = subprocess.run(
        [*STAYCHECK, "config", "check", str(bad)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2
    assert "key_refresh_interval_s" in r.stderr and "key_publish_ahead_s" in r.stderr

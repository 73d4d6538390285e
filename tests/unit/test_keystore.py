"""The verdict key store (staycheck.server.keystore) and the key set members it publishes.

Rules (SPEC.md "Verdict", issue 10 "Keys published before they sign"): a new key is in the
published key set a publish-ahead period (default 24 h) before it signs; the switch time is
``now + publish_ahead`` rounded UP to the verdict ``iat`` bucket (300 s, since ``iat`` is
rounded down to it and a verifier checks the key was valid at ``iat``), and never before
the ``not_before`` the key was published with; the replaced key's window ends 60 s after
the switch; an emergency rotation revokes every key still published and signs with a new
key at once (``not_before`` = now rounded down); revoked keys stay published, marked
``"revoked": true``, until their verdicts would have expired (window end + 24 h + the
verifiers' 120 s skew), and a verifier refuses whatever they signed.

Every time below is worked out by hand from those rules: NOW = 1_795_000_000 is 100 s past
a bucket boundary, so NOW rounded down is 1_794_999_900.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from staycheck.geo.errors import ConfigurationError, RevokedKeyError, UnknownKeyError
from staycheck.geo.itinerary import Status
from staycheck.server.config import build_config, effective
from staycheck.server.keystore import INDEX_FILE, KEYS_DIR, VerdictKeyStore
from staycheck.trust.keys import Ed25519Signer, KeySet, PublicKey, VerdictKeySet
from staycheck.trust.verdict import decode_token, issue_verdict
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token

DAY, HOUR = 86400, 3600
ISSUER = "110000"
NOW = 1_795_000_000
NOW_FLOOR = 1_794_999_900  # NOW rounded down to 300 s
FIRST_PENDING_NB = 1_795_086_600  # NOW + 24 h = 1_795_086_400, rounded up to 300 s
ROT = NOW + 1000  # 1_795_001_000, 200 s past a boundary
ROT_SWITCH = 1_795_087_500  # ROT + 24 h = 1_795_087_400, rounded up


def store_at(tmp_path: pathlib.Path, *, publish_ahead_s: int = DAY) -> VerdictKeyStore:
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER)
    store.load_or_create(now=NOW, publish_ahead_s=publish_ahead_s)
    return store


def another_process(tmp_path: pathlib.Path) -> VerdictKeyStore:
    """A second store on the same state dir (what ``staycheck keys rotate`` is)."""
    return VerdictKeyStore(tmp_path / "state", issuer=ISSUER)


def token_at(store: VerdictKeyStore, t: int) -> str:
    verdict = issue_verdict(
        Status.NO_ABNORMALITY,
        now=t,
        issuer=ISSUER,
        riskset_version=1,
        bundle_expires_at=t + 2 * DAY,
    )
    return store.token_signer(now=t).sign(verdict)


def kid_of(token: str) -> str:
    kid = decode_token(token)[0].kid
    assert kid is not None
    return kid.hex()


def published(store: VerdictKeyStore, t: int) -> dict[str, dict[str, Any]]:
    """The JWKS ``store`` publishes at ``t``, by kid, as JSON (what a verifier fetches)."""
    jwks = json.loads(store.key_set(now=t).to_json())
    return {k["kid"]: k for k in jwks["keys"]}


def fetched(store: VerdictKeyStore, t: int) -> VerdictKeySet:
    """A verifier's copy of the key set fetched at ``t``: parsed back from its JSON."""
    return VerdictKeySet(KeySet.from_jwks(store.key_set(now=t).to_json()))


def verify(token: str, keys: VerdictKeySet, t: int) -> None:
    verify_token(token, keys, now=t, identity=NO_BINDING_CHECK)


# --- first start, old state dirs -------------------------------------------------------------


def test_first_start_makes_a_signing_key_and_a_pending_key_published_ahead(tmp_path):
    store = store_at(tmp_path)
    assert len(store.records) == 2
    signing = store.signing_key(now=NOW)
    pending = store.pending_kid
    assert pending is not None and pending != signing.kid
    assert signing.not_before == NOW_FLOOR
    assert store.record(pending).not_before == FIRST_PENDING_NB
    keys = published(store, NOW)
    assert set(keys) == {signing.kid, pending}  # published at once...
    assert keys[pending]["nbf"] == FIRST_PENDING_NB and keys[pending]["nbf"] > NOW
    assert "exp" not in keys[pending] and "revoked" not in keys[pending]
    # ...and signs nothing, even long after its not_before, until a rotation schedules it.
    for t in (NOW, FIRST_PENDING_NB, NOW + 30 * DAY):
        assert kid_of(token_at(store, t)) == signing.kid


def test_a_restart_loads_the_same_keys(tmp_path):
    first = store_at(tmp_path)
    again = another_process(tmp_path)
    again.load_or_create(now=NOW + DAY)
    assert again.records == first.records and again.pending_kid == first.pending_kid


def _first_layout(tmp_path: pathlib.Path, *records: dict[str, Any], active: str) -> bytes:
    state = tmp_path / "state"
    (state / KEYS_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
    state.chmod(0o700)
    index = json.dumps({"active": active, "keys": list(records)}).encode()
    (state / INDEX_FILE).write_bytes(index)
    return index


def _key_file(tmp_path: pathlib.Path) -> str:
    signer = Ed25519Signer.generate()
    path = tmp_path / "state" / KEYS_DIR / f"{signer.kid.hex()}.pem"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(signer.to_pem())
    path.chmod(0o600)
    return signer.kid.hex()


def test_an_old_state_dir_keeps_working_and_is_not_rewritten_on_load(tmp_path):
    kid = _key_file(tmp_path)
    index = _first_layout(tmp_path, {"kid": kid, "not_before": 1_700_000_100}, active=kid)
    store = another_process(tmp_path)
    store.load_or_create(now=NOW)
    assert (tmp_path / "state" / INDEX_FILE).read_bytes() == index
    assert store.pending_kid is None
    assert kid_of(token_at(store, NOW)) == kid
    assert set(published(store, NOW)) == {kid}
    # Its first rotation makes the next key then and schedules it the same way.
    r = store.rotate(now=ROT)
    assert r.kid not in (kid, r.pending_kid) and r.replaces == kid
    assert r.signs_from == ROT_SWITCH
    assert store.record(kid).not_after == ROT_SWITCH + 60
    assert set(published(store, ROT)) == {kid, r.kid, r.pending_kid}
    assert json.loads((tmp_path / "state" / INDEX_FILE).read_text())["pending"] == r.pending_kid


def test_an_old_state_dir_with_a_next_key_added_by_hand_keeps_signing_with_active(tmp_path):
    """The documented fleet procedure used to add the next key with active left on the old
    one: that key must not start signing on its own after an upgrade."""
    old, added = _key_file(tmp_path), _key_file(tmp_path)
    _first_layout(
        tmp_path,
        {"kid": old, "not_before": 1_700_000_100, "not_after": None},
        {"kid": added, "not_before": NOW_FLOOR, "not_after": None},
        active=old,
    )
    store = another_process(tmp_path)
    store.load_or_create(now=NOW)
    assert kid_of(token_at(store, NOW + HOUR)) == old
    assert store.pending_kid == added
    assert store.rotate(now=ROT).kid == added


# --- scheduled rotation ------------------------------------------------------------------------

SCHEDULES = [
    # (name, publish-ahead at first start, rotation time, publish-ahead, expected switch)
    ("default_24h_rounded_up", DAY, ROT, DAY, ROT_SWITCH),
    ("an_aligned_time_stays", DAY, 1_795_002_000, DAY, 1_795_088_400),
    ("an_hour_rounded_up", HOUR, ROT, HOUR, 1_795_004_700),
    ("zero_is_the_next_boundary", 0, ROT, 0, 1_795_001_100),
    # The pending key was published with nbf 1_795_086_600: a verifier holding that copy
    # refuses the key's verdicts before then, so a shorter period cannot bring it forward.
    ("never_before_the_published_not_before", DAY, ROT, HOUR, FIRST_PENDING_NB),
]


@pytest.mark.parametrize(
    ("first_ahead", "at", "ahead", "switch"),
    [row[1:] for row in SCHEDULES],
    ids=[row[0] for row in SCHEDULES],
)
def test_rotate_schedules_the_pending_key(tmp_path, first_ahead, at, ahead, switch):
    store = store_at(tmp_path, publish_ahead_s=first_ahead)
    old, pending = store.signing_key(now=NOW).kid, store.pending_kid
    r = store.rotate(now=at, publish_ahead_s=ahead)
    assert switch % 300 == 0  # the table itself: a switch is on a bucket boundary
    assert (r.kid, r.signs_from, r.replaces, r.revoked) == (pending, switch, old, ())
    assert store.record(r.kid).not_before == switch
    assert store.record(old).not_after == switch + 60
    assert r.pending_kid not in (old, pending) and store.pending_kid == r.pending_kid
    assert store.record(r.pending_kid).not_before >= switch  # published, not yet scheduled
    assert kid_of(token_at(store, switch - 1)) == old
    assert kid_of(token_at(store, switch)) == r.kid
    assert set(published(store, at)) == {old, r.kid, r.pending_kid}


def test_a_verifier_holding_the_key_set_from_before_the_rotation_accepts_every_later_verdict(
    tmp_path,
):
    store = store_at(tmp_path)
    old = store.signing_key(now=NOW).kid
    before = fetched(store, NOW)  # a hotel fetched it once, at first start
    r = store.rotate(now=ROT)
    times = [ROT, ROT_SWITCH - 1, ROT_SWITCH, ROT_SWITCH + 60, ROT_SWITCH + 20 * HOUR]
    kids = []
    for t in times:
        token = token_at(store, t)
        verify(token, before, t)  # raises UnknownKeyError on a key it never saw
        kids.append(kid_of(token))
    assert kids == [old, old, r.kid, r.kid, r.kid]


def test_a_second_rotation_within_the_publish_ahead_period(tmp_path):
    store = store_at(tmp_path)
    old = store.signing_key(now=NOW).kid
    first = store.rotate(now=ROT)
    second = store.rotate(now=ROT + HOUR)  # 1_795_004_600 + 24 h, rounded up
    assert second.kid == first.pending_kid and second.replaces == first.kid
    assert second.signs_from == 1_795_091_100
    assert store.record(old).not_after == ROT_SWITCH + 60  # unchanged
    assert store.record(first.kid).not_after == 1_795_091_100 + 60
    signers = [kid_of(token_at(store, t)) for t in (ROT_SWITCH - 1, ROT_SWITCH, 1_795_091_100)]
    assert signers == [old, first.kid, second.kid]


def test_signing_key_says_until_when_its_answer_holds(tmp_path):
    store = store_at(tmp_path)
    assert store.signing_key(now=NOW).valid_until is None  # nothing scheduled
    r = store.rotate(now=ROT)
    before = store.signing_key(now=ROT)
    assert (before.valid_from, before.valid_until) == (NOW_FLOOR, ROT_SWITCH)
    after = store.signing_key(now=ROT_SWITCH)
    assert (after.kid, after.valid_from, after.valid_until) == (r.kid, ROT_SWITCH, None)


def test_a_replaced_key_drops_out_once_its_verdicts_have_expired(tmp_path):
    store = store_at(tmp_path)
    old = store.signing_key(now=NOW).kid
    store.rotate(now=ROT)
    last = ROT_SWITCH + 60 + DAY + 120  # window end + the longest verdict + the skew
    assert old in published(store, last)
    assert old not in published(store, last + 1)


def test_another_process_rotating_is_picked_up(tmp_path):
    server = store_at(tmp_path)
    assert server.reload_if_changed() is False
    r = another_process(tmp_path).rotate(now=ROT)
    assert server.reload_if_changed() is True
    assert server.pending_kid == r.pending_kid
    assert server.signing_key(now=ROT_SWITCH).kid == r.kid


# --- emergency rotation ------------------------------------------------------------------------


def test_an_emergency_key_serves_a_pod_whose_clock_lags_across_a_bucket(tmp_path):
    """Rotated 30 s into a bucket; a pod whose clock is 40 s behind is still in the bucket
    before. Its verdicts (iat in that earlier bucket) must verify under the new key: the
    emergency key's window starts at the bucket of ``now - 60 s``."""
    store = store_at(tmp_path)
    boundary = 1_795_000_800 + 1200  # a bucket start after NOW
    r = store.rotate(now=boundary + 30, emergency=True)
    lagging = boundary + 30 - 40
    token = token_at(store, lagging)
    assert kid_of(token) == r.kid
    verify(token, fetched(store, boundary + 30), lagging)


def test_emergency_rotation_revokes_every_key_and_signs_at_once(tmp_path):
    store = store_at(tmp_path)
    old, pending = store.signing_key(now=NOW).kid, store.pending_kid
    old_token = token_at(store, ROT)
    before = fetched(store, NOW)
    r = store.rotate(now=ROT, emergency=True)
    assert set(r.revoked) == {old, pending} and r.replaces is None
    assert r.signs_from == 1_795_000_800  # ROT - 60 s, rounded down
    assert r.kid not in (old, pending) and r.pending_kid not in (old, pending, r.kid)
    assert store.record(r.pending_kid).not_before == ROT_SWITCH
    new_token = token_at(store, ROT)
    assert kid_of(new_token) == r.kid
    keys = published(store, ROT)
    assert keys[old]["revoked"] is True and keys[pending]["revoked"] is True
    assert "revoked" not in keys[r.kid] and "revoked" not in keys[r.pending_kid]
    after = fetched(store, ROT)
    with pytest.raises(RevokedKeyError):
        verify(old_token, after, ROT)
    verify(new_token, after, ROT)
    # A verifier that did not fetch again still trusts the old key and not the new one.
    verify(old_token, before, ROT)
    with pytest.raises(UnknownKeyError) as e:
        verify(new_token, before, ROT)
    assert not isinstance(e.value, RevokedKeyError)


def test_emergency_in_the_publish_ahead_period_revokes_the_scheduled_key_too(tmp_path):
    store = store_at(tmp_path)
    old = store.signing_key(now=NOW).kid
    scheduled = store.rotate(now=ROT)
    r = store.rotate(now=ROT + HOUR, emergency=True)
    assert set(r.revoked) == {old, scheduled.kid, scheduled.pending_kid}
    # The schedule is gone: the new key signs before and after the old switch time.
    for t in (ROT + HOUR, ROT_SWITCH, ROT_SWITCH + DAY):
        assert kid_of(token_at(store, t)) == r.kid


def test_revoked_keys_stay_published_until_their_verdicts_would_have_expired(tmp_path):
    store = store_at(tmp_path)
    old = store.signing_key(now=NOW).kid
    store.rotate(now=ROT, emergency=True)
    assert store.record(old).not_after == ROT  # its window ends at the revocation
    last = ROT + DAY + 120
    assert published(store, last)[old]["revoked"] is True
    assert old not in published(store, last + 1)


def test_an_emergency_leaves_keys_no_longer_published_as_they_were(tmp_path):
    store = store_at(tmp_path, publish_ahead_s=0)
    old = store.signing_key(now=NOW).kid
    store.rotate(now=ROT, publish_ahead_s=0)  # old's window ends at 1_795_001_100 + 60
    gone = 1_795_001_160 + DAY + 120 + 1
    r = store.rotate(now=gone, emergency=True)
    assert old not in r.revoked and store.record(old).revoked is False


def test_a_state_dir_of_only_revoked_keys_is_refused(tmp_path):
    store = store_at(tmp_path)
    kid = store.signing_key(now=NOW).kid
    path = tmp_path / "state" / INDEX_FILE
    index = json.loads(path.read_text())
    for record in index["keys"]:
        record["revoked"] = True
    index["pending"] = None
    path.write_text(json.dumps(index))
    with pytest.raises(ConfigurationError, match="no key may sign"):
        another_process(tmp_path).load_or_create(now=NOW)
    with pytest.raises(ConfigurationError, match="no key may sign"):
        store.reload_if_changed()
    assert store.signing_key(now=NOW).kid == kid  # a running store keeps what it had


# --- index refusals ---------------------------------------------------------------------------


def _edit(index: dict[str, Any], what: str) -> None:
    keys = index["keys"]
    if what == "pending_not_recorded":
        index["pending"] = "00" * 8
    elif what == "pending_revoked":
        next(k for k in keys if k["kid"] == index["pending"])["revoked"] = True
    elif what == "duplicate_kid":
        keys.append(dict(keys[0]))
    elif what == "unknown_format":
        index["format"] = 3
    elif what == "not_before_a_boolean":
        keys[0]["not_before"] = True
    elif what == "revoked_a_string":
        keys[0]["revoked"] = "yes"
    elif what == "unknown_member":
        keys[0]["active"] = True


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("pending_not_recorded", "pending key is not a recorded live key"),
        ("pending_revoked", "pending key is not a recorded live key"),
        ("duplicate_kid", "a key is recorded twice"),
        ("unknown_format", "not a verdict key index"),
        ("not_before_a_boolean", "not a verdict key index"),
        ("revoked_a_string", "not a verdict key index"),
        ("unknown_member", "not a verdict key index"),
    ],
)
def test_a_damaged_index_is_refused(tmp_path, what, message):
    store_at(tmp_path)
    path = tmp_path / "state" / INDEX_FILE
    index = json.loads(path.read_text())
    _edit(index, what)
    path.write_text(json.dumps(index))
    with pytest.raises(ConfigurationError, match=message):
        another_process(tmp_path).load_or_create(now=NOW)


# --- the published key set: revoked, published_at, refresh_interval_s ------------------------


def test_the_key_set_says_when_it_was_published_and_how_often_to_fetch_it(tmp_path):
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER, refresh_interval_s=6 * HOUR)
    store.load_or_create(now=NOW)
    jwks = json.loads(store.key_set(now=NOW + 7).to_json())
    assert jwks["published_at"] == NOW + 7
    assert jwks["refresh_interval_s"] == 21600


def test_jwks_round_trip_of_revoked_published_at_and_refresh_interval():
    pk = Ed25519Signer.generate().public_key
    revoked = PublicKey(pk.kid, pk.alg, pk.key, pk.raw, 5, 9, revoked=True)
    live = PublicKey.from_ed25519(Ed25519Signer.generate().public_key.key)
    keys = KeySet([revoked, live], issuer=ISSUER, refresh_interval_s=3600, published_at=NOW)
    jwks = keys.to_jwks()
    assert (jwks["published_at"], jwks["refresh_interval_s"]) == (NOW, 3600)
    by_kid = {k["kid"]: k for k in jwks["keys"]}
    assert by_kid[revoked.kid.hex()]["revoked"] is True
    assert "revoked" not in by_kid[live.kid.hex()]
    back = KeySet.from_jwks(json.dumps(jwks))
    assert (back.published_at, back.refresh_interval_s) == (NOW, 3600)
    assert back.get(revoked.kid).revoked is True and back.get(live.kid).revoked is False
    assert back.to_jwks() == jwks


def test_a_key_set_without_the_new_members_still_parses():
    live = PublicKey.from_ed25519(Ed25519Signer.generate().public_key.key)
    back = KeySet.from_jwks(json.dumps({"keys": [live.to_jwk()]}))
    assert (back.published_at, back.refresh_interval_s) == (None, None)
    assert back.get(live.kid).revoked is False
    jwk = {**live.to_jwk(), "revoked": False}
    assert KeySet.from_jwks({"keys": [jwk]}).get(live.kid).revoked is False


def test_a_revoked_key_is_refused_before_anything_else():
    signer = Ed25519Signer.generate()
    pk = signer.public_key
    keys = KeySet([PublicKey(pk.kid, pk.alg, pk.key, pk.raw, NOW, NOW + 1, revoked=True)])
    data = b"signed bytes"
    good = signer.sign(data)
    # A valid signature inside the window: refused. Outside the window, with a bad
    # signature or another alg: still "revoked", the first check.
    for at, signature, alg in [(NOW, good, None), (NOW - 1, good, None), (NOW, b"x" * 64, -7)]:
        with pytest.raises(RevokedKeyError):
            keys.verify(key_id=pk.kid, signature=signature, data=data, at=at, alg=alg)


@pytest.mark.parametrize(
    ("top", "key_member", "message"),
    [
        ({"refresh_interval_s": -1}, {}, "jwks: refresh_interval_s must be a non-negative"),
        ({"refresh_interval_s": "3600"}, {}, "jwks: refresh_interval_s must be a non-negative"),
        ({"refresh_interval_s": 3600.0}, {}, "jwks: refresh_interval_s must be a non-negative"),
        ({"refresh_interval_s": True}, {}, "jwks: refresh_interval_s must be a non-negative"),
        ({"refresh_interval_s": None}, {}, "jwks: refresh_interval_s must be a non-negative"),
        ({"published_at": -5}, {}, "jwks: published_at must be a non-negative"),
        ({"published_at": "2026-11-18"}, {}, "jwks: published_at must be a non-negative"),
        ({"published_at": None}, {}, "jwks: published_at must be a non-negative"),
        ({}, {"revoked": "true"}, "jwks: keys[0]: jwk: revoked must be true or false"),
        ({}, {"revoked": 1}, "jwks: keys[0]: jwk: revoked must be true or false"),
        ({}, {"revoked": None}, "jwks: keys[0]: jwk: revoked must be true or false"),
    ],
)
def test_malformed_key_set_members_are_refused(top, key_member, message):
    jwk = {**PublicKey.from_ed25519(Ed25519Signer.generate().public_key.key).to_jwk(), **key_member}
    with pytest.raises(ConfigurationError) as e:
        KeySet.from_jwks(json.dumps({"keys": [jwk], **top}))
    assert message in str(e.value)


# --- configuration ------------------------------------------------------------------------------

BASE = {
    "listen": "127.0.0.1:0",
    "repository": "https://risk-areas.example/",
    "trusted_root": "/etc/staycheck/root.json",
    "state_dir": "/var/lib/staycheck",
    "issuer": ISSUER,
}


def test_key_refresh_and_publish_ahead_defaults_and_sources():
    config = build_config(file=BASE)
    assert (config.key_refresh_interval_s, config.key_publish_ahead_s) == (6 * HOUR, DAY)
    shown = effective(config)  # what `staycheck config check` prints
    assert (shown["key_refresh_interval_s"], shown["key_publish_ahead_s"]) == (21600, 86400)
    config = build_config(
        file={**BASE, "key_publish_ahead_s": 2 * DAY},
        env={"STAYCHECK_KEY_REFRESH_INTERVAL_S": "3600"},
        flags={"key_publish_ahead_s": 3 * DAY},
    )
    assert (config.key_refresh_interval_s, config.key_publish_ahead_s) == (HOUR, 3 * DAY)


@pytest.mark.parametrize(("refresh", "ahead"), [(DAY, DAY), (2 * DAY, DAY), (6 * HOUR, 6 * HOUR)])
def test_a_refresh_interval_not_shorter_than_the_publish_ahead_period_is_refused(refresh, ahead):
    file = {**BASE, "key_refresh_interval_s": refresh, "key_publish_ahead_s": ahead}
    with pytest.raises(ConfigurationError) as e:
        build_config(file=file)
    assert "key_refresh_interval_s" in str(e.value) and "key_publish_ahead_s" in str(e.value)


@pytest.mark.parametrize("member", ["key_refresh_interval_s", "key_publish_ahead_s"])
def test_key_timing_settings_must_be_above_zero(member):
    with pytest.raises(ConfigurationError, match=member):
        build_config(file={**BASE, member: 0})


@pytest.mark.parametrize("emergency", [False, True])
def test_rotate_refuses_a_state_dir_without_a_key_store(tmp_path, emergency):
    """A mistyped --state-dir: an emergency rotation must not report revoking the keys of a
    store it made on the spot while the compromised key stays live elsewhere."""
    typo = tmp_path / "stat"
    store = VerdictKeyStore(typo, issuer="110000")
    with pytest.raises(ConfigurationError, match="no verdict key store"):
        store.rotate(now=NOW, emergency=emergency)
    assert not typo.exists()

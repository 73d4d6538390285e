"""Verdict keys on a token: the key store's records and publish-ahead rotation (issue 12).

The rules are those of file keys (SPEC.md "Verdict", tests/unit/test_keystore.py): a new
key is published a publish-ahead period before it signs; the switch is ``now +
publish_ahead`` rounded up to the 300 s ``iat`` bucket; the replaced key's window ends 60 s
after it; an emergency revokes every key still published and switches at once. What
differs on a token: the store makes no key by itself (``keys rotate --next-key URI``, or
``--create`` to make it on the token), and the state dir holds no private key.

NOW = 1_795_000_000 is 100 s past a bucket boundary: NOW rounded down is 1_794_999_900,
NOW + 24 h rounded up is 1_795_086_600 (worked out by hand).
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import subprocess
import time

import pytest
from staycheck.geo.errors import ConfigurationError, RevokedKeyError, UnavailableError
from staycheck.geo.itinerary import Status
from staycheck.server.keystore import INDEX_FILE, NextKey, VerdictKeyStore
from staycheck.server.pkcs11 import Pkcs11Signer
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.verdict import decode_token, issue_verdict
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token

from tests.harness import STAYCHECK
from tests.helpers import (
    BJ_LAT,
    BJ_LON,
    DAY,
    HOUR,
    Clock,
    itinerary,
    running_server,
    spec_areas,
    stay,
)
from tests.hsm.softhsm import SoftHsm

ISSUER = "110000"
NOW = 1_795_000_000
NOW_FLOOR = 1_794_999_900
SWITCH = 1_795_086_600


def label(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def token_key(hsm: SoftHsm, **uri: str) -> NextKey:
    return NextKey(Pkcs11Signer(hsm.keygen(label("verdict"), **uri)))


def sign_at(store: VerdictKeyStore, t: int) -> str:
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


def test_first_start_records_the_token_key_alone_and_no_private_key(hsm, tmp_path):
    name = label("verdict")
    hsm.keygen(name)
    uri = hsm.uri(name, pin="value")
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER, verdict_key=uri)
    store.load_or_create(now=NOW)
    (record,) = store.records
    assert record.not_before == NOW_FLOOR and store.pending_kid is None
    index = json.loads((tmp_path / "state" / INDEX_FILE).read_text())
    assert index["format"] == 3
    (written,) = index["keys"]
    assert set(written) == {"kid", "not_before", "not_after", "revoked", "uri", "public_key", "alg"}
    assert "pin-value" not in written["uri"] and hsm.pin not in json.dumps(index)
    assert list((tmp_path / "state" / "verdict-keys").iterdir()) == []
    token = sign_at(store, NOW)
    keys = store.key_set(now=NOW)
    verify_token(token, keys, now=NOW, identity=NO_BINDING_CHECK)
    assert [k.kid.hex() for k in keys] == [record.kid] == [kid_of(token)]


def test_a_restart_loads_the_token_key_from_the_index_alone(hsm, tmp_path):
    key = token_key(hsm)
    first = VerdictKeyStore(tmp_path / "state", issuer=ISSUER, verdict_key=str(key.signer.uri))
    first.load_or_create(now=NOW)
    again = VerdictKeyStore(tmp_path / "state", issuer=ISSUER)  # the URI's pin-source serves
    again.load_or_create(now=NOW + 10)
    assert kid_of(sign_at(again, NOW + 10)) == key.kid


def test_a_verdict_key_the_index_does_not_record_is_refused(hsm, tmp_path):
    VerdictKeyStore(tmp_path / "state", issuer=ISSUER).load_or_create(now=NOW)  # file keys
    other = hsm.keygen(label("unrecorded"))
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER, verdict_key=other)
    with pytest.raises(ConfigurationError, match=r"does not record .*keys rotate --next-key"):
        store.load_or_create(now=NOW)


def test_rotation_to_a_token_key_publishes_it_ahead_and_retires_the_pending_file_key(hsm, tmp_path):
    """The way from key files to a token: the file key signs until the switch."""
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER)
    store.load_or_create(now=NOW)
    file_kid, pending = store.signing_key(now=NOW).kid, store.pending_kid
    nxt = token_key(hsm)
    r = store.rotate(now=NOW, next_key=nxt)
    assert (r.kid, r.signs_from, r.replaces, r.pending_kid) == (nxt.kid, SWITCH, file_kid, None)
    assert store.record(file_kid).not_after == SWITCH + 60
    assert store.record(pending).not_after == NOW and store.pending_kid is None  # never signed
    published = store.key_set(now=NOW)
    assert {k.kid.hex() for k in published} == {file_kid, pending, nxt.kid}
    for t, kid in [(SWITCH - 1, file_kid), (SWITCH, nxt.kid), (SWITCH + DAY, nxt.kid)]:
        token = sign_at(store, t)
        assert kid_of(token) == kid
        verify_token(token, published, now=t, identity=NO_BINDING_CHECK)


def test_a_token_key_is_rotated_only_to_a_named_next_key(hsm, tmp_path):
    key = token_key(hsm)
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER, verdict_key=str(key.signer.uri))
    store.load_or_create(now=NOW)
    with pytest.raises(ConfigurationError, match="on a PKCS#11 token: name the next key"):
        store.rotate(now=NOW)
    with pytest.raises(ConfigurationError, match="on a PKCS#11 token"):
        store.rotate(now=NOW, emergency=True)
    with pytest.raises(ConfigurationError, match="recorded already"):
        store.rotate(now=NOW, next_key=key)
    assert not list((tmp_path / "state" / "verdict-keys").iterdir())  # no file key appeared


def test_an_emergency_to_a_token_key_revokes_every_published_key_and_switches_at_once(
    hsm, tmp_path
):
    key = token_key(hsm)
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER, verdict_key=str(key.signer.uri))
    store.load_or_create(now=NOW)
    old_token = sign_at(store, NOW)
    fresh = token_key(hsm)
    r = store.rotate(now=NOW + 1000, emergency=True, next_key=fresh)
    # NOW + 1000 rounded down: 1_794_999_900 + 900.
    assert r.revoked == (key.kid,) and r.signs_from == NOW_FLOOR + 900 and r.replaces is None
    after = store.key_set(now=NOW + 1000)
    assert kid_of(sign_at(store, NOW + 1000)) == fresh.kid
    with pytest.raises(RevokedKeyError):
        verify_token(old_token, after, now=NOW + 1000, identity=NO_BINDING_CHECK)


def test_a_token_holding_another_key_under_the_recorded_uri_does_not_sign(hsm, tmp_path):
    """The index holds the public key: a token swapped (or a key replaced under the same
    label) is refused rather than publishing a key set that does not match."""
    name = label("replaced")
    uri = hsm.keygen(name)
    VerdictKeyStore(tmp_path / "state", issuer=ISSUER, verdict_key=uri).load_or_create(now=NOW)
    hsm.tool("--delete-object", "--type", "privkey", "--label", name)
    hsm.tool("--delete-object", "--type", "pubkey", "--label", name)
    hsm.keygen(name)
    store = VerdictKeyStore(tmp_path / "state", issuer=ISSUER)
    store.load_or_create(now=NOW)
    with pytest.raises(UnavailableError, match="is not the recorded key"):
        sign_at(store, NOW)


def test_the_cli_rotates_a_running_server_to_a_key_it_makes_on_the_token(hsm, tmp_path):
    t0 = int(time.time())
    clock = Clock(t0)
    first = hsm.keygen(label("verdict"))
    with running_server(
        tmp_path / "srv",
        spec_areas(now=t0),
        clock=clock,
        reload_interval_s=59.0,
        key_publish_ahead_s=2 * HOUR,
        key_refresh_interval_s=HOUR,
        verdict_key=first,
    ) as s:
        clean = itinerary(stay("110100", t0 - 2 * DAY, t0 - DAY, (BJ_LAT, BJ_LON)))
        old = kid_of(s.client.submit(clean).token)
        refused = subprocess.run(
            [*STAYCHECK, "keys", "rotate", "--state-dir", str(s.state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert refused.returncode == 2 and "--next-key URI" in refused.stderr
        name = label("next")
        r = subprocess.run(
            [
                *STAYCHECK,
                "keys",
                "rotate",
                "--state-dir",
                str(s.state_dir),
                "--next-key",
                hsm.uri(name),
                "--create",
                "--publish-ahead",
                "2h",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert r.returncode == 0, r.stderr
        assert "(sensitive, not extractable)" in r.stdout and "--next-key URI" in r.stdout
        assert s.server.reload_keys()
        published = VerdictKeySet(KeySet.from_jwks(s.client.verdict_keys_json()))
        (new,) = {k.kid.hex() for k in published} - {old}
        assert new in r.stdout
        switch = s.server.keys.record(new).not_before
        assert switch % 300 == 0 and t0 + 2 * HOUR <= switch <= int(time.time()) + 2 * HOUR + 300
        listing = hsm.tool("--list-objects", "--type", "privkey").stdout
        assert f"label:      {name}" in listing
        for t, kid in [(switch - 1, old), (switch, new), (switch + HOUR, new)]:
            clock.now = t
            it = itinerary(stay("110100", t - 2 * DAY, t - DAY, (BJ_LAT, BJ_LON)))
            token = s.client.submit(it).token
            assert kid_of(token) == kid
            verify_token(token, published, now=t, identity=NO_BINDING_CHECK)
        assert not [p for p in pathlib.Path(s.state_dir).rglob("*.pem")]

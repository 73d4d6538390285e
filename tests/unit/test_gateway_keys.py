"""The gateway's keys in the state dir (server/gateway_keys.py): first key, rotation, the
grace of a retired key, and what a running server reloads. Times are worked out by hand
from the rules in the module docstring: a retired key opens requests until
``retired_at + grace_s``, then it is gone."""

from __future__ import annotations

import pytest
from staycheck.client.bhttp import Request
from staycheck.client.ohttp import ObliviousError, Reason, encapsulate_request
from staycheck.geo.errors import ConfigurationError
from staycheck.server.config import ServerConfig
from staycheck.server.gateway_keys import DEFAULT_GRACE_S, GatewayKeyStore

T0 = 1_795_000_000
DAY = 86400


def _opens(keys, config) -> bool:
    sealed, _ = encapsulate_request(config, Request("POST", "https", "", "/").encode())
    try:
        keys.decapsulate_request(sealed)
    except ObliviousError as e:
        assert e.reason is Reason.UNKNOWN_KEY
        return False
    return True


def test_the_first_key_is_made_once_and_private(tmp_path):
    store = GatewayKeyStore(tmp_path)
    keys = store.load_or_create(now=T0)
    (config,) = keys.configs
    assert config.key_id == 1
    assert (tmp_path / "ohttp").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "ohttp" / "1.key").stat().st_mode & 0o777 == 0o600
    again = GatewayKeyStore(tmp_path).load_or_create(now=T0 + 10)
    assert again.configs == keys.configs  # loaded, not made anew


def test_a_rotation_publishes_a_new_key_and_the_old_opens_until_its_grace_ends(tmp_path):
    store = GatewayKeyStore(tmp_path)
    (old,) = store.load_or_create(now=T0).configs
    assert store.rotate(now=T0 + DAY, grace_s=2 * DAY) == 2
    assert store.reload_if_changed(now=T0 + DAY)
    (new,) = store.keys.configs  # only the new key is listed
    assert new.key_id == 2 and new.public_key != old.public_key
    assert _opens(store.keys, old) and _opens(store.keys, new)
    # One second before T0 + 1 d + 2 d the old key still opens; at that time it does not.
    assert not store.reload_if_changed(now=T0 + 3 * DAY - 1)
    assert _opens(store.keys, old)
    assert store.reload_if_changed(now=T0 + 3 * DAY)
    assert not _opens(store.keys, old) and _opens(store.keys, new)


def test_keys_past_their_grace_are_deleted_at_the_next_rotation(tmp_path):
    store = GatewayKeyStore(tmp_path)
    store.load_or_create(now=T0)
    store.rotate(now=T0 + DAY, grace_s=DAY)  # key 1 retired at T0 + 1 d, gone at T0 + 2 d
    store.rotate(now=T0 + 5 * DAY, grace_s=DAY)  # key 2 retired; key 1 long past its grace
    assert sorted(p.name for p in (tmp_path / "ohttp").glob("*.key")) == ["2.key", "3.key"]
    # Ids go on from the last one: a client holding key 1's configuration gets "unknown
    # key" (and fetches the keys again), never another key under that id.
    assert store.rotate(now=T0 + 7 * DAY, grace_s=DAY) == 4


def test_key_ids_go_round_after_255_skipping_those_in_use(tmp_path):
    store = GatewayKeyStore(tmp_path)
    store.load_or_create(now=T0)
    for i in range(2, 256):
        assert store.rotate(now=T0 + i, grace_s=DAY) == i
    # 255 was the last; 1 to 254 are retired within their grace, 255 is published: full.
    with pytest.raises(ConfigurationError, match="all 255 key ids"):
        store.rotate(now=T0 + 300, grace_s=DAY)
    # A day later all but 255 are past their grace: the next id after 255 is 1.
    assert store.rotate(now=T0 + 300 + DAY, grace_s=DAY) == 1


def test_a_rotation_needs_a_key_store(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        GatewayKeyStore(tmp_path).rotate(now=T0)


def test_the_default_grace_outlasts_a_day_of_cached_configuration():
    assert DEFAULT_GRACE_S > DAY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ohttp_listen": "127.0.0.1"}, "ohttp_listen: must be HOST:PORT"),
        ({"ohttp_listen": "127.0.0.1:0", "workers": 2}, "ohttp_listen: give a fixed port"),
    ],
)
def test_the_gateway_listener_setting_is_checked(tmp_path, options, message):
    config = ServerConfig(
        listen="127.0.0.1:0",
        repository=str(tmp_path),
        trusted_root_path=tmp_path / "root.json",
        state_dir=tmp_path / "state",
        issuer="110000",
        **options,
    )
    with pytest.raises(ConfigurationError, match=message):
        config.check()

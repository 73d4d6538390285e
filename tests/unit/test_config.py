"""Server configuration: one TOML file, STAYCHECK_* environment overrides, flags; flags win,
then the environment, then the file, then the documented defaults (issue 6)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from staycheck.geo.errors import ConfigurationError
from staycheck.server.config import KEYS, ServerConfig, build_config, effective

BASE = {
    "listen": "127.0.0.1:0",
    "repository": "https://risk-areas.example/",
    "trusted_root": "/etc/staycheck/root.json",
    "state_dir": "/var/lib/staycheck",
    "issuer": "110000",
}


def without(key: str) -> dict[str, str]:
    return {k: v for k, v in BASE.items() if k != key}


def test_defaults_come_from_the_dataclass():
    config = build_config(file=BASE)
    assert config.workers == 1 and config.max_message_bytes == 256 * 1024
    assert config.metrics_listen is None and config.access_log is False
    assert config.repository == "https://risk-areas.example/"
    assert config.trusted_root_path == pathlib.Path("/etc/staycheck/root.json")
    assert config.repository_refresh_s == 60.0 and config.repository_timeout_s == 30.0
    assert config.limits.max_stays == 1000


def test_precedence_flags_over_environment_over_file():
    file = {**BASE, "log_level": "warning", "max_stays": 500, "grace_s": 3}
    env = {"STAYCHECK_LOG_LEVEL": "error", "STAYCHECK_MAX_STAYS": "400", "HOME": "/root"}
    flags = {"log_level": "debug", "access_log": None}
    config = build_config(file=file, env=env, flags=flags)
    assert config.log_level == "debug"  # flag
    assert config.limits.max_stays == 400  # environment over file
    assert config.grace_s == 3.0  # file
    assert config.access_log is False  # a flag not given changes nothing


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("on", True), ("0", False), ("no", False)]
)
def test_environment_booleans(value, expected):
    config = build_config(file=BASE, env={"STAYCHECK_ACCESS_LOG": value})
    assert config.access_log is expected


@pytest.mark.parametrize(
    ("file", "env", "message"),
    [
        ({**BASE, "lisen": "x"}, {}, "unknown key 'lisen'"),
        (BASE, {"STAYCHECK_LISEN": "x"}, "unknown variable STAYCHECK_LISEN"),
        ({**BASE, "workers": "two"}, {}, "workers: must be int"),
        ({**BASE, "workers": True}, {}, "workers: must be int"),
        (BASE, {"STAYCHECK_GRACE_S": "soon"}, "grace_s: must be float"),
        (without("issuer"), {}, "missing required setting(s): issuer"),
        (without("repository"), {}, "missing required setting(s): repository"),
        (without("trusted_root"), {}, "missing required setting(s): trusted_root"),
        # The settings of the retired bundle file are unknown now, not silently ignored.
        ({**BASE, "bundle": "/srv/bundle.cose"}, {}, "unknown key 'bundle'"),
        ({**BASE, "authority_key": "/etc/a.pub"}, {}, "unknown key 'authority_key'"),
        (BASE, {"STAYCHECK_BUNDLE": "/srv/b.cose"}, "unknown variable STAYCHECK_BUNDLE"),
        (BASE, {"STAYCHECK_AUTHORITY_KEY": "/a.pub"}, "unknown variable STAYCHECK_AUTHORITY_KEY"),
        ({**BASE, "max_bundle_bytes": 1024}, {}, "unknown key 'max_bundle_bytes'"),
        ({**BASE, "bundle_read_timeout_s": 5}, {}, "unknown key 'bundle_read_timeout_s'"),
        ({**BASE, "repository": ""}, {}, "repository: must be str"),
        ({**BASE, "repository_timeout_s": 0}, {}, "repository_timeout_s: must be above 0"),
        ({**BASE, "issuer": "110100"}, {}, "issuer: must be a six-digit province code"),
        ({**BASE, "listen": "0.0.0.0:50051"}, {}, "refusing plaintext on a non-loopback"),
        ({**BASE, "log_level": "loud"}, {}, "log_level"),
        ({**BASE, "partner_listen": "127.0.0.1:0"}, {}, "partner_listen: needs"),
    ],
)  # fmt: skip
def test_refusals_name_the_setting(file, env, message):
    with pytest.raises(ConfigurationError) as e:
        build_config(file=file, env=env)
    assert message in str(e.value)


def test_insecure_allows_plaintext_elsewhere():
    config = build_config(file={**BASE, "listen": "0.0.0.0:50051", "insecure": True})
    assert config.insecure is True


def test_every_key_maps_to_a_config_field_and_back():
    config = build_config(file=BASE)
    out = effective(config)
    assert set(out) == set(KEYS)
    # The effective configuration is itself a valid configuration file.
    again = build_config(file={k: v for k, v in out.items() if v is not None})
    assert again == config
    fields = set(ServerConfig.__dataclass_fields__)
    assert {f for f, _ in KEYS.values() if "." not in f} <= fields


def test_config_check_cli(tmp_path):
    path = tmp_path / "staycheck.toml"
    path.write_text("\n".join(f'{k} = "{v}"' for k, v in BASE.items()) + "\nworkers = 3\n", "utf-8")
    staycheck = str(pathlib.Path(sys.executable).parent / "staycheck")
    ok = subprocess.run(
        [staycheck, "config", "check", str(path)],
        capture_output=True,
        text=True,
        env={"STAYCHECK_MAX_STAYS": "200", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"workers": 3' in ok.stdout and '"max_stays": 200' in ok.stdout
    path.write_text('listen = "127.0.0.1:0"\n', "utf-8")
    bad = subprocess.run(
        [staycheck, "config", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "missing required setting(s): repository, trusted_root, state_dir, issuer" in bad.stderr
    # A file of the retired bundle settings: refused, naming the key.
    old = {**without("repository"), "bundle": "/srv/bundle.cose"}
    path.write_text("\n".join(f'{k} = "{v}"' for k, v in old.items()) + "\n", "utf-8")
    retired = subprocess.run(
        [staycheck, "config", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert retired.returncode == 2 and "unknown key 'bundle'" in retired.stderr

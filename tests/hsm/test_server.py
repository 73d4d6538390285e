"""``staycheck serve --verdict-key pkcs11:...``: a real server process signing verdicts with a
key on a SoftHSM2 token (issue 12, "Done when").

- A key made by ``pkcs11-tool --keypairgen --key-type EC:edwards25519``, named by its URI,
  signs verdicts that ``staycheck verify`` accepts with the key set fetched from the server,
  and that key set's public key is the one ``pkcs11-tool --read-object`` reads.
- The state dir holds no private key (and no PIN).
- The token going away (its directory moved off, as a device pulled out) makes signing fail
  closed with a clear error and health NOT_SERVING; back, the same process signs again.
- A wrong PIN is a clear error, and no PIN, right or wrong, is in any output.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from staycheck.client import StayCheckClient
from staycheck.trust.keys import key_id
from staycheck.trust.verdict import decode_token

from tests.harness import STAYCHECK, serve_process, spawn, write_server_files
from tests.helpers import DAY, HOUR, TJ_LAT, TJ_LON, itinerary, spec_areas, stay
from tests.hsm.softhsm import SoftHsm, with_env

ID_NUMBER = "11010519491231002X"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def cli(*args: str, env: dict[str, str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STAYCHECK, *args], capture_output=True, text=True, timeout=60, env=with_env(env), cwd=cwd
    )


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            .status
        )


def until(fn: Callable[[], Any], want: Any, *, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def risky(now: int) -> Any:
    """6 h in Tianjin's high-risk square three days ago: REVIEW_REQUIRED (SPEC.md)."""
    return itinerary(stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))


def raw_public(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def served(tmp_path: pathlib.Path, own_hsm: SoftHsm) -> Any:
    uri = own_hsm.keygen("verdict-2026-12")  # pkcs11-tool --keypairgen EC:edwards25519
    now = int(time.time())
    with serve_process(
        tmp_path / "srv",
        areas=spec_areas(now=now),
        log_level="debug",
        extra_args=["--verdict-key", uri],
        env=own_hsm.env,
    ) as srv:
        yield srv


def test_a_pkcs11_tool_key_signs_verdicts_that_verify_with_the_fetched_key_set(
    served: Any, own_hsm: SoftHsm, tmp_path: pathlib.Path
):
    work = tmp_path / "work"
    work.mkdir()
    trip = work / "trip.json"
    now = int(time.time())
    tianjin = stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON))
    trip.write_text(json.dumps({"stays": [tianjin]}))
    keys = cli("keys", "--server", served.target, env=own_hsm.env, cwd=work)
    assert keys.returncode == 0, keys.stderr
    (work / "keys.json").write_text(keys.stdout)
    jwks = json.loads(keys.stdout)
    on_token = raw_public(own_hsm.read_public_key("verdict-2026-12"))  # pkcs11-tool
    (jwk,) = jwks["keys"]  # the token key alone: no pending key file is made
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["alg"] == "EdDSA"
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == on_token
    assert jwk["kid"] == key_id(on_token).hex()

    submitted = cli(
        "submit",
        "--server",
        served.target,
        "--itinerary",
        str(trip),
        "--subject-id",
        ID_NUMBER,
        env=own_hsm.env,
        cwd=work,
    )
    assert submitted.returncode == 0, submitted.stderr
    verdict = json.loads(submitted.stdout)
    assert decode_token(verdict["token"])[0].kid == key_id(on_token)
    checked = subprocess.run(
        [*STAYCHECK, "verify", "-", "--keys", str(work / "keys.json"), "--subject-id", ID_NUMBER],
        input=verdict["presentation"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "REVIEW_REQUIRED" in checked.stdout and "binding: checked" in checked.stdout

    # The state dir holds no private key, and no PIN: only the key's URI and public key.
    state = served.state_dir
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data and own_hsm.pin.encode() not in data, path
    assert not list(state.rglob("*.pem"))
    index = json.loads((state / "verdict-keys.json").read_text())
    (record,) = index["keys"]
    assert index["format"] == 3 and index["pending"] is None
    assert record["uri"].startswith("pkcs11:token=staycheck;object=verdict-2026-12?")
    assert "pin-value" not in record["uri"] and record["kid"] == jwk["kid"]
    for text in (served.stdout_text(), served.stderr_text()):
        assert own_hsm.pin not in text


def test_a_token_that_goes_away_fails_closed_and_serves_again_when_back(
    served: Any, own_hsm: SoftHsm
):
    now = int(time.time())
    with StayCheckClient(served.target, timeout_s=20) as client:
        kid = decode_token(client.submit(risky(now)).token)[0].kid
        assert health(served.target) == SERVING
        with own_hsm.removed():
            with pytest.raises(grpc.RpcError) as refused:
                client.submit(risky(now))
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert refused.value.details().startswith("signing key unavailable: PKCS#11")
            assert until(lambda: health(served.target), NOT_SERVING) == NOT_SERVING
            # Still answering what needs no signature: the key set comes from the index.
            assert json.loads(client.verdict_keys_json())["keys"][0]["kid"] == kid.hex()
            time.sleep(1.5)  # the watcher probes every second: still down, still closed
            assert health(served.target) == NOT_SERVING
            with pytest.raises(grpc.RpcError) as again:
                client.submit(risky(now))
            assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert until(lambda: health(served.target), SERVING) == SERVING
        assert decode_token(client.submit(risky(now)).token)[0].kid == kid
    assert served.proc.poll() is None  # the same process: no restart
    log = served.stderr_text()
    assert "down: PKCS#11" in log and "is back: signing again" in log
    assert own_hsm.pin not in log


@pytest.mark.parametrize("how", ["pin-source", "pin-value"])
def test_a_wrong_pin_is_a_clear_error_and_no_pin_is_in_any_output(
    tmp_path: pathlib.Path, own_hsm: SoftHsm, how: str
):
    own_hsm.keygen("verdict")
    wrong = f"wrong-{os.urandom(4).hex()}"
    pin_file = tmp_path / "wrong-pin"
    pin_file.write_text(wrong + "\n")
    uri = own_hsm.uri("verdict", pin="none") + (
        f"&pin-source=file:{pin_file}" if how == "pin-source" else f"&pin-value={wrong}"
    )
    files = write_server_files(tmp_path / "srv", areas=spec_areas(now=int(time.time())))
    command = [*STAYCHECK, *files.serve_args(log_level="debug"), "--verdict-key", uri]
    r = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=with_env(own_hsm.env), cwd=tmp_path
    )
    assert r.returncode == 2
    assert "the PIN was refused (CKR_PIN_INCORRECT" in r.stderr
    assert "not retried, so as not to lock the token" in r.stderr
    for text in (r.stdout, r.stderr):
        assert wrong not in text and own_hsm.pin not in text
    assert not (files.state_dir / "verdict-keys.json").exists()  # nothing recorded

    # The configuration check shows the URI too, never with its PIN.
    toml = tmp_path / "serve.toml"
    toml.write_text(
        f'listen = "127.0.0.1:0"\nrepository = "{files.served}"\n'
        f'trusted_root = "{files.trusted_root}"\nstate_dir = "{files.state_dir}"\n'
        f'issuer = "110000"\nverdict_key = "{uri}"\n'
    )
    checked = cli("config", "check", str(toml), env=own_hsm.env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    shown = json.loads(checked.stdout)["verdict_key"]
    assert shown.startswith("pkcs11:token=staycheck;object=verdict?module-path=")
    assert wrong not in checked.stdout + checked.stderr


def test_worker_processes_each_sign_with_the_recorded_token_key(
    tmp_path: pathlib.Path, own_hsm: SoftHsm
):
    """``--workers 2`` on a state dir that records a token key: the supervisor reads the
    index before forking and loads no PKCS#11 module; each worker logs in itself."""
    uri = own_hsm.keygen("verdict")
    now = int(time.time())
    with serve_process(
        tmp_path / "first",
        areas=spec_areas(now=now),
        extra_args=["--verdict-key", uri],
        env=own_hsm.env,
    ) as first:
        assert first.files is not None
        files = first.files
    command = [*STAYCHECK, *files.serve_args(), "--verdict-key", uri, "--workers", "2"]
    with spawn(command, tmp_path / "workers", env=own_hsm.env) as served:
        assert "2 workers" in served.banner
        kids = set()
        for _ in range(6):  # a connection each: the kernel spreads them over the workers
            with StayCheckClient(served.target, timeout_s=20) as client:
                kids.add(decode_token(client.submit(risky(now)).token)[0].kid)
    on_token = raw_public(own_hsm.read_public_key("verdict"))
    assert kids == {key_id(on_token)}
    assert not list(files.state_dir.rglob("*.pem"))

"""Faults: a server killed with SIGKILL in the middle of load and restarted.

With the retry policy the Python client ships by default (wait for ready, retries on
UNAVAILABLE; safe because submitting is idempotent in effect), every call eventually
succeeds; the restarted server kept its verdict key and its version floor, so it still
refuses an older bundle."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
from staycheck.client.client import StayCheckClient
from staycheck.trust.keys import Ed25519Signer
from staycheck.trust.verdict import decode_token

from tests.helpers import DAY, HOUR, TJ_LAT, TJ_LON, itinerary, signed_bundle, square_feature, stay

STAYCHECK = str(pathlib.Path(sys.executable).parent / "staycheck")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(root: pathlib.Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            STAYCHECK, "serve", "--listen", f"127.0.0.1:{port}",
            "--bundle", str(root / "bundle.cose"),
            "--authority-key", str(root / "authority.pub"),
            "--state-dir", str(root / "state"), "--issuer", "110000",
        ],
        stdout=subprocess.PIPE,
        stderr=open(root / "server.log", "a"),  # noqa: SIM115 (the process owns it)
        text=True,
    )  # fmt: skip
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("serving on"), line
    return proc


def _bundle(authority: Ed25519Signer, version: int, now: int) -> bytes:
    return signed_bundle(
        authority,
        [square_feature(active_from=now - 5 * DAY)],
        version=version,
        issued_at=now - 60,
        expires_at=now + 2 * DAY,
    )


def test_kill_9_mid_load_then_restart(tmp_path):
    authority = Ed25519Signer.generate()
    now = int(time.time())
    (tmp_path / "authority.pub").write_bytes(authority.public_key.to_pem())
    (tmp_path / "bundle.cose").write_bytes(_bundle(authority, 2, now))
    port = _free_port()
    proc = _start(tmp_path, port)
    risky = itinerary(stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))
    results: list[str] = []
    errors: list[grpc.StatusCode] = []
    stop = threading.Event()

    def load() -> None:
        with StayCheckClient(f"127.0.0.1:{port}", timeout_s=30) as c:
            while not stop.is_set():
                try:
                    results.append(c.submit(risky).token)
                except grpc.RpcError as e:
                    errors.append(e.code())

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        before = len(results)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.5)  # clients are now waiting for a ready server
        proc = _start(tmp_path, port)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(40)
        assert before > 0 and len(results) > before
        assert errors == [], errors
        # The same verdict key before and after the restart (kept in the state dir).
        kids = {decode_token(t)[0].kid for t in results}
        assert len(kids) == 1
        # The restarted server still refuses an older bundle.
        older = tmp_path / ".older.tmp"
        older.write_bytes(_bundle(authority, 1, now))
        older.replace(tmp_path / "bundle.cose")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "bundle refused" not in (tmp_path / "server.log").read_text():
            assert time.monotonic() < deadline, "the older bundle was not refused"
            time.sleep(0.1)
        with StayCheckClient(f"127.0.0.1:{port}") as c:
            assert c.submit(risky).riskset_version == 2
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)

"""Oblivious HTTP (issue 14) with real processes: ``staycheck serve --ohttp-listen``, the
relay ``staycheck relay``, and clients in this process or ``staycheck submit
--oblivious``, over loopback HTTP.

What each party can see is checked where it lives: the gateway's TCP peers are the relay's
sockets, never the client's; the relay's output, files and memory hold no itinerary after
1 000 requests (the same scan of the gateway's memory finds them, so the scan works); the
gateway's logs and metrics hold no canary. Replays, tampering, a wrong key id and an unknown
suite get what docs/adr/0012 says.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import pathlib
import re
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from staycheck.client.bhttp import Request, Response
from staycheck.client.oblivious import (
    KEYS_PATH,
    PROTOBUF,
    SUBMIT_PATH,
    ObliviousCallError,
    ObliviousClient,
    load_key_configs,
)
from staycheck.client.ohttp import (
    AEAD_AES_256_GCM,
    KDF_HKDF_SHA256,
    KEYS_MEDIA_TYPE,
    REQUEST_MEDIA_TYPE,
    RESPONSE_MEDIA_TYPE,
    SymmetricSuite,
    encapsulate_request,
)
from staycheck.geo.itinerary import Status
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token
from staycheck.v1 import verification_pb2 as pb

from tests.harness import STAYCHECK, ServeProcess, serve_process, spawn
from tests.helpers import BJ_LON, DAY, HOUR, TJ_LAT, TJ_LON, itinerary, spec_areas, stay
from tests.privacy.canaries import CanaryIndex, float_forms
from tests.privacy.serving import ESTABLISHED, doubles_in_memory, tcp_sockets

REQUESTS = 1000
GATEWAY = re.compile(r"oblivious gateway on (http://[\d.]+:(\d+)/)")


@dataclass
class Deployment:
    server: ServeProcess
    gateway_url: str
    gateway_port: int
    relay: ServeProcess
    now: int

    @property
    def relay_url(self) -> str:
        return f"http://{self.relay.target}/"

    @property
    def keys_url(self) -> str:
        return f"{self.gateway_url.rstrip('/')}{KEYS_PATH}"

    def client(self, **options) -> ObliviousClient:
        return ObliviousClient(self.relay_url, load_key_configs(self.keys_url), **options)

    def metrics(self) -> str:
        m = self.server.wait_for_stdout(r"metrics on (http://\S+)")
        assert m is not None
        with urllib.request.urlopen(m.group(1), timeout=5) as answer:
            return answer.read().decode()


@contextlib.contextmanager
def deployment(root: pathlib.Path, *extra: str) -> Iterator[Deployment]:
    now = int(time.time())
    args = ("--ohttp-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *extra)
    with serve_process(
        root / "srv", areas=spec_areas(now=now), log_level="debug", extra_args=args
    ) as server:
        m = server.wait_for_stdout(GATEWAY.pattern)
        assert m is not None, server.stdout_text()
        relay_cmd = [*STAYCHECK, "relay", "--listen", "127.0.0.1:0", "--gateway", m.group(1)]
        (root / "relay" / "tmp").mkdir(parents=True)
        with spawn(relay_cmd, root / "relay", env={"TMPDIR": str(root / "relay" / "tmp")}) as relay:
            yield Deployment(server, m.group(1), int(m.group(2)), relay, now)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("oblivious")) as d:
        yield d


def risky(now: int, lat: float = TJ_LAT) -> pb.Itinerary:
    return itinerary(stay("120100", now - 3 * DAY, now - 3 * DAY + 6 * HOUR, (lat, TJ_LON)))


# --- done when: submit --oblivious through the relay, verified offline ------------------


def test_submit_oblivious_through_the_relay_verifies(world, tmp_path):
    trip = tmp_path / "trip.json"
    trip.write_text(
        json.dumps(
            {"stays": [{"city_code": "120100",
                        "location": {"latitude": TJ_LAT, "longitude": TJ_LON},
                        "arrival": _rfc3339(world.now - 3 * DAY),
                        "departure": _rfc3339(world.now - 3 * DAY + 6 * HOUR)}]}
        )
    )  # fmt: skip
    keys_file = tmp_path / "gateway.keys"
    with urllib.request.urlopen(world.keys_url, timeout=5) as answer:
        assert answer.headers.get_content_type() == KEYS_MEDIA_TYPE
        keys_file.write_bytes(answer.read())
    submitted = subprocess.run(
        [*STAYCHECK, "submit", "--oblivious", "--relay", world.relay_url,
         "--gateway-keys", str(keys_file), "--itinerary", str(trip),
         "--subject-id", "11010519491231002X"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    out = json.loads(submitted.stdout)
    assert out["status"] == "REVIEW_REQUIRED"  # SPEC.md: 6 h inside area B, 3 days ago
    keys = subprocess.run(
        [*STAYCHECK, "keys", "--server", world.server.target],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "keys.json").write_text(keys.stdout)
    verified = subprocess.run(
        [*STAYCHECK, "verify", out["presentation"], "--keys", str(tmp_path / "keys.json"),
         "--subject-id", "11010519491231002X", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["binding"] == "checked"


def test_an_input_error_comes_back_as_over_grpc(world):
    """The same code and field-and-rule message a gRPC call gets, inside the encryption."""
    bad = itinerary(stay("120100", world.now - DAY, world.now - 2 * DAY))
    with pytest.raises(ObliviousCallError) as e:
        world.client().submit(bad)
    assert e.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details == "stays[0].departure: must be after arrival"


def test_the_client_picks_the_strongest_suite_both_offer(world):
    """The gateway offers AES-128-GCM and ChaCha20-Poly1305 with HKDF-SHA256; the client
    takes the 256-bit AEAD."""
    _, suite = world.client().suite
    assert suite.aead_id == 0x0003 and suite.kdf_id == KDF_HKDF_SHA256
    assert Status(world.client().submit(risky(world.now)).status) is Status.REVIEW_REQUIRED


# --- who sees what -------------------------------------------------------------------------


def test_the_gateway_never_sees_the_client_only_the_relay(world):
    """Every connection the gateway holds comes from a socket of the relay process; the
    client's own sockets (this process) reach the relay only."""
    client = world.client()
    for _ in range(20):
        client.submit(risky(world.now))
    gateway_peers = {
        remote
        for local, remote, state in tcp_sockets(world.server.pid)
        if local == world.gateway_port and state == ESTABLISHED
    }
    relay_sockets = {local for local, _, _ in tcp_sockets(world.relay.pid)}
    assert gateway_peers, "the relay keeps its connections to the gateway open"
    assert gateway_peers <= relay_sockets
    mine = {local for local, _, _ in tcp_sockets(_self_pid())}
    assert not gateway_peers & mine


def test_the_relay_forwards_no_client_header(tmp_path):
    """A client that sends identifying headers: the relay passes none of them on. The
    gateway here is a plain HTTP server of the test's that writes down what it receives."""
    seen: list[dict[str, str]] = []
    gateway, port = _recording_gateway(seen)
    try:
        relay_cmd = [*STAYCHECK, "relay", "--listen", "127.0.0.1:0", "--gateway",
                     f"http://127.0.0.1:{port}/"]  # fmt: skip
        with spawn(relay_cmd, tmp_path) as relay:
            conn = http.client.HTTPConnection(relay.target, timeout=10)
            conn.request(
                "POST", "/", body=b"\x01" * 100,
                headers={"Content-Type": REQUEST_MEDIA_TYPE, "User-Agent": "canary-agent/1",
                         "X-Forwarded-For": "203.0.113.7", "Forwarded": "for=203.0.113.7",
                         "Cookie": "id=canary", "Authorization": "Bearer canary",
                         "X-Client-Id": "canary"},
            )  # fmt: skip
            answer = conn.getresponse()
            assert answer.status == 200 and answer.read() == b"sealed"
            conn.close()
    finally:
        gateway.shutdown()
    (headers,) = seen
    assert "canary" not in json.dumps(headers) and "203.0.113.7" not in json.dumps(headers)
    names = {name.lower() for name in headers}
    assert names <= {"host", "content-type", "content-length", "accept", "accept-encoding"}
    assert headers["Content-Type"] == REQUEST_MEDIA_TYPE


def test_the_relay_holds_no_itinerary_the_gateway_logs_no_canary(tmp_path):
    """1 000 itineraries with canary latitudes through the relay. Then: none in the relay's
    stdout, stderr, files or memory; none in the gateway's stdout, stderr (DEBUG) or
    metrics. The gateway's own memory still holds some (it decrypted them; scrubbing is
    --scrub-freed-memory's job), which shows the memory scan finds what is there."""
    with deployment(tmp_path) as d:
        canaries = [39.0 + (1234567 + 10 * i) * 1e-7 for i in range(REQUESTS)]
        client = d.client()
        for lat in canaries:
            client.submit(
                itinerary(stay("110100", d.now - 3 * DAY, d.now - 3 * DAY + 6 * HOUR,
                               (lat, BJ_LON)))
            )  # fmt: skip
        index = CanaryIndex(form for lat in canaries for form in float_forms(lat))
        assert doubles_in_memory(d.relay.pid, canaries) == set()
        assert index.find(d.relay.stdout_text()) == set()
        assert index.find(d.relay.stderr_text()) == set()
        assert index.find_in_tree(tmp_path / "relay") == {}
        assert index.find(d.server.stdout_text()) == set()
        assert index.find(d.server.stderr_text()) == set()
        assert index.find(_names_and_labels(d.metrics())) == set()
        assert f'staycheck_oblivious_requests_total{{outcome="ok"}} {REQUESTS}.0' in d.metrics()
        assert len(doubles_in_memory(d.server.pid, canaries)) > 0


# --- replays and refusals ------------------------------------------------------------------


def _sealed(d: Deployment, *, suite: SymmetricSuite | None = None, key_id: int | None = None):
    (config,) = load_key_configs(d.keys_url)
    message = pb.SubmitItineraryRequest(itinerary=risky(d.now))
    inner = Request("POST", "https", "", SUBMIT_PATH, (("content-type", PROTOBUF.encode()),),
                    message.SerializeToString())  # fmt: skip
    sealed, context = encapsulate_request(config, inner.encode(), suite=suite)
    if key_id is not None:
        sealed = bytes([key_id]) + sealed[1:]
    return sealed, context


def _post(d: Deployment, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(d.relay.target, timeout=10)
    conn.request("POST", "/", body=body, headers={"Content-Type": REQUEST_MEDIA_TYPE})
    answer = conn.getresponse()
    out = answer.status, answer.getheader("Content-Type", ""), answer.read()
    conn.close()
    return out


def test_a_replayed_request_gets_a_fresh_unlinkable_answer(world):
    """Documented in docs/adr/0012: a replay is answered again (no replay cache: that would
    be state kept about requests). The two answers share no nonce and no ciphertext, and
    each opens only with the sender's context, to two distinct verdicts."""
    sealed, context = _sealed(world)
    first, second = _post(world, sealed), _post(world, sealed)
    for status, kind, _ in (first, second):
        assert (status, kind) == (200, RESPONSE_MEDIA_TYPE)
    a, b = first[2], second[2]
    assert a[:16] != b[:16]  # the response nonces (max(Nn, Nk) = 32 bytes for ChaCha20)
    assert not _common_run(a[32:], b[32:], 8)
    answers = [pb.SubmitItineraryResponse.FromString(Response.decode(
        context.decapsulate_response(x)).content) for x in (a, b)]  # fmt: skip
    assert answers[0].token != answers[1].token
    keys = _verdict_keys(world)
    for answer in answers:
        verdict = verify_token(answer.token, keys, now=world.now, identity=NO_BINDING_CHECK)
        assert verdict.status is Status.REVIEW_REQUIRED


def test_a_tampered_ciphertext_is_a_plain_400(world):
    sealed, _ = _sealed(world)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    status, kind, body = _post(world, tampered)
    assert (status, kind) == (400, "text/plain")
    assert b"ciphertext" in body


def test_a_wrong_key_id_is_the_ohttp_key_problem(world):
    sealed, _ = _sealed(world, key_id=0xEE)
    status, kind, body = _post(world, sealed)
    assert (status, kind) == (400, "application/problem+json")
    assert json.loads(body)["type"] == "https://iana.org/assignments/http-problem-types#ohttp-key"


def test_an_unknown_suite_is_the_ohttp_key_problem(world):
    """AES-256-GCM is implemented but not offered by this gateway's key; an unknown AEAD
    number the same."""
    sealed, _ = _sealed(world, suite=None)
    for aead in (AEAD_AES_256_GCM, 0x0042):
        changed = sealed[:5] + struct.pack(">H", aead) + sealed[7:]
        status, kind, body = _post(world, changed)
        assert (status, kind) == (400, "application/problem+json"), body


def test_keys_rotate_while_serving_and_the_old_key_still_opens(tmp_path):
    with deployment(tmp_path) as d:
        old_client = d.client()
        (old,) = load_key_configs(d.keys_url)
        rotated = subprocess.run(
            [*STAYCHECK, "keys", "rotate-gateway", "--state-dir", str(d.server.state_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        deadline = time.monotonic() + 10
        while load_key_configs(d.keys_url)[0].key_id == old.key_id:
            assert time.monotonic() < deadline, "the rotation was not picked up"
            time.sleep(0.1)
        (new,) = load_key_configs(d.keys_url)
        assert new.key_id != old.key_id and new.public_key != old.public_key
        # A client that fetched the old configuration still gets an answer (the grace)...
        assert Status(old_client.submit(risky(d.now)).status) is Status.REVIEW_REQUIRED
        # ...and new clients seal for the new key.
        assert d.client().suite[0] == new.key_id


# --- helpers -------------------------------------------------------------------------------


def _rfc3339(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _self_pid() -> int:
    import os

    return os.getpid()


def _verdict_keys(d: Deployment):
    from staycheck.client import StayCheckClient

    with StayCheckClient(d.server.target) as c:
        return c.verdict_keys()


def _names_and_labels(metrics: str) -> str:
    return "\n".join(
        line if line.startswith("#") else line.rsplit(" ", 1)[0] for line in metrics.splitlines()
    )


def _common_run(a: bytes, b: bytes, n: int) -> bool:
    """True if ``a`` and ``b`` share any run of ``n`` bytes."""
    runs = {a[i : i + n] for i in range(len(a) - n + 1)}
    return any(b[i : i + n] in runs for i in range(len(b) - n + 1))


def _recording_gateway(seen: list[dict[str, str]]):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            seen.append(dict(self.headers.items()))
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", RESPONSE_MEDIA_TYPE)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"sealed")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_workers_share_the_port_and_the_keys(tmp_path):
    """With --workers 2 both workers serve the gateway port (SO_REUSEPORT) with the keys
    the supervisor made once: every connection gets the same configuration, and answers."""
    from tests.harness import free_port
    from tests.privacy.serving import children, listening_on

    now = int(time.time())
    port = free_port()
    args = ("--workers", "2", "--ohttp-listen", f"127.0.0.1:{port}")
    with serve_process(tmp_path, areas=spec_areas(now=now), extra_args=args) as server:
        deadline = time.monotonic() + 30
        while len(listening_on(children(server.pid), port)) < 2:
            assert time.monotonic() < deadline, "both workers listen on the gateway port"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}{KEYS_PATH}"
        seen = {load_key_configs(url) for _ in range(24)}  # a new connection each time
        assert len(seen) == 1
        (configs,) = seen
        relay_cmd = [*STAYCHECK, "relay", "--listen", "127.0.0.1:0", "--gateway",
                     f"http://127.0.0.1:{port}/"]  # fmt: skip
        with spawn(relay_cmd, tmp_path / "relay") as relay:
            client = ObliviousClient(f"http://{relay.target}/", configs)
            for _ in range(8):
                assert Status(client.submit(risky(now)).status) is Status.REVIEW_REQUIRED

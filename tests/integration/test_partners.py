"""Partner provinces (issue 3) over real TLS on 127.0.0.1: mutual TLS on the partner
listener, partner identities, methods and budgets, online and bulk verification, batches,
federation of issuer keys through a trust store, and key rotation without downtime.

Certificates are made in the test with ``staycheck.cli.certs``; servers are real
``StayCheckServer``s; channels are real gRPC TLS channels. Expected values come from
SPEC.md and issue 3, never from the code's output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from staycheck.cli import certs
from staycheck.client.client import PartnerClient, tls_credentials
from staycheck.client.files import load_trust_store
from staycheck.geo.errors import BadSignatureError, ConfigurationError, UnknownKeyError
from staycheck.geo.itinerary import Status
from staycheck.server.config import ServerConfig
from staycheck.server.keystore import INDEX_FILE, KEYS_DIR, ROTATION_GRACE_S, VerdictKeyStore
from staycheck.trust import cose
from staycheck.trust.base45 import b45decode, b45encode
from staycheck.trust.keys import Ed25519Signer, KeySet, P256Signer, VerdictKeySet
from staycheck.trust.verdict import (
    CLAIM_STAYCHECK,
    IAT_BUCKET_S,
    MAX_TTL_S,
    SC_STATUS,
    TOKEN_PREFIX,
    TokenSigner,
    decode_token,
    issue_verdict,
)
from staycheck.trust.verifier import DEFAULT_SKEW_S, NO_BINDING_CHECK, verify_token
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb

from tests.harness import STAYCHECK
from tests.helpers import (
    BJ_LAT,
    BJ_LON,
    DAY,
    HOUR,
    NOW,
    TJ_LAT,
    TJ_LON,
    Clock,
    itinerary,
    spec_areas,
    stay,
)
from tests.integration.partner_helpers import (
    FakeMonotonic,
    PartnerEntry,
    TlsServer,
    make_pki,
    partner_stub,
    tls_server,
)

NO_ABNORMALITY = pb.VERDICT_STATUS_NO_ABNORMALITY
REVIEW_REQUIRED = pb.VERDICT_STATUS_REVIEW_REQUIRED
SERVING = health_pb2.HealthCheckResponse.SERVING
PARTNER_SERVICE = "staycheck.v1.PartnerVerification"

# SPEC.md's public example cases against area B (a high-risk 1 km square in 120100 around
# the Tianjin centre, active from now-5d), evaluated at NOW.
CLEAN = itinerary(stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)))  # 14 days in Beijing
RISKY = itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))
NO_LOCATION = itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR))  # city rule
SHORT = itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 2 * HOUR, (TJ_LAT, TJ_LON)))
SPEC_CASES = [
    (CLEAN, NO_ABNORMALITY),
    (RISKY, REVIEW_REQUIRED),
    (NO_LOCATION, REVIEW_REQUIRED),
    (SHORT, NO_ABNORMALITY),
]
# Verdicts: iat rounded down to the bucket (SPEC: minutes, not seconds), lifetime 24 h at
# most and never past the risk areas' expiry (their timestamp's: ``verdict_expiry``).
ISSUED_AT = NOW - NOW % IAT_BUCKET_S
BINDING = bytes(range(32))
OTHER_BINDING = bytes(range(1, 33))
SUBJECT_ID = "11010519491231002X"  # GB 11643's example number

TIANJIN = PartnerEntry(
    "tianjin",
    "120000",
    "tianjin.partner.staycheck.test",
    requests_per_second=1_000_000,
    burst=1_000_000,
)
HEBEI_VERIFY_ONLY = PartnerEntry(
    "hebei", "130000", "hebei.partner.staycheck.test", methods=("VerifyVerdict",)
)
# Budget of exactly one call (the bucket refills one call every 1000 s): a call that reached
# a handler under this identity would use it up.
ONE_CALL_ROGUE = PartnerEntry(
    "one-call-rogue",
    "140000",
    "one-call-rogue.partner.staycheck.test",
    requests_per_second=0.001,
    burst=1,
)
ONE_CALL_EXPIRED = PartnerEntry(
    "one-call-expired",
    "150000",
    "one-call-expired.partner.staycheck.test",
    requests_per_second=0.001,
    burst=1,
)
PARTNERS = [TIANJIN, HEBEI_VERIFY_ONLY, ONE_CALL_ROGUE, ONE_CALL_EXPIRED]


# --- helpers ------------------------------------------------------------------------------


def rpc_code(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code of a call that must fail (streams are drained)."""
    with pytest.raises(grpc.RpcError) as e:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return e.value.code()


def verify_request(token: str = "SC1:") -> ppb.VerifyVerdictRequest:
    return ppb.VerifyVerdictRequest(token=token)


def health_status(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    """Health of the whole server on ``target``; the health service is not behind the
    partner interceptor, so it answers whenever the transport lets a call through."""
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def with_status(token: str, status: Status) -> str:
    """The attack "altered verdict": the claims are rewritten, the signature kept."""
    sign1, verdict = decode_token(token)
    claims = verdict.claims()
    claims[CLAIM_STAYCHECK][SC_STATUS] = int(status)
    payload = cbor2.dumps(claims, canonical=True)
    return TOKEN_PREFIX + b45encode(
        cose.encode_sign1(sign1.protected_bytes, payload, sign1.signature)
    )


def flip_signature_bit(token: str) -> str:
    """The attack "forged signature": one bit of the signature (the last byte) flipped."""
    data = bytearray(b45decode(token[len(TOKEN_PREFIX) :]))
    data[-1] ^= 0x01
    return TOKEN_PREFIX + b45encode(bytes(data))


class _HeaderLiesSigner:
    """Signs with an Ed25519 key but writes ES256 into the token header (an attack)."""

    def __init__(self, signer: Ed25519Signer) -> None:
        self._signer = signer
        self.kid = signer.kid
        self.alg = cose.ALG_ES256

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data)


def verdict_expiry(server: TlsServer) -> int:
    """When a verdict issued at NOW by ``server`` expires: 24 h after its iat, or with the
    risk-area set in use if that expires first (the repository is signed at the real time,
    so on a clock before NOW + 18 h the set's 6 h timestamp ends first)."""
    return min(ISSUED_AT + MAX_TTL_S, server.server.bundles.current.expires_at)


def foreign_token(
    signer: Any, *, issuer: str, status: Status = Status.NO_ABNORMALITY, now: int = NOW
) -> str:
    """A verdict of another issuer, signed with ``signer`` (any ``staycheck.trust.keys.Signer``)."""
    verdict = issue_verdict(
        status, now=now, issuer=issuer, riskset_version=3, bundle_expires_at=now + DAY
    )
    return TokenSigner(signer).sign(verdict)


# --- the shared deployment ----------------------------------------------------------------


@pytest.fixture(scope="module")
def beijing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """Issuer 110000 with TLS on the public listener and the partner listener, following a
    repository that publishes SPEC.md's area B at NOW. Tests here do not change its state
    (the one-call budgets belong to one test each)."""
    root = tmp_path_factory.mktemp("beijing")
    pki = make_pki(root / "pki")
    clock = Clock()
    with tls_server(
        root / "server",
        pki=pki,
        areas=spec_areas(now=clock.now),
        partners=PARTNERS,
        clock=clock,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def tianjin(beijing: TlsServer) -> certs.KeyPair:
    return beijing.pki.partner(TIANJIN.identity)


# --- the handshake: who may connect at all ------------------------------------------------


def test_no_client_certificate_fails_the_handshake(beijing, tianjin):
    no_cert = beijing.pki.credentials()
    with partner_stub(beijing.partner_target, no_cert) as stub:
        assert rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE
        )
        assert rpc_code(
            lambda: stub.SubmitItineraries(
                iter([ppb.SubmitItinerariesRequest(items=[ppb.ItineraryItem(itinerary=CLEAN)])]),
                timeout=5,
            )
        ) == (grpc.StatusCode.UNAVAILABLE)
    # No handler runs: even the health service, which no interceptor guards, is unreachable.
    assert rpc_code(lambda: health_status(beijing.partner_target, no_cert)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # Control: the same call with a partner certificate gets through.
    assert health_status(beijing.partner_target, beijing.pki.credentials(tianjin)) == SERVING


def test_certificate_from_a_rogue_ca_fails_the_handshake(beijing):
    rogue_ca = certs.make_ca("StayCheck test CA")  # same name, different key
    impostor = certs.partner_cert(rogue_ca, ONE_CALL_ROGUE.identity)
    creds = beijing.pki.credentials(impostor)
    with partner_stub(beijing.partner_target, creds) as stub:
        code = rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert rpc_code(lambda: health_status(beijing.partner_target, creds)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # No handler ran under that identity: its budget of one call is still there, and it is
    # really one call (the second is over budget).
    with beijing.partner(beijing.pki.partner(ONE_CALL_ROGUE.identity)) as genuine:
        assert genuine.verify_verdict("SC1:").reason == "malformed"
        assert rpc_code(lambda: genuine.verify_verdict("SC1:")) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )


def test_expired_certificate_fails_the_handshake(beijing):
    now = dt.datetime.now(dt.UTC)
    expired = beijing.pki.partner(
        ONE_CALL_EXPIRED.identity,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    creds = beijing.pki.credentials(expired)
    with partner_stub(beijing.partner_target, creds) as stub:
        code = rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert rpc_code(lambda: health_status(beijing.partner_target, creds)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    with beijing.partner(beijing.pki.partner(ONE_CALL_EXPIRED.identity)) as genuine:
        assert genuine.verify_verdict("SC1:").reason == "malformed"
        assert rpc_code(lambda: genuine.verify_verdict("SC1:")) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )


def test_partner_client_reports_a_refused_handshake(beijing):
    """What a misconfigured partner sees through ``PartnerClient`` (and so the CLI): the
    refused handshake as UNAVAILABLE, promptly, for the unary and the streaming calls;
    not a wait until the deadline, nor a stream without deadline that never ends."""
    rogue_ca = certs.make_ca("StayCheck test CA")
    impostor = certs.partner_cert(rogue_ca, TIANJIN.identity)
    # A short timeout bounds the unary call's wait if it does not fail at once.
    client = PartnerClient(
        beijing.partner_target, credentials=beijing.pki.credentials(impostor), timeout_s=3
    )
    results: dict[str, Any] = {}

    def run(name: str, call: Callable[[], Any]) -> None:
        try:
            results[name] = list(call()) if name != "unary" else call()
        except grpc.RpcError as e:
            results[name] = e.code()

    threads = [
        threading.Thread(target=run, args=args, daemon=True)
        for args in [
            ("unary", lambda: client.verify_verdict("SC1:")),
            ("stream", lambda: client.submit_itineraries([CLEAN])),  # the default: no deadline
        ]
    ]
    deadline = time.monotonic() + 5
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    client.close()  # cancels whatever still waits
    for t in threads:
        t.join(timeout=5)
    assert results == {
        "unary": grpc.StatusCode.UNAVAILABLE,
        "stream": grpc.StatusCode.UNAVAILABLE,
    }


def test_plaintext_to_the_partner_port_fails(beijing):
    with partner_stub(beijing.partner_target, None) as stub:
        code = rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert rpc_code(lambda: health_status(beijing.partner_target, None)) == (
        grpc.StatusCode.UNAVAILABLE
    )


# --- identity and methods -----------------------------------------------------------------


def test_known_partner_calling_a_method_it_lacks_is_permission_denied(beijing):
    with beijing.partner(beijing.pki.partner(HEBEI_VERIFY_ONLY.identity)) as hebei:
        assert hebei.verify_verdict("SC1:").reason == "malformed"  # its one allowed method
        assert rpc_code(lambda: hebei.submit_itineraries([CLEAN], timeout_s=10)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert rpc_code(lambda: hebei.verify_verdicts(["SC1:"], timeout_s=10)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


@pytest.mark.parametrize(
    "make_cert",
    [
        pytest.param(
            lambda ca: certs.partner_cert(ca, "stranger.partner.staycheck.test"),
            id="san-not-in-partners-file",
        ),
        pytest.param(
            lambda ca: certs.issue(ca, TIANJIN.identity, client=True),
            id="partner-name-only-in-common-name",
        ),
        pytest.param(
            lambda ca: certs.issue(
                ca,
                TIANJIN.identity,
                dns_names=["stranger.partner.staycheck.test"],
                client=True,
            ),
            id="partner-name-in-cn-other-san",
        ),
    ],
)
def test_unknown_but_ca_signed_partner_is_permission_denied(beijing, make_cert):
    creds = beijing.pki.credentials(make_cert(beijing.pki.ca))
    with partner_stub(beijing.partner_target, creds) as stub:
        assert rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert rpc_code(
            lambda: stub.SubmitItineraries(
                iter([ppb.SubmitItinerariesRequest(items=[ppb.ItineraryItem(itinerary=CLEAN)])]),
                timeout=5,
            )
        ) == (grpc.StatusCode.PERMISSION_DENIED)
    # The handshake itself succeeded (same CA): the health service answers.
    assert health_status(beijing.partner_target, creds) == SERVING


# --- budget -------------------------------------------------------------------------------


def test_budget_exceeded_then_recovered(tmp_path):
    pki = make_pki(tmp_path / "pki")
    monotonic = FakeMonotonic()
    metered = PartnerEntry(
        "metered", "120000", "metered.partner.staycheck.test", requests_per_second=2, burst=2
    )
    other = PartnerEntry("other", "130000", "other.partner.staycheck.test")
    with (
        tls_server(
            tmp_path / "srv",
            pki=pki,
            areas=spec_areas(),
            partners=[metered, other],
            monotonic=monotonic,
        ) as s,
        s.partner(pki.partner(metered.identity)) as c,
        s.partner(pki.partner(other.identity)) as o,
    ):
        assert c.verify_verdict("SC1:").reason == "malformed"
        assert c.verify_verdict("SC1:").reason == "malformed"
        assert rpc_code(lambda: c.verify_verdict("SC1:")) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert o.verify_verdict("SC1:").reason == "malformed"  # budgets are per partner
        monotonic.advance(0.4)  # 0.8 of a call saved: still over budget
        assert rpc_code(lambda: c.verify_verdict("SC1:")) == grpc.StatusCode.RESOURCE_EXHAUSTED
        monotonic.advance(0.6)  # one second after running dry: 2 calls
        assert c.verify_verdict("SC1:").reason == "malformed"
        assert c.verify_verdict("SC1:").reason == "malformed"
        assert rpc_code(lambda: c.verify_verdict("SC1:")) == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- the public listener ------------------------------------------------------------------


def test_partner_services_are_not_served_on_the_public_listener(beijing, tianjin):
    for creds in (beijing.pki.credentials(), beijing.pki.credentials(tianjin)):
        with partner_stub(beijing.public_target, creds) as stub:
            assert rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5)) == (
                grpc.StatusCode.UNIMPLEMENTED
            )
            assert rpc_code(
                lambda: stub.SubmitItineraries(
                    iter(
                        [ppb.SubmitItinerariesRequest(items=[ppb.ItineraryItem(itinerary=CLEAN)])]
                    ),
                    timeout=5,
                )
            ) == (grpc.StatusCode.UNIMPLEMENTED)
    with grpc.secure_channel(beijing.public_target, beijing.pki.credentials()) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in answers for s in r.list_services_response.service}
    assert "staycheck.v1.ItineraryVerification" in names
    assert PARTNER_SERVICE not in names


def test_public_listener_serves_tls(beijing):
    with beijing.new_client() as c:
        response = c.submit(RISKY)
        keys = c.verdict_keys()
    assert response.status == REVIEW_REQUIRED
    verdict = verify_token(response.token, keys, now=NOW, identity=NO_BINDING_CHECK)
    assert (verdict.issuer, verdict.status) == ("110000", Status.REVIEW_REQUIRED)
    # Plaintext, or TLS trusting another CA, does not get through.
    with grpc.insecure_channel(beijing.public_target) as ch:
        stub = ppb_grpc.PartnerVerificationStub(ch)
        assert rpc_code(lambda: stub.VerifyVerdict(verify_request(), timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE
        )
    other_ca = certs.make_ca("StayCheck test CA")
    assert rpc_code(lambda: health_status(beijing.public_target, None)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert rpc_code(
        lambda: health_status(beijing.public_target, tls_credentials(ca=other_ca.cert_pem))
    ) == (grpc.StatusCode.UNAVAILABLE)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.10:50051"])
def test_config_refuses_non_loopback_plaintext(tmp_path, listen):
    base = {
        "repository": str(tmp_path / "repository"),
        "trusted_root_path": tmp_path / "root.json",
        "state_dir": tmp_path / "state",
        "issuer": "110000",
    }
    with pytest.raises(ConfigurationError):
        ServerConfig(listen=listen, **base).check()
    ServerConfig(listen=listen, insecure=True, **base).check()
    ServerConfig(
        listen=listen, tls_cert_path=tmp_path / "c.pem", tls_key_path=tmp_path / "k.pem", **base
    ).check()
    ServerConfig(listen="127.0.0.1:0", **base).check()  # loopback plaintext is fine


# --- VerifyVerdict ------------------------------------------------------------------------


def test_verify_verdict_of_our_own_token(beijing, tianjin):
    with beijing.new_client() as c:
        token = c.submit(RISKY, subject_binding=BINDING).token
    with beijing.partner(tianjin) as p:
        r = p.verify_verdict(token)
        assert r.valid and r.reason == ""
        assert r.status == REVIEW_REQUIRED
        assert r.issuer == "110000"
        assert r.issued_at.seconds == ISSUED_AT
        assert r.expires_at.seconds == verdict_expiry(beijing)
        # SPEC: the verdict's risk-area version is the repository snapshot's version.
        version = beijing.snapshot_version()
        assert r.riskset_version == version
        assert p.verify_verdict(token, subject_binding=BINDING, min_riskset_version=version).valid


def test_verify_verdict_refusals(beijing, tianjin):
    with beijing.new_client() as c:
        token = c.submit(RISKY, subject_binding=BINDING).token
    with beijing.partner(tianjin) as p:

        def refused(t: str, **kw: Any) -> str:
            r = p.verify_verdict(t, **kw)
            assert not r.valid and r.issuer == "" and r.status == 0
            return r.reason

        assert refused(with_status(token, Status.NO_ABNORMALITY)) == "bad signature"
        assert refused(flip_signature_bit(token)) == "bad signature"
        # One character changed anywhere: it no longer decodes or no longer verifies.
        for i in (len(TOKEN_PREFIX) + 5, len(token) // 2, len(token) - 1):
            swapped = "A" if token[i] != "A" else "B"
            assert refused(token[:i] + swapped + token[i + 1 :]) in {"bad signature", "malformed"}
        assert refused(token[: len(token) // 2]) == "malformed"
        assert refused("not a token") == "malformed"
        assert refused(token, subject_binding=OTHER_BINDING) == "binding mismatch"
        newer = beijing.snapshot_version() + 1
        assert refused(token, min_riskset_version=newer) == "stale bundle version"


def test_verify_online_cli_checks_the_bearer_of_a_presentation(beijing, tianjin, tmp_path):
    """``staycheck verify-online``: the same identity rule as ``verify``; the binding is
    derived on the partner's side with the presentation's salt, never the ID sent."""
    certs.write_pair(tmp_path, "tianjin", tianjin)
    with beijing.new_client() as c:
        bound = c.submit_for(RISKY, subject_id=SUBJECT_ID).presentation
        unbound = c.submit_for(CLEAN, subject_id=None).presentation

    def online(presentation: str, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*STAYCHECK, "verify-online", presentation, "--server", beijing.partner_target,
             "--cert", str(tmp_path / "tianjin.pem"), "--key", str(tmp_path / "tianjin.key"),
             "--ca", str(beijing.pki.ca_path), *flags],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    ok = online(bound, "--subject-id", SUBJECT_ID.lower())
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert (out["status"], out["binding"], out["issuer"]) == (
        "REVIEW_REQUIRED",
        "checked",
        "110000",
    )
    other = online(bound, "--subject-id", "110105194912310037")
    assert (other.returncode, other.stderr.strip()) == (1, "refused: binding mismatch")
    neither = online(bound)
    assert neither.returncode == 1 and "--no-binding-check" in neither.stderr
    unchecked = online(bound, "--no-binding-check")
    assert json.loads(unchecked.stdout)["binding"] == "not checked"
    assert json.loads(online(unbound).stdout)["binding"] == "none"


# --- bulk ---------------------------------------------------------------------------------

BATCH_SIZE = 10_000
INVALID_ITEMS = {
    17: (
        itinerary(stay("110100", NOW - 2 * DAY, NOW - 3 * DAY, (BJ_LAT, BJ_LON))),
        "stays[0].departure",
        "stays[0].departure: must be after arrival",
    ),
    5000: (
        itinerary(stay("999999", NOW - 3 * DAY, NOW - 2 * DAY)),
        "stays[0].city_code",
        None,
    ),
    9999: (
        itinerary(stay("120100", NOW - 3 * DAY, NOW - 2 * DAY, (95.0, TJ_LON))),
        "stays[0].location.latitude",
        None,
    ),
}


def batch_item(i: int) -> pb.Itinerary:
    if i in INVALID_ITEMS:
        return INVALID_ITEMS[i][0]
    return SPEC_CASES[i % len(SPEC_CASES)][0]


def test_batch_of_ten_thousand_with_invalid_items(beijing, tianjin):
    expires_at = verdict_expiry(beijing)
    started = time.monotonic()
    with beijing.partner(tianjin) as p:
        responses = list(
            p.submit_itineraries((batch_item(i) for i in range(BATCH_SIZE)), timeout_s=120)
        )
        elapsed = time.monotonic() - started
        assert len(responses) == BATCH_SIZE
        assert [r.index for r in responses] == list(range(BATCH_SIZE))
        for i, r in enumerate(responses):
            if i in INVALID_ITEMS:
                _, field, message = INVALID_ITEMS[i]
                assert r.WhichOneof("result") == "error", i
                assert r.error.code == "INVALID_ARGUMENT"
                assert r.error.message.startswith(field + ": ")
                if message is not None:
                    assert r.error.message == message
                for value in ("999999", "95"):  # the rule, never the value
                    assert value not in r.error.message
            else:
                assert r.WhichOneof("result") == "verdict", i
                assert r.verdict.status == SPEC_CASES[i % len(SPEC_CASES)][1], i
                assert r.verdict.issued_at.seconds == ISSUED_AT
                assert r.verdict.expires_at.seconds == expires_at
        # A sample of the tokens says the same as the responses.
        keys = VerdictKeySet(KeySet.from_jwks(_jwks(beijing)))
        for i in range(0, BATCH_SIZE, 997):
            if i not in INVALID_ITEMS:
                verdict = verify_token(
                    responses[i].verdict.token, keys, now=NOW, identity=NO_BINDING_CHECK
                )
                assert int(verdict.status) == responses[i].verdict.status

        # Bulk verification: a few hundred tokens, some tampered, answered in order.
        sample = [
            (i, r.verdict.token) for i, r in enumerate(responses[:400]) if i not in INVALID_ITEMS
        ]
        tokens, expected, statuses = [], [], []
        for n, (i, t) in enumerate(sample):
            status = SPEC_CASES[i % len(SPEC_CASES)][1]
            statuses.append(status)
            if n % 7 == 3:
                tokens.append(with_status(t, Status(3 - status)))  # the other status
                expected.append((False, "bad signature"))
            elif n % 50 == 11:
                tokens.append(t[: len(t) // 3])
                expected.append((False, "malformed"))
            else:
                tokens.append(t)
                expected.append((True, ""))
        checked = list(p.verify_verdicts(tokens, timeout_s=60))
    assert [r.index for r in checked] == list(range(len(tokens)))
    assert [(r.result.valid, r.result.reason) for r in checked] == expected
    for r, status in zip(checked, statuses, strict=True):
        if r.result.valid:
            assert r.result.status == status
            assert r.result.issuer == "110000"
    # Keep this test's cost in view: it must stay well inside the file's budget.
    assert elapsed < 45, f"10 000 itineraries took {elapsed:.1f} s"


def _jwks(server: TlsServer) -> str:
    with server.new_client() as c:
        return c.verdict_keys_json()


# --- federation ---------------------------------------------------------------------------


def test_federation_of_issuers_through_the_trust_store(tmp_path):
    pki = make_pki(tmp_path / "pki")
    partner = PartnerEntry("tianjin", "120000", "tianjin.partner.staycheck.test")
    with tls_server(tmp_path / "a", pki=pki, areas=spec_areas(), issuer="120000") as a:
        with a.new_client() as c:
            token_a = c.submit(RISKY).token
            jwks_a = c.verdict_keys_json()
        store_dir = tmp_path / "b-trust"
        store_dir.mkdir()
        (store_dir / "tianjin.jwks.json").write_text(jwks_a)  # unchanged

        p256 = P256Signer.generate()
        token_es256 = foreign_token(p256, issuer="130000")
        es256_iat = decode_token(token_es256)[1].issued_at
        ed_hebei = Ed25519Signer.generate()
        hebei_keys = [
            {**p256.public_key.to_jwk(), "nbf": es256_iat - HOUR},
            {**ed_hebei.public_key.to_jwk(), "nbf": es256_iat - HOUR},
        ]
        store = store_dir / "trust.toml"
        store.write_text(
            "\n".join(
                [
                    "[[issuer]]",
                    'code = "120000"',
                    'name = "Tianjin"',
                    'jwks = "tianjin.jwks.json"',
                    "",
                    "[[issuer]]",
                    'code = "130000"',
                    'name = "Hebei"',
                    f"keys = [{', '.join(_toml_inline(k) for k in hebei_keys)}]",
                    "",
                ]
            )
        )
        token_c = foreign_token(Ed25519Signer.generate(), issuer="140000")
        token_ed_as_es256 = foreign_token(_HeaderLiesSigner(ed_hebei), issuer="130000")
        token_ed_hebei = foreign_token(ed_hebei, issuer="130000")
        # A key of issuer C passing itself off as Tianjin's.
        token_c_as_a = foreign_token(Ed25519Signer.generate(), issuer="120000")

        with (
            tls_server(
                tmp_path / "b",
                pki=pki,
                areas=spec_areas(),
                issuer="110000",
                partners=[partner],
                trust_store_path=store,
            ) as b,
            b.partner(pki.partner(partner.identity)) as p,
        ):
            r = p.verify_verdict(token_a)
            assert r.valid and r.issuer == "120000" and r.status == REVIEW_REQUIRED
            assert (r.issued_at.seconds, r.expires_at.seconds) == (ISSUED_AT, verdict_expiry(a))
            with b.new_client() as c:
                own = c.submit(CLEAN).token
            r = p.verify_verdict(own)
            assert r.valid and r.issuer == "110000"

            r = p.verify_verdict(token_es256)
            assert r.valid and r.issuer == "130000" and r.status == NO_ABNORMALITY
            assert p.verify_verdict(token_ed_hebei).valid  # the Ed25519 key is listed...
            r = p.verify_verdict(token_ed_as_es256)  # ...but never used as ES256
            assert (r.valid, r.reason) == (False, "bad signature")
            r = p.verify_verdict(token_c)
            assert (r.valid, r.reason) == (False, "unknown key")
            r = p.verify_verdict(token_c_as_a)
            assert (r.valid, r.reason) == (False, "unknown key")

    # The offline verifier with the same trust store file says the same.
    trust = load_trust_store(store)
    assert verify_token(token_a, trust, now=NOW, identity=NO_BINDING_CHECK).issuer == "120000"
    assert verify_token(token_es256, trust, now=NOW, identity=NO_BINDING_CHECK).issuer == "130000"
    for token, error in [
        (token_c, UnknownKeyError),
        (token_c_as_a, UnknownKeyError),
        (token_ed_as_es256, BadSignatureError),
    ]:
        with pytest.raises(error):
            verify_token(token, trust, now=NOW, identity=NO_BINDING_CHECK)


def _toml_inline(jwk: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in jwk.items()) + "}"


# --- key rotation -------------------------------------------------------------------------


def test_rotation_while_a_client_is_submitting(tmp_path):
    pki = make_pki(tmp_path / "pki")
    clock = Clock()
    with tls_server(
        tmp_path / "srv",
        pki=pki,
        areas=spec_areas(),
        clock=clock,
        reload_interval_s=0.05,
        key_publish_ahead_s=300,  # the next key may start signing 5 minutes after start
        key_refresh_interval_s=60,
    ) as s:
        tokens: list[str] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def submit_continuously() -> None:
            with s.new_client() as c:
                while not stop.is_set():
                    try:
                        tokens.append(c.submit(RISKY if len(tokens) % 2 else CLEAN).token)
                    except BaseException as e:
                        failures.append(e)

        def kid(token: str) -> str:
            kid_bytes = decode_token(token)[0].kid
            assert kid_bytes is not None
            return kid_bytes.hex()

        def wait_for(condition: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 15
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                assert not failures, failures
                time.sleep(0.01)

        submitter = threading.Thread(target=submit_continuously, daemon=True)
        submitter.start()
        try:
            wait_for(lambda: len(tokens) >= 20, "tokens before the rotation")
            old_kid = kid(tokens[0])
            rotation = VerdictKeyStore(s.state_dir, issuer="110000").rotate(
                now=clock(), publish_ahead_s=300
            )
            new_kid = rotation.kid
            assert new_kid != old_kid
            clock.now = rotation.signs_from  # the new key signs from its scheduled time on
            wait_for(lambda: kid(tokens[-1]) == new_kid, "a token with the new kid")
            seen = len(tokens)
            wait_for(lambda: len(tokens) >= seen + 20, "tokens after the rotation")
        finally:
            stop.set()
            submitter.join(timeout=15)
        assert not submitter.is_alive()
        assert failures == []
        kids = [kid(t) for t in tokens]
        switch = kids.index(new_kid)
        assert switch > 0
        assert set(kids[:switch]) == {old_kid}, "tokens before the switch use the old key"
        assert set(kids[switch:]) == {new_kid}, "once switched, only the new key signs"

        jwks = json.loads(_jwks(s))
        by_kid = {k["kid"]: k for k in jwks["keys"]}
        assert set(by_kid) == {old_kid, new_kid, rotation.pending_kid}
        assert "exp" in by_kid[old_kid] and "exp" not in by_kid[new_kid]
        keys = VerdictKeySet(KeySet.from_jwks(json.dumps(jwks)))
        for t in tokens:  # old tokens still verify offline; new ones too
            assert verify_token(t, keys, now=clock(), identity=NO_BINDING_CHECK).issuer == "110000"

        # The old key stays published while a verdict it signed may still be valid, and
        # drops out once all have expired (plus the verifier's clock skew).
        last_old_expiry = max(decode_token(t)[1].expires_at for t in tokens[:switch])
        clock.now = last_old_expiry
        assert old_kid in {k["kid"] for k in json.loads(_jwks(s))["keys"]}
        clock.now = by_kid[old_kid]["exp"] + MAX_TTL_S + DEFAULT_SKEW_S + 1
        assert {k["kid"] for k in json.loads(_jwks(s))["keys"]} == {new_kid, rotation.pending_kid}


def test_keys_rotate_cli_on_a_stopped_state_dir(tmp_path):
    state = tmp_path / "state"
    store = VerdictKeyStore(state, issuer="110000")
    store.load_or_create(now=int(time.time()))
    old_kid = store.signing_key(now=int(time.time())).kid
    new_kid = store.pending_kid  # published since the first start; it signs next
    assert new_kid is not None
    r = subprocess.run(
        [*STAYCHECK, "keys", "rotate", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 0, r.stderr
    index = json.loads((state / INDEX_FILE).read_text())
    kids = [k["kid"] for k in index["keys"]]
    fresh_kid = index["pending"]  # a fresh pending key, for the rotation after this one
    assert len(kids) == 3 and set(kids) == {old_kid, new_kid, fresh_kid}
    assert new_kid in r.stdout and fresh_kid in r.stdout
    records = {k["kid"]: k for k in index["keys"]}
    switch = records[new_kid]["not_before"]
    # The old key's window now ends a grace after the switch.
    assert records[old_kid]["not_after"] == switch + ROTATION_GRACE_S
    assert records[new_kid]["not_after"] is None
    key_file = state / KEYS_DIR / f"{fresh_kid}.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A server starting on this state dir signs with the new key from the switch on.
    reloaded = VerdictKeyStore(state, issuer="110000")
    reloaded.load_or_create(now=int(time.time()))
    assert reloaded.token_signer(now=switch - 1).kid.hex() == old_kid
    assert reloaded.token_signer(now=switch).kid.hex() == new_kid


def test_stream_messages_carry_many_items_and_indexes_run_across_them(beijing, tianjin):
    """Each message is answered by one message with one result per item, in order; the
    index is the item's position in the whole stream; an undecodable message counts as one
    item with its own error and the stream goes on."""
    bad = itinerary(stay("120100", NOW - 2 * DAY, NOW - 3 * DAY, (TJ_LAT, TJ_LON)))
    first = ppb.SubmitItinerariesRequest(
        items=[ppb.ItineraryItem(itinerary=it) for it in (CLEAN, bad, RISKY)]
    )
    second = ppb.SubmitItinerariesRequest(items=[ppb.ItineraryItem(itinerary=RISKY)])
    with grpc.secure_channel(beijing.partner_target, beijing.pki.credentials(tianjin)) as ch:
        raw = ch.stream_stream(
            "/staycheck.v1.PartnerVerification/SubmitItineraries",
            request_serializer=lambda b: b,
            response_deserializer=ppb.SubmitItinerariesResponse.FromString,
        )
        messages = [first.SerializeToString(), b"\xff\xff", second.SerializeToString()]
        responses = list(raw(iter(messages), timeout=30))
    assert [len(r.results) for r in responses] == [3, 1, 1]
    results = [x for r in responses for x in r.results]
    assert [x.index for x in results] == [0, 1, 2, 3, 4]
    assert results[0].verdict.status == int(Status.NO_ABNORMALITY)
    assert results[1].error.code == "INVALID_ARGUMENT"
    assert results[1].error.message == "stays[0].departure: must be after arrival"
    assert results[2].verdict.status == int(Status.REVIEW_REQUIRED)
    assert results[3].error.code == "INVALID_ARGUMENT"
    assert results[3].error.message.startswith("request: not a valid protobuf message")
    assert results[4].verdict.status == int(Status.REVIEW_REQUIRED)


def test_only_dns_names_identify_a_partner(beijing):
    """A certificate from the partner CA whose only SAN is a *URI* equal to Tianjin's
    identity is not Tianjin: gRPC's SAN list mixes name types, we match DNS names only."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = beijing.pki.ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "uri-only")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(TIANJIN.identity)]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    uri_only = certs.KeyPair(key, cert)
    credentials = beijing.pki.credentials(uri_only)
    with (
        partner_stub(beijing.partner_target, credentials) as stub,
        pytest.raises(grpc.RpcError) as e,
    ):
        stub.VerifyVerdict(ppb.VerifyVerdictRequest(token="SC1:"), timeout=10)
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED

"""Partner bounds that docs/limits.md listed as known but not enforced (issue 13):

- one partner could hold every partner stream slot: now each partner has ``max_streams``;
- a partner entry was not bound to the CA that issued its certificate, so any partner CA
  could issue a certificate in another partner's name: now an entry names its CA (required
  when the listener trusts several), and a certificate from another CA gets
  PERMISSION_DENIED.

Real servers over mutual TLS with certificates made in the test (``staycheck.cli.certs``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
from staycheck.cli import certs
from staycheck.geo.errors import ConfigurationError
from staycheck.server.partner_access import load_partners
from staycheck.v1 import partner_pb2 as ppb

from tests.helpers import spec_areas
from tests.integration.partner_helpers import (
    PartnerEntry,
    make_pki,
    partner_stub,
    tls_server,
    write_partners,
)


def _held_open(stub, opened: threading.Event) -> tuple[queue.Queue, threading.Thread]:
    """A VerifyVerdicts stream kept open until ``None`` is put on the returned queue."""
    messages: queue.Queue = queue.Queue()

    def requests() -> Iterator[ppb.VerifyVerdictsRequest]:
        while (item := messages.get()) is not None:
            yield item

    def run() -> None:
        for _ in stub.VerifyVerdicts(requests(), timeout=30):
            opened.set()

    thread = threading.Thread(target=run)
    thread.start()
    messages.put(ppb.VerifyVerdictsRequest(verdicts=[ppb.VerifyVerdictRequest(token="SC1:")]))
    return messages, thread


def test_one_partner_cannot_hold_every_stream_slot(tmp_path):
    pki = make_pki(tmp_path / "pki")
    greedy = PartnerEntry("greedy", "120000", "greedy.partner.staycheck.test", max_streams=1)
    other = PartnerEntry("other", "130000", "other.partner.staycheck.test")
    with tls_server(tmp_path / "srv", pki=pki, areas=spec_areas(), partners=[greedy, other]) as s:
        greedy_creds = pki.credentials(pki.partner(greedy.identity))
        with partner_stub(s.partner_target, greedy_creds) as stub:
            opened = threading.Event()
            messages, thread = _held_open(stub, opened)
            try:
                assert opened.wait(10), "the first stream did not open"
                with pytest.raises(grpc.RpcError) as e:
                    list(stub.VerifyVerdicts(iter([ppb.VerifyVerdictsRequest()]), timeout=10))
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "1 streams open" in e.value.details()
                # Another partner still gets a stream.
                with partner_stub(
                    s.partner_target, pki.credentials(pki.partner(other.identity))
                ) as o:
                    answer = list(o.VerifyVerdicts(iter([ppb.VerifyVerdictsRequest()]), timeout=10))
                    assert len(answer) == 1
            finally:
                messages.put(None)
                thread.join(10)
            # Closed: the partner may open one again.
            assert len(list(stub.VerifyVerdicts(iter([ppb.VerifyVerdictsRequest()]), timeout=10)))


def test_a_certificate_from_another_partners_ca_is_refused(tmp_path):
    pki = make_pki(tmp_path / "pki")  # the Tianjin CA (and the server certificate)
    hebei_ca = certs.make_ca("Hebei partner CA")
    both = tmp_path / "partner-cas.pem"
    both.write_bytes(pki.ca.cert_pem + hebei_ca.cert_pem)
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "tianjin-ca.pem").write_bytes(pki.ca.cert_pem)
    (srv / "hebei-ca.pem").write_bytes(hebei_ca.cert_pem)
    tianjin = PartnerEntry("tianjin", "120000", "tianjin.partner.test", ca="tianjin-ca.pem")
    hebei = PartnerEntry("hebei", "130000", "hebei.partner.test", ca="hebei-ca.pem")
    with tls_server(
        srv, pki=pki, areas=spec_areas(), partners=[tianjin, hebei], partner_ca_path=both
    ) as s:
        request = ppb.VerifyVerdictRequest(token="SC1:")

        def call(pair: certs.KeyPair) -> grpc.StatusCode | None:
            with partner_stub(s.partner_target, pki.credentials(pair)) as stub:
                try:
                    stub.VerifyVerdict(request, timeout=10)
                except grpc.RpcError as e:
                    return e.code()
                return None

        # Each partner's own CA speaks for it.
        assert call(certs.partner_cert(pki.ca, tianjin.identity)) is None
        assert call(certs.partner_cert(hebei_ca, hebei.identity)) is None
        # Hebei's CA issuing a certificate in Tianjin's name: trusted by TLS, refused here.
        assert call(certs.partner_cert(hebei_ca, tianjin.identity)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


def test_several_partner_cas_need_every_entry_to_name_its_own(tmp_path):
    first, second = certs.make_ca("first"), certs.make_ca("second")
    path = write_partners(tmp_path / "partners.toml", [PartnerEntry("a", "120000", "a.test")])
    with pytest.raises(ConfigurationError, match=r"partner\[0\]\.ca: required"):
        load_partners(path, partner_cas=first.cert_pem + second.cert_pem)
    (tmp_path / "stranger.pem").write_bytes(certs.make_ca("stranger").cert_pem)
    named = write_partners(
        tmp_path / "named.toml", [PartnerEntry("a", "120000", "a.test", ca="stranger.pem")]
    )
    with pytest.raises(ConfigurationError, match="not one of the listener's partner CAs"):
        load_partners(named, partner_cas=first.cert_pem + second.cert_pem)

"""Issue 13: a partner's budget is one budget per ``staycheck serve``, however many workers.

A real ``staycheck serve --workers 2`` subprocess with TLS and the mutual-TLS partner
listener; a partner whose budget is 10 calls (``burst = 10``) and refills one call every
1000 s, so nothing refills during the test. Every call goes over a fresh connection (a
distinct channel argument keeps gRPC from reusing one), so the kernel spreads the calls
over both workers (``SO_REUSEPORT``), and each worker's metrics show which served what.
Before the fix each worker had its own bucket: two workers gave 20 calls.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request

import grpc
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc

from tests.harness import serve_process
from tests.helpers import spec_areas
from tests.integration.partner_helpers import PartnerEntry, make_pki, write_partners

BURST = 10
CALLS = 60  # over 2 workers: each gets well over BURST connections (binomial, p = 1/2)
PARTNER = PartnerEntry(
    "tianjin",
    "120000",
    "tianjin.partner.staycheck.test",
    methods=("VerifyVerdict",),
    requests_per_second=0.001,
    burst=BURST,
)


def _verify_on_a_fresh_connection(target: str, credentials: grpc.ChannelCredentials) -> str:
    """One VerifyVerdict call on a new connection: the status code's name."""
    options = [("grpc.channel_id", os.urandom(8).hex())]
    with grpc.secure_channel(target, credentials, options=options) as channel:
        stub = ppb_grpc.PartnerVerificationStub(channel)
        try:
            stub.VerifyVerdict(ppb.VerifyVerdictRequest(token="SC1:"), timeout=10)
        except grpc.RpcError as e:
            return str(e.code().name)
        return "OK"


def _verify_calls(metrics_url: str) -> dict[str, float]:
    """This worker's VerifyVerdict calls by status code (its Prometheus endpoint)."""
    body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    calls: dict[str, float] = {}
    for line in body.splitlines():
        m = re.fullmatch(r"staycheck_requests_total\{(.*)\} (\S+)", line)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) if m else {}
        if labels.get("method") == "VerifyVerdict":
            calls[labels["code"]] = calls.get(labels["code"], 0.0) + float(m.group(2))
    return calls


def test_n_workers_share_one_partner_budget(tmp_path):
    pki = make_pki(tmp_path / "pki")
    partners = write_partners(tmp_path / "partners.toml", [PARTNER])
    extra = (
        "--workers", "2", "--metrics-listen", "127.0.0.1:0",
        "--tls-cert", str(pki.cert_path), "--tls-key", str(pki.key_path),
        "--partner-listen", "127.0.0.1:0", "--partner-ca", str(pki.ca_path),
        "--partners", str(partners),
    )  # fmt: skip
    with serve_process(
        tmp_path / "server", areas=spec_areas(now=int(time.time())), extra_args=extra
    ) as served:
        m = served.wait_for_stdout(r"partners on [\d.]+:(\d+)")
        assert m, served.stdout_text()
        metrics = re.findall(r"worker \d+: metrics on (\S+)", served.stdout_text())
        assert len(metrics) == 2, served.stdout_text()
        credentials = pki.credentials(pki.partner(PARTNER.identity))
        target = f"127.0.0.1:{m.group(1)}"

        codes = [_verify_on_a_fresh_connection(target, credentials) for _ in range(CALLS)]

        assert codes.count("OK") == BURST, codes
        assert codes.count("RESOURCE_EXHAUSTED") == CALLS - BURST, codes
        per_worker = [_verify_calls(url) for url in metrics]
        # Both workers answered calls of this partner, and spent one budget between them.
        assert all(sum(calls.values()) > 0 for calls in per_worker), per_worker
        assert sum(calls.get("OK", 0.0) for calls in per_worker) == BURST, per_worker

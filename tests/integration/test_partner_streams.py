"""Partner streams under the attacks of issue 13, finding 3, against a real server over
mutual TLS.

- One message of 20 000 items (600 KB, under the 4 MiB receive limit) used to be computed
  in full, then the whole stream failed because the 4.7 MB reply exceeded the send limit:
  now a message over ``partner_max_items_per_message`` (1000) is refused at once, naming
  the limit, and what came before it was answered.
- A partner with 5 requests/s and a burst of 10 got 16 000 verdicts from one message and
  was then locked out for ~53 minutes (the bucket went negative): now a message over the
  partner's burst is refused before any work, and the budget is left as it was.
- Results come back as they are computed, in responses of at most 100.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from staycheck.server.partner_service import RESULTS_PER_RESPONSE
from staycheck.v1 import partner_pb2 as ppb

from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, itinerary, spec_areas, stay
from tests.integration.partner_helpers import (
    FakeMonotonic,
    PartnerEntry,
    make_pki,
    partner_stub,
    tls_server,
)

MAX_ITEMS = 1000  # ServerConfig.partner_max_items_per_message, by default


def _risky_item() -> ppb.ItineraryItem:
    trip = itinerary(stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, (TJ_LAT, TJ_LON)))
    return ppb.ItineraryItem(itinerary=trip)


def _submit_messages(*sizes: int) -> Iterator[ppb.SubmitItinerariesRequest]:
    item = _risky_item()
    for n in sizes:
        yield ppb.SubmitItinerariesRequest(items=[item] * n)


def _verify_messages(*sizes: int) -> Iterator[ppb.VerifyVerdictsRequest]:
    for n in sizes:
        yield ppb.VerifyVerdictsRequest(verdicts=[ppb.VerifyVerdictRequest(token="SC1:")] * n)


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def _server(tmp_path, pki, entry: PartnerEntry, monotonic: FakeMonotonic | None = None):
    return tls_server(
        tmp_path / "srv",
        pki=pki,
        areas=spec_areas(),
        partners=[entry],
        monotonic=monotonic,
    )


def test_a_message_too_large_to_answer_is_refused_at_once_naming_the_limit(tmp_path, pki):
    generous = PartnerEntry(
        "bulk", "120000", "bulk.partner.staycheck.test", requests_per_second=1e6, burst=1e6
    )
    with (
        _server(tmp_path, pki, generous) as s,
        partner_stub(s.partner_target, pki.credentials(pki.partner(generous.identity))) as stub,
    ):
        received: list[ppb.ItineraryResult] = []
        with pytest.raises(grpc.RpcError) as e:
            for response in stub.SubmitItineraries(_submit_messages(3, 20_000, 3), timeout=60):
                received.extend(response.results)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"at most {MAX_ITEMS} per message" in e.value.details()
        # The message before it was answered in full, and nothing after it.
        assert [r.index for r in received] == [0, 1, 2]
        assert all(r.HasField("verdict") for r in received)
        # A message of exactly the limit is answered.
        results = [
            r
            for response in stub.SubmitItineraries(_submit_messages(MAX_ITEMS), timeout=60)
            for r in response.results
        ]
        assert [r.index for r in results] == list(range(MAX_ITEMS))


def test_a_message_over_the_partner_budget_is_refused_and_borrows_nothing(tmp_path, pki):
    metered = PartnerEntry(
        "metered", "120000", "metered.partner.staycheck.test", requests_per_second=5, burst=10
    )
    monotonic = FakeMonotonic()  # no time passes: only what the bucket holds is there
    with (
        _server(tmp_path, pki, metered, monotonic) as s,
        partner_stub(s.partner_target, pki.credentials(pki.partner(metered.identity))) as stub,
    ):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.VerifyVerdicts(_verify_messages(16), timeout=30))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 10 per message for this partner" in e.value.details()
        # The whole burst is still there: ten calls pass, the eleventh is over budget.
        for _ in range(10):
            assert not stub.VerifyVerdict(ppb.VerifyVerdictRequest(token="SC1:"), timeout=10).valid
        with pytest.raises(grpc.RpcError) as over:
            stub.VerifyVerdict(ppb.VerifyVerdictRequest(token="SC1:"), timeout=10)
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_results_stream_back_as_they_are_computed(tmp_path, pki):
    entry = PartnerEntry("p", "120000", "p.partner.staycheck.test")
    with (
        _server(tmp_path, pki, entry) as s,
        partner_stub(s.partner_target, pki.credentials(pki.partner(entry.identity))) as stub,
    ):
        responses = list(stub.VerifyVerdicts(_verify_messages(250, 0, 1), timeout=30))
        sizes = [len(r.results) for r in responses]
        # 250 items in responses of at most 100, an empty message answered once, then one.
        assert sizes == [RESULTS_PER_RESPONSE, RESULTS_PER_RESPONSE, 50, 0, 1]
        indexes = [x.index for r in responses for x in r.results]
        assert indexes == list(range(251))

"""Batched matching on the partner stream ``SubmitItineraries``, against a real server over
mutual TLS: each item of a message gets what it gets alone, however the message mixes them.

The server matches the items of a message a chunk of ``RESULTS_PER_RESPONSE`` (100) at a
time, in one index query per chunk (``VerdictCore.submit_many``). What a partner must see is
unchanged by that (docs/rules.md, sections 2 and 3; partner.proto):

- one message mixing risky, clean, invalid and badly bound items: per item, the verdict SPEC.md
  gives (status, and the item's own binding in the token) or the error of the first rule it
  breaks (INVALID_ARGUMENT, details naming the field), exactly as the same item gets alone in
  its own message and from the unary ``SubmitItinerary``;
- 250 items in one message come back as responses of 100, 100 and 50 results, indexes 0-249 in
  order; an empty message gets one empty response; the next message goes on from 250; every
  result is the unary call's for the same item;
- with the risk-area set expired, each item still gets what it gets alone.

tests/integration/test_partners.py already covers the handshake, identities, budgets,
3-item messages with an undecodable one between them and 10 000 items in messages of 64;
tests/integration/test_partner_streams.py the per-message limits and the response sizes of
``VerifyVerdicts``. Expected values come from SPEC.md and docs/rules.md, or from the unary
call of the same item, never from this stream's output.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.itinerary import Status
from staycheck.server.partner_service import RESULTS_PER_RESPONSE
from staycheck.trust.binding import DEFAULT_PARAMETERS
from staycheck.trust.verdict import decode_token
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

from tests.harness import InProcessServer
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
from tests.integration.partner_helpers import PartnerEntry, make_pki, partner_stub, tls_server

NO = Status.NO_ABNORMALITY
REVIEW = Status.REVIEW_REQUIRED
INVALID = "INVALID_ARGUMENT"
PARTNER = PartnerEntry(
    "tianjin",
    "120000",
    "tianjin.partner.staycheck.test",
    requests_per_second=1_000_000,
    burst=1_000_000,
)

# SPEC.md's bundle B (spec_areas): a high-risk 1 km square at the Tianjin centre, in 120100,
# active from now-5d with no end; the default policy (tolerance 0).
INSIDE = (TJ_LAT, TJ_LON)
OUTSIDE_5KM = (TJ_LAT + 5000 / 111_000, TJ_LON)  # 4.5 km north of the square's edge
AT = NOW - 3 * DAY
CLEAN = itinerary(stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON)))
RISKY = itinerary(stay("120100", AT, AT + 6 * HOUR, INSIDE))
NO_LOCATION = itinerary(stay("120100", AT, AT + 6 * HOUR))
SHORT = itinerary(stay("120100", AT, AT + 2 * HOUR, INSIDE))
FAR = itinerary(stay("120100", AT, AT + 6 * HOUR, OUTSIDE_5KM))
BINDING = bytes(range(32))
OTHER_BINDING = bytes(range(1, 33))
DEFAULT_PARAMS = pb.BindingParameters(
    memory_kib=DEFAULT_PARAMETERS.memory_kib,
    iterations=DEFAULT_PARAMETERS.iterations,
    lanes=DEFAULT_PARAMETERS.lanes,
)


def backwards(city: str = "120100") -> pb.Itinerary:
    """I6 broken: the departure precedes the arrival."""
    return itinerary(stay(city, AT + DAY, AT, INSIDE))


def without(field: str, *, at: int = 0) -> pb.Itinerary:
    """I2 broken: ``stays[at]`` lacks ``field`` (``arrival`` or ``departure``)."""
    trip = itinerary(*[stay("110100", AT - (i + 1) * DAY, AT - i * DAY) for i in range(at + 1)])
    trip.stays[at].ClearField(field)
    return trip


def item(
    trip: pb.Itinerary, binding: bytes = b"", params: pb.BindingParameters | None = None
) -> ppb.ItineraryItem:
    message = ppb.ItineraryItem(itinerary=trip, subject_binding=binding)
    if params is not None:
        message.binding_parameters.CopyFrom(params)
    return message


def bound(trip: pb.Itinerary, binding: bytes) -> ppb.ItineraryItem:
    """An item with a binding derived with the default Argon2id parameters."""
    return item(trip, binding, DEFAULT_PARAMS)


@dataclass(frozen=True)
class Row:
    """An item and what docs/rules.md says of it: a status, or the fields one of which its
    error must name (``message``: the whole details, where the rules spell them out)."""

    title: str
    item: ppb.ItineraryItem
    status: Status | None = None
    fields: tuple[str, ...] = ()
    message: str | None = None


MIXED = [
    Row("risky (SPEC: inside the square)", item(RISKY), REVIEW),
    Row("clean (SPEC: 14 days in Beijing)", item(CLEAN), NO),
    Row(
        "departure before arrival",
        item(backwards()),
        fields=("stays[0].departure",),
        message="stays[0].departure: must be after arrival",
    ),
    Row("no location (SPEC: city-level rule)", item(NO_LOCATION), REVIEW),
    Row(
        "bad city code in the second stay",
        item(itinerary(stay("120100", AT, AT + HOUR), stay("999999", AT, AT + HOUR))),
        fields=("stays[1].city_code",),
    ),
    Row("bound, risky", bound(RISKY, BINDING), REVIEW),
    Row("missing arrival", item(without("arrival", at=1)), fields=("stays[1].arrival",)),
    Row(
        "binding of 31 bytes",
        bound(CLEAN, bytes(31)),
        fields=("subject_binding",),
        message="subject_binding: must be empty or 32 bytes",
    ),
    Row("short (SPEC: 2 h)", item(SHORT), NO),
    Row("bound, clean", bound(CLEAN, OTHER_BINDING), NO),
    Row("missing departure", item(without("departure")), fields=("stays[0].departure",)),
    Row("binding of 33 bytes", bound(RISKY, bytes(33)), fields=("subject_binding",)),
    Row("far (SPEC: 5 km outside)", item(FAR), NO),
    Row(
        "binding of 33 bytes and a stay backwards: one error, the first rule broken",
        bound(backwards(), bytes(33)),
        fields=("subject_binding", "stays[0].departure"),
    ),
    Row(
        "parameters without a binding",
        item(CLEAN, params=DEFAULT_PARAMS),
        fields=("binding_parameters",),
    ),
    Row(
        "binding without parameters",
        item(RISKY, BINDING),
        fields=("binding_parameters",),
    ),
    Row(
        "binding with lanes 0",
        item(RISKY, BINDING, pb.BindingParameters(memory_kib=65536, iterations=2)),
        fields=("binding_parameters.lanes",),
    ),
    Row("empty itinerary (M4)", item(pb.Itinerary()), NO),
    Row(
        "latitude 95",
        item(itinerary(stay("120100", AT, AT + 6 * HOUR, (95.0, TJ_LON)))),
        fields=("stays[0].location.latitude",),
    ),
    Row(
        "1 001 stays",
        item(itinerary(*[stay("110100", AT - i * HOUR, AT - i * HOUR + 60) for i in range(1001)])),
        fields=("stays",),
    ),
    Row(
        "risky and missing arrival",
        item(
            pb.Itinerary(
                stays=[*RISKY.stays, pb.Stay(city_code="120100", departure=Timestamp(seconds=AT))]
            )
        ),
        fields=("stays[1].arrival",),
    ),
    Row("bound, risky, with no location", bound(NO_LOCATION, OTHER_BINDING), REVIEW),
]


# --- outcomes -----------------------------------------------------------------------------

Outcome = tuple[Any, ...]
"""("verdict", status, issued_at, expires_at, riskset_version, token binding, its parameters)
or ("error", code name, details): what a caller can compare of an answer (the token's id
is random, so the token itself differs from call to call)."""


def verdict_outcome(response: pb.SubmitItineraryResponse) -> Outcome:
    _, verdict = decode_token(response.token)
    assert int(verdict.status) == response.status  # the token says what the response says
    return (
        "verdict",
        Status(response.status),
        response.issued_at.seconds,
        response.expires_at.seconds,
        response.riskset_version,
        verdict.binding,
        verdict.binding_params,
    )


def result_outcome(result: ppb.ItineraryResult) -> Outcome:
    if result.WhichOneof("result") == "verdict":
        return verdict_outcome(result.verdict)
    assert result.WhichOneof("result") == "error"
    return ("error", result.error.code, result.error.message)


def unary_outcome(public: pb_grpc.ItineraryVerificationStub, message: ppb.ItineraryItem) -> Outcome:
    """The unary call with the same fields (``ItineraryItem`` and ``SubmitItineraryRequest``
    share their field numbers: the same bytes)."""
    request = pb.SubmitItineraryRequest.FromString(message.SerializeToString())
    try:
        return verdict_outcome(public.SubmitItinerary(request, timeout=10))
    except grpc.RpcError as e:
        return ("error", e.code().name, e.details())


def check_against_the_rules(row: Row, outcome: Outcome) -> None:
    if row.status is not None:
        assert outcome[:2] == ("verdict", row.status), row.title
        assert outcome[5] == row.item.subject_binding, row.title  # its own binding
        return
    kind, code, details = outcome
    assert (kind, code) == ("error", INVALID), row.title
    assert any(details.startswith(f"{field}: ") for field in row.fields), (row.title, details)
    if row.message is not None:
        assert details == row.message, row.title
    for value in ("999999", "95"):  # the rule, never the value
        assert value not in details, (row.title, details)


# --- the deployment -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """Issuer 110000 following a repository that publishes SPEC.md's area B at NOW, with the
    partner listener; one partner with a budget no test here reaches."""
    root = tmp_path_factory.mktemp("batches")
    pki = make_pki(root / "pki")
    clock = Clock()
    with tls_server(
        root / "server", pki=pki, areas=spec_areas(now=clock.now), partners=[PARTNER], clock=clock
    ) as s:
        yield s


@pytest.fixture(scope="module")
def partner(server: InProcessServer) -> Iterator[ppb_grpc.PartnerVerificationStub]:
    credentials = server.pki.credentials(server.pki.partner(PARTNER.identity))
    with partner_stub(server.partner_target, credentials) as stub:
        yield stub


@pytest.fixture(scope="module")
def public(server: InProcessServer) -> pb_grpc.ItineraryVerificationStub:
    return pb_grpc.ItineraryVerificationStub(server.client.channel)


def stream(
    stub: ppb_grpc.PartnerVerificationStub, messages: Sequence[Sequence[ppb.ItineraryItem]]
) -> list[ppb.SubmitItinerariesResponse]:
    """One stream: a request message per list of items, every response."""
    requests = [ppb.SubmitItinerariesRequest(items=items) for items in messages]
    return list(stub.SubmitItineraries(iter(requests), timeout=60))


# --- one message, many kinds of item ------------------------------------------------------


def test_a_mixed_message_answers_each_item_as_if_it_came_alone(partner, public):
    items = [row.item for row in MIXED]
    (response,) = stream(partner, [items])
    assert [r.index for r in response.results] == list(range(len(MIXED)))
    together = [result_outcome(r) for r in response.results]
    # The same items, one message each, in a stream of their own; and the unary call.
    responses = stream(partner, [[it] for it in items])
    assert [len(r.results) for r in responses] == [1] * len(MIXED)
    assert [r.results[0].index for r in responses] == list(range(len(MIXED)))
    alone = [result_outcome(r.results[0]) for r in responses]
    unary = [unary_outcome(public, it) for it in items]
    for row, got, by_itself, by_unary in zip(MIXED, together, alone, unary, strict=True):
        check_against_the_rules(row, by_unary)
        assert got == by_itself == by_unary, row.title


def test_the_rows_reach_both_verdicts_and_errors():
    # The comparison above is only meaningful with every kind of answer in one message.
    statuses = [row.status for row in MIXED if row.status is not None]
    assert {NO, REVIEW} <= set(statuses)
    assert sum(row.status is None for row in MIXED) >= 10
    assert sum(bool(row.item.subject_binding) and row.status is not None for row in MIXED) >= 3


# --- 250 items in one message -------------------------------------------------------------


def generated_rows() -> list[Row]:
    """Single stays in 120100 around area B, by day, length and place, with the verdict the
    rule gives: a hit needs 4 h or more (M2), inside the window (M1), overlapping the area's
    activity from now-5d (M3: active_from < departure), inside the square or without a
    location (tolerance 0: 4.5 km outside is no hit); then a few invalid items."""
    rows = [Row("clean", item(CLEAN), NO)]
    places = {"inside": INSIDE, "5 km outside": OUTSIDE_5KM, "no location": None}
    for days, hours, (name, place) in itertools.product((1, 5, 7, 16), (2, 4, 6), places.items()):
        arrival = NOW - days * DAY
        departure = arrival + hours * HOUR
        hit = hours >= 4 and days <= 14 and departure > NOW - 5 * DAY and place is not OUTSIDE_5KM
        trip = itinerary(stay("120100", arrival, departure, place))
        made = bound(trip, BINDING) if days == 1 else item(trip)  # some bound, some not
        rows.append(Row(f"{hours} h at now-{days}d, {name}", made, REVIEW if hit else NO))
    rows += [
        Row("backwards", item(backwards()), fields=("stays[0].departure",)),
        Row("bad city", item(backwards("999999")), fields=("stays[0].city_code",)),
        Row("no departure", item(without("departure")), fields=("stays[0].departure",)),
        Row("31-byte binding", bound(RISKY, bytes(31)), fields=("subject_binding",)),
    ]
    return rows


def test_generated_rows_reach_both_verdicts():
    rows = generated_rows()
    assert sum(r.status is REVIEW for r in rows) >= 8
    assert sum(r.status is NO for r in rows) >= 8
    assert len(rows) % 10 != 0  # cycling through them, no two chunks line up alike


def test_a_message_of_250_items_comes_back_in_responses_of_100_and_the_next_goes_on(
    partner, public
):
    rows = generated_rows()
    errors = [r for r in rows if r.status is None]
    # Item i is row i mod len(rows), except invalid ones at the chunks' edges.
    plan = [rows[i % len(rows)] for i in range(351)]
    for i, bad in zip((0, 99, 100, 199, 200, 249, 250, 349, 350), itertools.cycle(errors)):
        plan[i] = bad
    first, second = [r.item for r in plan[:250]], [r.item for r in plan[250:]]
    responses = stream(partner, [first, [], second])
    assert RESULTS_PER_RESPONSE == 100
    assert [len(r.results) for r in responses] == [100, 100, 50, 0, 100, 1]
    results = [x for r in responses for x in r.results]
    assert [x.index for x in results] == list(range(351))
    unary = {row.title: unary_outcome(public, row.item) for row in rows}
    for i, (row, result) in enumerate(zip(plan, results, strict=True)):
        got = result_outcome(result)
        check_against_the_rules(row, got)
        assert got == unary[row.title], (i, row.title)


# --- the risk-area set expired ------------------------------------------------------------


def test_with_the_risk_areas_expired_each_item_gets_what_it_gets_alone(tmp_path):
    """Past the set's expiry no verdict is issued (R6: FAILED_PRECONDITION); an item that
    breaks an input rule gets, in a batch, the error the same item gets alone."""
    pki = make_pki(tmp_path / "pki")
    clock = Clock()
    with tls_server(
        tmp_path / "srv", pki=pki, areas=spec_areas(now=clock.now), partners=[PARTNER], clock=clock
    ) as s:
        clock.now = s.server.bundles.current.expires_at
        credentials = pki.credentials(pki.partner(PARTNER.identity))
        public = pb_grpc.ItineraryVerificationStub(s.client.channel)
        with partner_stub(s.partner_target, credentials) as stub:
            items = [row.item for row in MIXED]
            (response,) = stream(stub, [items])
            together = [result_outcome(r) for r in response.results]
            alone = [result_outcome(stream(stub, [[it]])[0].results[0]) for it in items]
            unary = [unary_outcome(public, it) for it in items]
    for row, got, by_itself, by_unary in zip(MIXED, together, alone, unary, strict=True):
        if row.status is not None:  # a valid item: no verdict without a valid set
            assert by_unary[:2] == ("error", "FAILED_PRECONDITION"), row.title
        assert got == by_itself == by_unary, row.title

"""SPEC.md's public example cases, driven through a real gRPC server on 127.0.0.1:0.

B: one high-risk area, a 1 km square in 120100 (Tianjin), active from now-5d, no end.
Expected verdicts are SPEC.md's table.
"""

from __future__ import annotations

import pytest
from staycheck.geo.itinerary import Status
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token
from staycheck.v1 import verification_pb2 as pb

from tests.helpers import BJ_LAT, BJ_LON, DAY, HOUR, NOW, TJ_LAT, TJ_LON, itinerary, stay

INSIDE = (TJ_LAT, TJ_LON)
# 5 km north of the square's centre: 4.5 km outside its edge.
OUTSIDE_5KM = (TJ_LAT + 5000 / 111_000, TJ_LON)

CASES = [
    (
        "14 days in 110100 only",
        [stay("110100", NOW - 14 * DAY, NOW, (BJ_LAT, BJ_LON))],
        Status.NO_ABNORMALITY,
    ),
    (
        "6 h in 120100 at now-3d inside the square",
        [stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, INSIDE)],
        Status.REVIEW_REQUIRED,
    ),
    (
        "6 h in 120100 at now-3d, 5 km outside the square, tolerance 0",
        [stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR, OUTSIDE_5KM)],
        Status.NO_ABNORMALITY,
    ),
    (
        "2 h in 120100 inside the square at now-3d (city total under 4 h)",
        [stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 2 * HOUR, INSIDE)],
        Status.NO_ABNORMALITY,
    ),
    (
        "6 h in 120100 inside the square at now-7d (before the area was active)",
        [stay("120100", NOW - 7 * DAY, NOW - 7 * DAY + 6 * HOUR, INSIDE)],
        Status.NO_ABNORMALITY,
    ),
    (
        "6 h in 120100 with no location at now-3d (city-level rule)",
        [stay("120100", NOW - 3 * DAY, NOW - 3 * DAY + 6 * HOUR)],
        Status.REVIEW_REQUIRED,
    ),
    (
        "6 h in 120100 inside the square at now-16d (outside the window)",
        [stay("120100", NOW - 16 * DAY, NOW - 16 * DAY + 6 * HOUR, INSIDE)],
        Status.NO_ABNORMALITY,
    ),
]


@pytest.mark.parametrize(("title", "stays", "expected"), CASES, ids=[c[0] for c in CASES])
def test_spec_example(spec_server, title, stays, expected):
    response = spec_server.client.submit(itinerary(*stays))
    assert response.status == int(expected)
    assert response.riskset_version == spec_server.snapshot_version()
    # The token says the same, and verifies offline under the published keys.
    verdict = verify_token(
        response.token, spec_server.client.verdict_keys(), now=NOW, identity=NO_BINDING_CHECK
    )
    assert verdict.status is expected
    assert verdict.issuer == "110000"


def test_response_status_enum_matches_token_status_values():
    assert int(Status.NO_ABNORMALITY) == pb.VERDICT_STATUS_NO_ABNORMALITY
    assert int(Status.REVIEW_REQUIRED) == pb.VERDICT_STATUS_REVIEW_REQUIRED

"""Risk-area bundle invariants (staycheck.geo.bundle) and the authoring tool's input checks
(staycheck.geo.authoring): the pure checks every set of risk areas passes before a server uses
it, whoever signed it.

Table-driven: one row per broken rule, each refused with the exception class SPEC.md
("Risk-area bundle") calls for. Signatures, versions, rollback and expiry of what a server
follows are TUF's, tested attack by attack in tests/integration/test_tuf_repository.py (a
well-signed set that breaks these invariants: ``test_content_tuf_cannot_judge_is_refused_by_ours``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import pytest
import shapely
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.errors import InvalidInputError, MalformedError
from staycheck.v1 import bundle_pb2

from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, collection

VERSION = 4  # of the hand-built bundle below; any positive version is valid


# --------------------------------------------------------------------------------------------
# Bundle invariants (staycheck.geo.bundle), with payloads built by hand from the proto: an
# inconsistent bundle is refused, however well it is signed.
# --------------------------------------------------------------------------------------------

SQUARE = shapely.Polygon(
    [
        (TJ_LON - 0.005, TJ_LAT - 0.005),
        (TJ_LON + 0.005, TJ_LAT - 0.005),
        (TJ_LON + 0.005, TJ_LAT + 0.005),
        (TJ_LON - 0.005, TJ_LAT + 0.005),
    ]
)


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _area(area_id: str = "A1", *, geometry: shapely.Geometry = SQUARE) -> bundle_pb2.RiskArea:
    return bundle_pb2.RiskArea(
        id=area_id,
        city_code="120100",
        level=bundle_pb2.RISK_LEVEL_HIGH,
        geometry_wkb=shapely.to_wkb(geometry),
        active_from=_ts(NOW - 5 * DAY),
    )


def _msg() -> bundle_pb2.RiskAreaBundle:
    return bundle_pb2.RiskAreaBundle(
        version=VERSION,
        issued_at=_ts(NOW - HOUR),
        expires_at=_ts(NOW + DAY),
        policy=bundle_pb2.Policy(
            window_days=14,
            min_stay_seconds=4 * HOUR,
            flagged_levels=[bundle_pb2.RISK_LEVEL_MEDIUM, bundle_pb2.RISK_LEVEL_HIGH],
            tolerance_m=0.0,
        ),
        areas=[_area("A1")],
    )


def _geometry(geometry: shapely.Geometry) -> Callable[[bundle_pb2.RiskAreaBundle], None]:
    def mutate(m: bundle_pb2.RiskAreaBundle) -> None:
        m.areas[0].geometry_wkb = shapely.to_wkb(geometry)

    return mutate


def _set_policy(**fields: Any) -> Callable[[bundle_pb2.RiskAreaBundle], None]:
    def mutate(m: bundle_pb2.RiskAreaBundle) -> None:
        for name, value in fields.items():
            setattr(m.policy, name, value)

    return mutate


def _box(minx: float, miny: float, maxx: float, maxy: float) -> shapely.Polygon:
    return shapely.box(minx, miny, maxx, maxy)


BOW_TIE = shapely.Polygon(
    [
        (TJ_LON, TJ_LAT),
        (TJ_LON + 0.01, TJ_LAT + 0.01),
        (TJ_LON + 0.01, TJ_LAT),
        (TJ_LON, TJ_LAT + 0.01),
        (TJ_LON, TJ_LAT),
    ]
)


def _polygon_wkb(ring: list[tuple[float, float]]) -> bytes:
    """ISO WKB of a one-ring Polygon, little endian, written by hand (no shapely)."""
    out = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring))
    return out + b"".join(struct.pack("<dd", x, y) for x, y in ring)


NAN_SQUARE_WKB = _polygon_wkb([(10, 10), (11, math.nan), (11, 11), (10, 11), (10, 10)])

INVARIANTS: list[tuple[str, Callable[[bundle_pb2.RiskAreaBundle], None]]] = [
    ("duplicate_area_ids", lambda m: m.areas.append(_area("A1"))),
    ("empty_area_id", lambda m: setattr(m.areas[0], "id", "")),
    ("city_code_province_level", lambda m: setattr(m.areas[0], "city_code", "120000")),
    ("city_code_district_level", lambda m: setattr(m.areas[0], "city_code", "120101")),
    ("city_code_five_digits", lambda m: setattr(m.areas[0], "city_code", "12010")),
    ("city_code_fullwidth_digits", lambda m: setattr(m.areas[0], "city_code", "１２０１００")),
    ("city_code_unknown_province", lambda m: setattr(m.areas[0], "city_code", "991000")),
    ("level_unspecified", lambda m: setattr(m.areas[0], "level", 0)),
    ("level_unknown_value", lambda m: setattr(m.areas[0], "level", 9)),
    ("active_from_missing", lambda m: m.areas[0].ClearField("active_from")),
    (
        "active_until_equals_active_from",
        lambda m: m.areas[0].active_until.CopyFrom(m.areas[0].active_from),
    ),
    (
        "active_until_before_active_from",
        lambda m: m.areas[0].active_until.CopyFrom(_ts(NOW - 6 * DAY)),
    ),
    ("geometry_point", _geometry(shapely.Point(TJ_LON, TJ_LAT))),
    ("geometry_linestring", _geometry(shapely.LineString([(TJ_LON, TJ_LAT), (TJ_LON + 1, 40)]))),
    ("geometry_empty_polygon", _geometry(shapely.Polygon())),
    ("geometry_not_wkb", lambda m: setattr(m.areas[0], "geometry_wkb", b"\x01\x02\x03")),
    ("geometry_self_intersecting_bow_tie", _geometry(BOW_TIE)),
    ("longitude_above_180", _geometry(_box(179.5, 10, 181, 11))),
    ("longitude_below_minus_180", _geometry(_box(-181, 10, -179.5, 11))),
    ("latitude_above_90", _geometry(_box(10, 89.5, 11, 91))),
    ("latitude_below_minus_90", _geometry(_box(10, -91, 11, -89.5))),
    ("coordinates_swapped_lat_lon", _geometry(_box(TJ_LAT, TJ_LON, TJ_LAT + 0.01, TJ_LON + 0.01))),
    ("coordinates_nan", lambda m: setattr(m.areas[0], "geometry_wkb", NAN_SQUARE_WKB)),
    ("policy_tolerance_nan", _set_policy(tolerance_m=math.nan)),
    ("policy_tolerance_above_50000", _set_policy(tolerance_m=50_000.5)),
    ("policy_tolerance_infinite", _set_policy(tolerance_m=math.inf)),
    ("policy_tolerance_negative", _set_policy(tolerance_m=-1.0)),
    ("policy_window_days_0", _set_policy(window_days=0)),
    ("policy_window_days_61", _set_policy(window_days=61)),
    ("policy_min_stay_0", _set_policy(min_stay_seconds=0)),
    ("policy_min_stay_longer_than_window", _set_policy(min_stay_seconds=14 * DAY + 1)),
    ("policy_no_flagged_level", lambda m: m.policy.ClearField("flagged_levels")),
    ("policy_unknown_flagged_level", lambda m: m.policy.flagged_levels.append(7)),
    ("version_0", lambda m: setattr(m, "version", 0)),
    ("issued_at_missing", lambda m: m.ClearField("issued_at")),
    ("expires_at_missing", lambda m: m.ClearField("expires_at")),
    ("expires_at_equals_issued_at", lambda m: m.expires_at.CopyFrom(m.issued_at)),
]


def _payload(msg: bundle_pb2.RiskAreaBundle) -> bytes:
    return msg.SerializeToString(deterministic=True)


def test_hand_built_base_bundle_is_accepted():
    """The rows below differ from this bundle in one field only."""
    bundle = RiskAreaBundle.from_payload(_payload(_msg()), digest="ab" * 32)
    assert bundle.version == VERSION
    assert bundle.area_count == 1
    assert bundle.digest == "ab" * 32
    assert (bundle.issued_at, bundle.expires_at) == (NOW - HOUR, NOW + DAY)
    # Boundaries the rows cross are inside the range here.
    edge = _msg()
    edge.policy.tolerance_m = 50_000.0
    edge.policy.window_days = 60
    edge.areas[0].geometry_wkb = shapely.to_wkb(_box(179, 89, 180, 90))
    assert RiskAreaBundle.from_payload(_payload(edge), digest="").policy.tolerance_m == 50_000.0


# shapely warns while reading the NaN row's WKB; the refusal is what is under test.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("mutate", [r[1] for r in INVARIANTS], ids=[r[0] for r in INVARIANTS])
def test_bundle_invariant_refused(mutate):
    msg = _msg()
    mutate(msg)
    with pytest.raises(MalformedError):
        RiskAreaBundle.from_payload(_payload(msg), digest="0" * 64)
    # The message as decoded, not only its bytes: the same rule (what the server merges
    # from the departments' targets is a message).
    with pytest.raises(MalformedError):
        RiskAreaBundle.from_proto(msg, digest="0" * 64)


def test_with_several_faults_the_first_bad_area_is_named():
    """The areas are checked as columns, but the error still names the first area at fault
    (and its first rule broken), as docs/rules.md's "only the first broken rule"."""
    msg = _msg()
    msg.areas[0].city_code = "999999"  # area 0: a code no city has
    msg.areas.append(_area("A1"))  # area 1: a duplicate id (and valid otherwise)
    msg.areas.append(_area("A3"))
    msg.areas[2].ClearField("active_from")  # area 2: no start
    with pytest.raises(MalformedError, match=r"^areas\[0\]\.city_code: "):
        RiskAreaBundle.from_proto(msg, digest="")
    msg.areas[0].city_code = msg.areas[2].city_code
    with pytest.raises(MalformedError, match=r"^areas\[1\]\.id: "):
        RiskAreaBundle.from_proto(msg, digest="")
    msg.areas[1].id = "A2"
    with pytest.raises(MalformedError, match=r"^areas\[2\]\.active_from: required"):
        RiskAreaBundle.from_proto(msg, digest="")


def test_an_open_ended_area_may_start_at_the_last_representable_second():
    """R4: an area without ``active_until`` is active from ``active_from`` on, whatever that
    is; only a given end must come after the start."""
    msg = _msg()
    msg.areas[0].ClearField("active_until")
    msg.areas[0].active_from.seconds = 2**63 - 1
    assert RiskAreaBundle.from_proto(msg, digest="").area_count == 1
    msg.areas[0].active_until.seconds = 2**63 - 1
    with pytest.raises(MalformedError, match=r"^areas\[0\]\.active_until: must be after"):
        RiskAreaBundle.from_proto(msg, digest="")


def test_payload_not_a_risk_area_bundle_is_refused():
    # 0xFF... is a truncated varint tag: no protobuf parser can read it.
    with pytest.raises(MalformedError):
        RiskAreaBundle.from_payload(b"\xff" * 8, digest="")


def test_empty_payload_is_refused():
    # Parses as an empty RiskAreaBundle: version 0, no dates.
    with pytest.raises(MalformedError):
        RiskAreaBundle.from_payload(b"", digest="")


def test_invariant_error_names_the_area_not_the_value():
    msg = _msg()
    msg.areas.append(_area("A2"))
    msg.areas[1].city_code = "987654"
    with pytest.raises(MalformedError) as info:
        RiskAreaBundle.from_payload(msg.SerializeToString(), digest="")
    assert "areas[1]" in str(info.value)
    assert "987654" not in str(info.value)


# --------------------------------------------------------------------------------------------
# The authoring tool: a bad feature is named by index and id, and the rule it breaks.
# --------------------------------------------------------------------------------------------


def _feature(fid: str = "TJ-1", **props: Any) -> dict[str, Any]:
    d = 0.005
    ring = [
        [TJ_LON - d, TJ_LAT - d],
        [TJ_LON + d, TJ_LAT - d],
        [TJ_LON + d, TJ_LAT + d],
        [TJ_LON - d, TJ_LAT + d],
        [TJ_LON - d, TJ_LAT - d],
    ]
    properties: dict[str, Any] = {
        "id": fid,
        "city_code": "120100",
        "level": "high",
        "active_from": "2026-11-13T09:46:40Z",
        "active_until": None,
    }
    properties.update(props)
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": properties,
    }


def _without(key: str) -> dict[str, Any]:
    f = _feature("BAD-1")
    del f["properties"][key]
    return f


def _with_ring(ring: list[list[float]]) -> dict[str, Any]:
    f = _feature("BAD-1")
    f["geometry"]["coordinates"] = [ring]
    return f


BOW_TIE_RING = [[x, y] for x, y in BOW_TIE.exterior.coords]
SWAPPED_RING = [[lat, lon] for lon, lat in _feature()["geometry"]["coordinates"][0]]

AUTHORING: list[tuple[str, dict[str, Any], str, str]] = [
    # (row, bad feature, field suffix, value that must not appear in the message)
    ("missing_level", _without("level"), "level", ""),
    ("bad_level", _feature("BAD-1", level="severe"), "level", "severe"),
    ("level_not_a_string", _feature("BAD-1", level=3), "level", ""),
    ("time_not_rfc3339", _feature("BAD-1", active_from="last tuesday"), "active_from", "tuesday"),
    (
        "time_without_offset",
        _feature("BAD-1", active_from="2026-11-13T09:46:40"),
        "active_from",
        "09:46:40",
    ),
    ("time_month_13", _feature("BAD-1", active_from="2026-13-01T00:00:00Z"), "active_from", ""),
    ("active_from_missing", _without("active_from"), "active_from", ""),
    (
        "active_until_bad",
        _feature("BAD-1", active_until="2026-11-31T00:00:00Z"),
        "active_until",
        "2026-11-31",
    ),
    (
        "active_until_before_active_from",
        _feature("BAD-1", active_until="2026-11-12T00:00:00Z"),
        "active_until",
        "2026-11-12",
    ),
    ("bad_city_code", _feature("BAD-1", city_code="120000"), "city_code", "120000"),
    ("self_intersecting_polygon", _with_ring(BOW_TIE_RING), "geometry", ""),
    ("lat_lon_swapped_out_of_range", _with_ring(SWAPPED_RING), "geometry", "117.1"),
]


@pytest.mark.parametrize(
    ("bad", "suffix", "secret"), [r[1:] for r in AUTHORING], ids=[r[0] for r in AUTHORING]
)
def test_build_bundle_input_error_names_feature_index_and_id(bad, suffix, secret):
    areas = collection(_feature("TJ-1"), bad)
    with pytest.raises(InvalidInputError) as info:
        build_bundle(areas, version=1, issued_at=NOW - HOUR, expires_at=NOW + DAY, policy=Policy())
    assert info.value.field == f"features[1] (id BAD-1).{suffix}"
    if secret:
        assert secret not in str(info.value)


def test_build_bundle_good_collection_is_accepted():
    """The authoring rows differ from this collection in their second feature only."""
    areas = collection(_feature("TJ-1"), _feature("BAD-1"))
    msg = build_bundle(
        areas, version=1, issued_at=NOW - HOUR, expires_at=NOW + DAY, policy=Policy()
    )
    assert [a.id for a in msg.areas] == ["TJ-1", "BAD-1"]
    assert RiskAreaBundle.from_proto(msg, digest="").area_count == 2


def test_build_bundle_duplicate_feature_id():
    areas = collection(_feature("TJ-1"), _feature("TJ-1"))
    with pytest.raises(InvalidInputError) as info:
        build_bundle(areas, version=1, issued_at=NOW - HOUR, expires_at=NOW + DAY, policy=Policy())
    assert info.value.field.startswith("features[1] (id TJ-1)")

"""Trust rules for risk-area bundles (staycheck.trust.bundles), bundle invariants
(staycheck.geo.bundle) and the authoring tool's input checks (staycheck.geo.authoring).

Table-driven after python-tuf's ``test_trusted_metadata_set.py``: one row per attack with
the exception class SPEC.md ("Risk-area bundle") and STYLE.md ("Rollback and freeze rules")
call for. After every refusal the bundle in use must be the one accepted before it.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
import shapely
from google.protobuf.timestamp_pb2 import Timestamp
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.errors import (
    BadVersionError,
    EqualVersionError,
    ExpiredError,
    InvalidInputError,
    MalformedError,
    SignedDataError,
    UnknownKeyError,
)
from staycheck.trust import cose
from staycheck.trust.bundles import BUNDLE_CONTENT_TYPE, TrustedBundleSet, VersionFloor, sign_bundle
from staycheck.trust.keys import AuthorityKeySet, Ed25519Signer, KeySet
from staycheck.v1 import bundle_pb2

from tests.helpers import (
    DAY,
    HOUR,
    NOW,
    TJ_LAT,
    TJ_LON,
    collection,
    signed_bundle,
    spec_bundle,
    square_feature,
)

SKEW_S = 300  # TrustedBundleSet's default max_skew_s; SPEC/formats.md: "5 minutes"
BASE_VERSION = 3  # the bundle in use before each attack


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def authority_keys(*signers: Ed25519Signer) -> AuthorityKeySet:
    return AuthorityKeySet(KeySet([s.public_key for s in signers]))


def sign_with_header(payload: bytes, signer: Ed25519Signer, header: dict[int, Any]) -> bytes:
    """A COSE_Sign1 built by hand (not through staycheck.trust.bundles.sign_bundle), properly
    signed."""
    protected = cose.encode_protected(header)
    signature = signer.sign(cose.sig_structure(protected, payload))
    return cose.encode_sign1(protected, payload, signature)


def payload_of(data: bytes) -> bytes:
    return cbor2.loads(data).value[2]


def flip(data: bytes, position: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Attacks on the trusted set: each row builds the attacking bytes from the authority's key.
# The set already holds BASE_VERSION; rows that are not about versions use BASE_VERSION + 1.
# --------------------------------------------------------------------------------------------

NEXT = BASE_VERSION + 1


def _unknown_key(authority: Ed25519Signer) -> bytes:
    return spec_bundle(Ed25519Signer.generate(), version=NEXT)


def _rollback(authority: Ed25519Signer) -> bytes:
    return spec_bundle(authority, version=BASE_VERSION - 1)


def _equal_version_other_content(authority: Ed25519Signer) -> bytes:
    return spec_bundle(authority, version=BASE_VERSION, expires_at=NOW + 3 * DAY)


def _expired(authority: Ed25519Signer) -> bytes:
    return spec_bundle(authority, version=NEXT, issued_at=NOW - 3 * DAY, expires_at=NOW - 1)


def _expires_exactly_now(authority: Ed25519Signer) -> bytes:
    # TUF: expired when reference_time >= expires.
    return spec_bundle(authority, version=NEXT, issued_at=NOW - 3 * DAY, expires_at=NOW)


def _issued_in_the_future(authority: Ed25519Signer) -> bytes:
    return spec_bundle(authority, version=NEXT, issued_at=NOW + SKEW_S + 1)


def _truncated_half(authority: Ed25519Signer) -> bytes:
    data = spec_bundle(authority, version=NEXT)
    return data[: len(data) // 2]


def _truncated_last_byte(authority: Ed25519Signer) -> bytes:
    return spec_bundle(authority, version=NEXT)[:-1]


def _trailing_bytes(authority: Ed25519Signer) -> bytes:
    # cose.py: "refusing anything that is not exactly a tagged four-element array".
    return spec_bundle(authority, version=NEXT) + b"\x00"


def _wrong_content_type(authority: Ed25519Signer) -> bytes:
    payload = payload_of(spec_bundle(authority, version=NEXT))
    header = {
        cose.HEADER_ALG: cose.ALG_EDDSA,
        cose.HEADER_CONTENT_TYPE: "application/cbor",
        cose.HEADER_KID: authority.kid,
    }
    return sign_with_header(payload, authority, header)


def _no_content_type(authority: Ed25519Signer) -> bytes:
    # Shaped like a verdict token's header: must never be taken for a bundle.
    payload = payload_of(spec_bundle(authority, version=NEXT))
    header = {cose.HEADER_ALG: cose.ALG_EDDSA, cose.HEADER_KID: authority.kid}
    return sign_with_header(payload, authority, header)


def _alg_es256_resigned(authority: Ed25519Signer) -> bytes:
    # docs/formats.md: the bundle header is {1: -8, 3: ..., 4: kid}; the algorithm comes from
    # the key set, so a header claiming another algorithm is not ours.
    payload = payload_of(spec_bundle(authority, version=NEXT))
    header = {
        cose.HEADER_ALG: cose.ALG_ES256,
        cose.HEADER_CONTENT_TYPE: BUNDLE_CONTENT_TYPE,
        cose.HEADER_KID: authority.kid,
    }
    return sign_with_header(payload, authority, header)


def _garbage(authority: Ed25519Signer) -> bytes:
    return b"this is not a signed bundle"


def _empty(authority: Ed25519Signer) -> bytes:
    return b""


def _cbor_but_not_cose(authority: Ed25519Signer) -> bytes:
    return cbor2.dumps({"version": NEXT})


def _payload_not_a_bundle(authority: Ed25519Signer) -> bytes:
    header = {
        cose.HEADER_ALG: cose.ALG_EDDSA,
        cose.HEADER_CONTENT_TYPE: BUNDLE_CONTENT_TYPE,
        cose.HEADER_KID: authority.kid,
    }
    # 0xFF... is a truncated varint tag: no protobuf parser can read it.
    return sign_with_header(b"\xff" * 8, authority, header)


def _payload_empty_message(authority: Ed25519Signer) -> bytes:
    header = {
        cose.HEADER_ALG: cose.ALG_EDDSA,
        cose.HEADER_CONTENT_TYPE: BUNDLE_CONTENT_TYPE,
        cose.HEADER_KID: authority.kid,
    }
    # Parses as an empty RiskAreaBundle: version 0, no dates.
    return sign_with_header(b"", authority, header)


def _cose_without_tag(authority: Ed25519Signer) -> bytes:
    return cbor2.dumps(list(cbor2.loads(spec_bundle(authority, version=NEXT)).value))


def _unprotected_header_not_empty(authority: Ed25519Signer) -> bytes:
    protected, _, payload, signature = cbor2.loads(spec_bundle(authority, version=NEXT)).value
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {4: b"x"}, payload, signature]))


ATTACKS: list[tuple[str, Callable[[Ed25519Signer], bytes], type[SignedDataError]]] = [
    ("unknown_key", _unknown_key, UnknownKeyError),
    ("rollback_lower_version", _rollback, BadVersionError),
    ("equal_version_other_content", _equal_version_other_content, EqualVersionError),
    ("expired", _expired, ExpiredError),
    ("expires_exactly_now", _expires_exactly_now, ExpiredError),
    ("issued_in_the_future_beyond_skew", _issued_in_the_future, ExpiredError),
    ("truncated_half", _truncated_half, MalformedError),
    ("truncated_last_byte", _truncated_last_byte, MalformedError),
    ("trailing_bytes", _trailing_bytes, MalformedError),
    ("wrong_content_type", _wrong_content_type, MalformedError),
    ("no_content_type_verdict_shaped", _no_content_type, MalformedError),
    ("alg_es256_resigned", _alg_es256_resigned, SignedDataError),
    ("garbage_bytes", _garbage, MalformedError),
    ("empty_file", _empty, MalformedError),
    ("cbor_but_not_cose", _cbor_but_not_cose, MalformedError),
    ("cose_without_tag_18", _cose_without_tag, MalformedError),
    ("unprotected_header_not_empty", _unprotected_header_not_empty, MalformedError),
    ("payload_not_a_risk_area_bundle", _payload_not_a_bundle, MalformedError),
    ("payload_empty_message", _payload_empty_message, MalformedError),
]


@pytest.fixture
def trusted(authority: Ed25519Signer) -> tuple[TrustedBundleSet, bytes]:
    """A set holding BASE_VERSION, and the bytes of that bundle."""
    tset = TrustedBundleSet(authority_keys(authority))
    base = spec_bundle(authority, version=BASE_VERSION)
    tset.update(base, now=NOW)
    return tset, base


def assert_unchanged(tset: TrustedBundleSet, base: bytes) -> None:
    assert tset.current is not None
    assert tset.current.version == BASE_VERSION
    assert tset.current.digest == sha256_hex(base)
    assert tset.floor == VersionFloor(BASE_VERSION, sha256_hex(base), tset.current.signed_by)


@pytest.mark.parametrize(
    ("make", "expected"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS]
)
def test_attack_is_refused_and_current_bundle_kept(authority, trusted, make, expected):
    tset, base = trusted
    data = make(authority)
    with pytest.raises(expected):
        tset.update(data, now=NOW)
    assert_unchanged(tset, base)


def test_rollback_is_bad_version_not_equal_version(authority, trusted):
    tset, base = trusted
    with pytest.raises(BadVersionError) as info:
        tset.update(spec_bundle(authority, version=BASE_VERSION - 1), now=NOW)
    assert not isinstance(info.value, EqualVersionError)
    assert_unchanged(tset, base)


def test_replay_of_the_bundle_in_use_is_equal_version(trusted):
    tset, base = trusted
    with pytest.raises(EqualVersionError):
        tset.update(base, now=NOW)
    assert_unchanged(tset, base)


def _flip_positions(data: bytes) -> dict[str, int]:
    protected, _, payload, signature = cbor2.loads(data).value
    p_off = data.index(protected)
    pl_off = data.index(payload)
    assert len(signature) == 64 and data.endswith(signature)
    s_off = len(data) - 64
    return {
        "tag": 0,
        "header_first": p_off,
        "header_middle": p_off + len(protected) // 2,
        "header_last": p_off + len(protected) - 1,
        "payload_start": pl_off,
        "payload_middle": pl_off + len(payload) // 2,
        "payload_end": pl_off + len(payload) - 1,
        "signature_first": s_off,
        "signature_middle": s_off + 32,
        "signature_last": len(data) - 1,
    }


FLIP_POSITIONS = list(_flip_positions(spec_bundle(Ed25519Signer.generate())))


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF], ids=["bit0", "bit7", "all_bits"])
@pytest.mark.parametrize("where", FLIP_POSITIONS)
def test_flipped_byte_is_refused(authority, trusted, where, mask):
    tset, base = trusted
    data = spec_bundle(authority, version=NEXT)
    position = _flip_positions(data)[where]
    with pytest.raises(SignedDataError):
        tset.update(flip(data, position, mask), now=NOW)
    assert_unchanged(tset, base)
    # The unflipped bytes are good: the refusal came from the flip.
    assert tset.update(data, now=NOW).version == NEXT


def test_issued_within_the_skew_is_accepted(authority, trusted):
    tset, _ = trusted
    data = spec_bundle(authority, version=NEXT, issued_at=NOW + SKEW_S)
    assert tset.update(data, now=NOW).version == NEXT


def test_higher_version_is_accepted_and_moves_the_floor(authority, trusted):
    tset, _ = trusted
    data = spec_bundle(authority, version=NEXT)
    bundle = tset.update(data, now=NOW)
    assert bundle is tset.current
    assert bundle.version == NEXT
    assert bundle.digest == sha256_hex(data)
    assert tset.floor == VersionFloor(NEXT, sha256_hex(data), authority.kid.hex())
    assert bundle.signed_by == authority.kid.hex()


def test_first_bundle_accepted_by_an_empty_set(authority):
    tset = TrustedBundleSet(authority_keys(authority))
    assert tset.current is None
    data = spec_bundle(authority, version=1)
    assert tset.update(data, now=NOW).digest == sha256_hex(data)


def test_refusal_on_an_empty_set_leaves_it_empty(authority):
    tset = TrustedBundleSet(authority_keys(authority))
    with pytest.raises(UnknownKeyError):
        tset.update(spec_bundle(Ed25519Signer.generate()), now=NOW)
    assert tset.current is None
    assert tset.floor == VersionFloor()


def test_second_trusted_authority_key_is_accepted(authority):
    other = Ed25519Signer.generate()
    tset = TrustedBundleSet(authority_keys(authority, other))
    assert tset.update(spec_bundle(other, version=1), now=NOW).version == 1


def test_oversized_data_is_refused_before_parsing(authority, trusted, monkeypatch):
    _, base = trusted
    # Two areas: larger than the one-area bundle in use, so the limit lets that one in.
    data = signed_bundle(
        authority,
        [
            square_feature("B1", active_from=NOW - 5 * DAY),
            square_feature("B2", active_from=NOW - 4 * DAY),
        ],
        version=NEXT,
    )
    assert len(data) > len(base)
    small = TrustedBundleSet(authority_keys(authority), max_size=len(data) - 1)
    small.update(base, now=NOW)
    calls: list[bytes] = []
    real_loads = cbor2.loads

    def spy(data: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(data)
        return real_loads(data, *args, **kwargs)

    monkeypatch.setattr(cose.cbor2, "loads", spy)
    with pytest.raises(MalformedError):
        small.update(data, now=NOW)
    assert calls == []  # refused on its size alone
    assert_unchanged(small, base)
    # Exactly at the limit is fine.
    at_limit = TrustedBundleSet(authority_keys(authority), max_size=len(data))
    assert at_limit.update(data, now=NOW).version == NEXT


# --------------------------------------------------------------------------------------------
# The floor: the highest version accepted by an earlier run (python-tuf keeps it on disk).
# --------------------------------------------------------------------------------------------


@pytest.fixture
def floor5(authority: Ed25519Signer) -> tuple[bytes, VersionFloor]:
    v5 = spec_bundle(authority, version=5)
    return v5, VersionFloor(5, sha256_hex(v5), authority.kid.hex())


def test_floor_refuses_a_lower_version(authority, floor5):
    _, floor = floor5
    tset = TrustedBundleSet(authority_keys(authority), floor=floor)
    with pytest.raises(BadVersionError):
        tset.update(spec_bundle(authority, version=4), now=NOW)
    assert tset.current is None
    assert tset.floor == floor


def test_floor_refuses_a_different_bundle_of_the_same_version(authority, floor5):
    v5, floor = floor5
    other_v5 = spec_bundle(authority, version=5, expires_at=NOW + 3 * DAY)
    assert other_v5 != v5
    tset = TrustedBundleSet(authority_keys(authority), floor=floor)
    with pytest.raises(BadVersionError):
        tset.update(other_v5, now=NOW)
    assert tset.current is None
    assert tset.floor == floor


def test_floor_accepts_the_very_same_bundle_again_after_restart(authority, floor5):
    v5, floor = floor5
    tset = TrustedBundleSet(authority_keys(authority), floor=floor)
    bundle = tset.update(v5, now=NOW)
    assert bundle.version == 5
    assert bundle.digest == floor.digest
    assert tset.floor == floor
    # ...and only once in this run: a replay is now an equal version.
    with pytest.raises(EqualVersionError):
        tset.update(v5, now=NOW)


def test_floor_accepts_a_higher_version(authority, floor5):
    v5, floor = floor5
    v6 = spec_bundle(authority, version=6)
    fresh = TrustedBundleSet(authority_keys(authority), floor=floor)
    assert fresh.update(v6, now=NOW).version == 6
    assert fresh.floor == VersionFloor(6, sha256_hex(v6), authority.kid.hex())
    # After the restart case too.
    restarted = TrustedBundleSet(authority_keys(authority), floor=floor)
    restarted.update(v5, now=NOW)
    assert restarted.update(v6, now=NOW).version == 6


def test_floor_same_bytes_still_need_to_be_unexpired(authority):
    v5 = spec_bundle(authority, version=5, issued_at=NOW - 3 * DAY, expires_at=NOW - HOUR)
    tset = TrustedBundleSet(authority_keys(authority), floor=VersionFloor(5, sha256_hex(v5)))
    with pytest.raises(ExpiredError):
        tset.update(v5, now=NOW)
    assert tset.current is None


# --------------------------------------------------------------------------------------------
# Bundle invariants (staycheck.geo.bundle), with payloads built by hand from the proto, signed by
# the authority and offered to the set: a well-signed but inconsistent bundle is still refused.
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
        version=NEXT,
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


def _sign_msg(msg: bundle_pb2.RiskAreaBundle, signer: Ed25519Signer) -> bytes:
    return sign_bundle(msg.SerializeToString(deterministic=True), signer)


def test_hand_built_base_bundle_is_accepted(authority, trusted):
    """The rows below differ from this bundle in one field only."""
    tset, _ = trusted
    bundle = tset.update(_sign_msg(_msg(), authority), now=NOW)
    assert bundle.version == NEXT
    assert bundle.area_count == 1
    # Boundaries the rows cross are inside the range here.
    edge = _msg()
    edge.version = NEXT + 1
    edge.policy.tolerance_m = 50_000.0
    edge.policy.window_days = 60
    edge.areas[0].geometry_wkb = shapely.to_wkb(_box(179, 89, 180, 90))
    assert tset.update(_sign_msg(edge, authority), now=NOW).policy.tolerance_m == 50_000.0


# shapely warns while reading the NaN row's WKB; the refusal is what is under test.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("mutate", [r[1] for r in INVARIANTS], ids=[r[0] for r in INVARIANTS])
def test_bundle_invariant_refused(authority, trusted, mutate):
    tset, base = trusted
    msg = _msg()
    mutate(msg)
    payload = msg.SerializeToString(deterministic=True)
    with pytest.raises(MalformedError):
        RiskAreaBundle.from_payload(payload, digest="0" * 64)
    with pytest.raises(MalformedError):
        tset.update(sign_bundle(payload, authority), now=NOW)
    assert_unchanged(tset, base)


def test_invariant_error_names_the_area_not_the_value(authority):
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


def test_build_bundle_good_collection_is_accepted(authority):
    """The authoring rows differ from this collection in their second feature only."""
    areas = collection(_feature("TJ-1"), _feature("BAD-1"))
    msg = build_bundle(
        areas, version=1, issued_at=NOW - HOUR, expires_at=NOW + DAY, policy=Policy()
    )
    assert [a.id for a in msg.areas] == ["TJ-1", "BAD-1"]
    tset = TrustedBundleSet(authority_keys(authority))
    assert tset.update(_sign_msg(msg, authority), now=NOW).area_count == 2


def test_build_bundle_duplicate_feature_id():
    areas = collection(_feature("TJ-1"), _feature("TJ-1"))
    with pytest.raises(InvalidInputError) as info:
        build_bundle(areas, version=1, issued_at=NOW - HOUR, expires_at=NOW + DAY, policy=Policy())
    assert info.value.field.startswith("features[1] (id TJ-1)")


def test_signed_bundle_helper_matches_the_hand_built_layout(authority):
    """The helper's bundles carry the documented protected header (docs/formats.md)."""
    data = signed_bundle(authority, [])
    protected = cbor2.loads(cbor2.loads(data).value[0])
    assert protected == {1: -8, 3: BUNDLE_CONTENT_TYPE, 4: authority.kid}


def test_floor_of_another_authority_key_does_not_apply(authority):
    # Versions are a sequence per authority key: after a key rotation (the recovery from a
    # fast-forward attack) the new key's bundles start over.
    old = Ed25519Signer.generate()
    stale_floor = VersionFloor(2**64 - 1, "ab" * 32, old.kid.hex())
    tset = TrustedBundleSet(authority_keys(authority), floor=stale_floor)
    assert tset.update(spec_bundle(authority, version=1), now=NOW).version == 1

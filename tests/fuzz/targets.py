"""Fuzz targets, shared by ``tests/fuzz/test_fuzz.py`` (Hypothesis, bounded, in ``make test``)
and ``bench/fuzz.py`` (atheris or Hypothesis, for as long as asked).

Two targets, and what "a finding" means for each:

- :func:`request_path`: bytes -> ``SubmitItineraryRequest.FromString`` (a protobuf
  ``DecodeError`` is the expected refusal at that step) ->
  ``staycheck.server.service.stays_from_proto``
  -> ``staycheck.geo.itinerary.validate`` -> ``staycheck.geo.matching.evaluate`` on small real
  bundles, the path a request takes in the servicer, without gRPC. Any exception that is not a
  ``staycheck.geo.errors.Error`` is a finding; so is an ``InvalidInputError`` whose message is not
  ``field: rule`` with a known field path, or whose rule quotes a number that is not one of
  the documented limits (a leaked value).
- :func:`token_path`: text -> ``staycheck.trust.verifier.verify_token`` with a real key set. Any
  exception that is not a ``staycheck.geo.errors.SignedDataError`` is a finding; so is an accepted
  token whose verdict differs from the one that was signed.

Also here: the small bundles, a real signed token, and Hypothesis strategies for
structured inputs (protobuf stays with arbitrary floats and integers, COSE/CBOR tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import cbor2
from google.protobuf.message import DecodeError
from hypothesis import strategies as st
from staycheck.cli.samples import cities
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy, RiskAreaBundle
from staycheck.geo.errors import Error, InvalidInputError, SignedDataError
from staycheck.geo.itinerary import DEFAULT_LIMITS, Status, validate
from staycheck.geo.matching import evaluate
from staycheck.server.service import stays_from_proto
from staycheck.trust.base45 import ALPHABET, b45decode, b45encode
from staycheck.trust.binding import BindingParameters
from staycheck.trust.keys import Ed25519Signer, KeySet, PublicKey, VerdictKeySet
from staycheck.trust.verdict import TokenSigner, Verdict, issue_verdict
from staycheck.trust.verifier import NO_BINDING_CHECK, verify_token
from staycheck.v1 import verification_pb2 as pb

from tests.helpers import DAY, HOUR, NOW, TJ_LAT, TJ_LON, collection, square_feature

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
REAL_CODES = sorted(cities())

# --- the request path -------------------------------------------------------------------


def _bundle(tolerance_m: float) -> RiskAreaBundle:
    """SPEC.md's square B plus areas at the edges of the map: on the antimeridian, near
    the pole, and a low one (never flagged)."""
    features = [
        square_feature("B", active_from=NOW - 5 * DAY),
        square_feature("M", level="medium", lat=TJ_LAT + 0.05, lon=TJ_LON, active_from=0),
        square_feature(
            "E", city_code="650100", lat=0.0, lon=179.99, side_m=2000, active_from=NOW - DAY
        ),
        square_feature("N", city_code="230100", lat=89.98, lon=0.0, active_from=NOW - 9 * DAY),
        square_feature("L", level="low", city_code="110100", lat=39.9, lon=116.4, active_from=0),
    ]
    msg = build_bundle(
        collection(*features),
        version=1,
        issued_at=NOW - HOUR,
        expires_at=NOW + DAY,
        policy=Policy(tolerance_m=tolerance_m),
    )
    return RiskAreaBundle.from_proto(msg, digest="0" * 64)


BUNDLES = [_bundle(0.0), _bundle(750.0)]

FIELD = re.compile(
    r"stays(\[\d+\](\.(city_code|arrival|departure|location(\.(latitude|longitude))?))?)?"
)
# Numbers a rule text may hold: the documented limits (docs/limits.md), nothing a caller sent.
ALLOWED_NUMBERS = {
    str(DEFAULT_LIMITS.max_stays),
    str(DEFAULT_LIMITS.max_future_s),
    "1970",
    "01",
    "2260",
    "90",
    "180",
    "24",
}


def check_refusal(e: InvalidInputError, codes: list[str]) -> None:
    """A refusal names a field and a fixed rule, and quotes nothing of the input."""
    assert str(e) == f"{e.field}: {e.rule}", str(e)
    assert FIELD.fullmatch(e.field), e.field
    numbers = set(re.findall(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?", e.rule))
    assert numbers <= ALLOWED_NUMBERS, (e.rule, numbers - ALLOWED_NUMBERS)
    for code in codes:
        if len(code) >= 8:
            assert code not in e.rule, e.rule


def run_request(request: pb.SubmitItineraryRequest, *, now: int = NOW) -> Status | None:
    """The servicer's steps after parsing; None when refused (with a checked refusal)."""
    codes = [s.city_code for s in request.itinerary.stays]
    statuses = []
    for bundle in BUNDLES:
        try:
            stays = stays_from_proto(request.itinerary, limits=DEFAULT_LIMITS)
            validate(stays, now=now, limits=DEFAULT_LIMITS)
            status = evaluate(stays, bundle, now=now)
        except InvalidInputError as e:
            check_refusal(e, codes)
            return None
        except Error:
            return None
        assert isinstance(status, Status)
        statuses.append(status)
    # A tolerance only adds hits (SPEC.md: "inside or within tolerance_m").
    if statuses[0] is Status.REVIEW_REQUIRED:
        assert statuses[1] is Status.REVIEW_REQUIRED
    return statuses[0]


def request_path(data: bytes) -> Status | None:
    try:
        request = pb.SubmitItineraryRequest.FromString(data)
    except DecodeError:
        return None
    return run_request(request)


# Biased coins that Hypothesis does not pull towards one side while generating.
_mostly = st.sampled_from([True, True, True, True, False])
_rarely = st.sampled_from([False] * 9 + [True])
# Structured requests: protobuf stays with arbitrary values, and values near the edges.
_any_float = st.floats(allow_nan=True, allow_infinity=True)
_edge_floats = st.sampled_from([90.0, -90.0, 180.0, -180.0, 0.0, -0.0, 89.99, 179.99, -179.99])
latitudes = st.one_of(_any_float, _edge_floats, st.floats(TJ_LAT - 0.01, TJ_LAT + 0.06))
longitudes = st.one_of(_any_float, _edge_floats, st.floats(TJ_LON - 0.01, TJ_LON + 0.01))
seconds = st.one_of(
    st.integers(NOW - 20 * DAY, NOW + 2 * DAY),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([0, -1, 1, INT64_MIN, INT64_MAX, NOW, NOW + DAY, NOW + DAY + 1]),
)
nanos = st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1))
city_codes = st.one_of(
    st.sampled_from([*REAL_CODES, "650100", "230100"]),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.text(max_size=12),
)


@st.composite
def stays(draw: Callable[..., Any]) -> pb.Stay:
    stay = pb.Stay(city_code=draw(city_codes))
    for name in ("arrival", "departure"):
        if draw(_mostly):  # mostly present
            getattr(stay, name).seconds = draw(seconds)
            getattr(stay, name).nanos = draw(nanos)
    if draw(st.booleans()):
        stay.location.latitude = draw(latitudes)
        stay.location.longitude = draw(longitudes)
    return stay


@st.composite
def plausible_stays(draw: Callable[..., Any]) -> pb.Stay:
    """Stays that mostly pass validation, so that matching runs on odd but valid values."""
    arrival = draw(st.integers(NOW - 16 * DAY, NOW))
    odd = draw(_rarely)
    departure = arrival + draw(st.integers(-5, 5) if odd else st.integers(1, 2 * DAY))
    stay = pb.Stay(
        city_code=draw(st.sampled_from(["120100", "650100", "230100", *REAL_CODES])),
        arrival={"seconds": arrival, "nanos": draw(nanos)},
        departure={"seconds": departure},
    )
    if draw(_mostly):
        near = draw(st.sampled_from([(TJ_LAT, TJ_LON), (TJ_LAT + 0.05, TJ_LON), (0.0, 179.99)]))
        edges = [(89.98, 0.0), (89.9999, 179.9999), (-89.9999, -179.9999)]
        near = draw(st.sampled_from([near, *edges]))
        stay.location.latitude = max(-90, min(90, near[0] + draw(st.floats(-0.02, 0.02))))
        stay.location.longitude = max(-180, min(180, near[1] + draw(st.floats(-0.02, 0.02))))
        if draw(_rarely):
            stay.location.latitude = draw(latitudes)
            stay.location.longitude = draw(longitudes)
    return stay


@st.composite
def requests(draw: Callable[..., Any]) -> pb.SubmitItineraryRequest:
    if draw(_mostly):
        items = draw(st.lists(plausible_stays(), max_size=12))
        if not draw(_mostly):
            items.insert(draw(st.integers(0, len(items))), draw(stays()))
    else:
        items = draw(st.lists(stays(), max_size=12))
    binding = draw(st.one_of(st.just(b""), st.binary(min_size=32, max_size=32), st.binary()))
    request = pb.SubmitItineraryRequest(
        itinerary=pb.Itinerary(stays=items), subject_binding=binding
    )
    if draw(st.booleans()):
        request.binding_parameters.CopyFrom(
            pb.BindingParameters(
                memory_kib=draw(st.integers(0, 2**32 - 1)),
                iterations=draw(st.integers(0, 2**32 - 1)),
                lanes=draw(st.integers(0, 2**32 - 1)),
            )
        )
    return request


def seed_requests() -> list[bytes]:
    """Valid requests to start mutating from."""
    risky = pb.Stay(
        city_code="120100",
        location=pb.LatLng(latitude=TJ_LAT, longitude=TJ_LON),
        arrival={"seconds": NOW - 3 * DAY},
        departure={"seconds": NOW - 3 * DAY + 6 * HOUR},
    )
    city = pb.Stay(
        city_code="130600",
        arrival={"seconds": NOW - 2 * DAY},
        departure={"seconds": NOW - DAY},
    )
    return [
        pb.SubmitItineraryRequest(itinerary=pb.Itinerary(stays=s)).SerializeToString()
        for s in ([risky], [city], [risky, city], [])
    ]


# --- the token verifier -----------------------------------------------------------------

SIGNER = Ed25519Signer.generate()
ISSUER = "110000"
KEYS = VerdictKeySet(
    KeySet(
        [PublicKey.from_ed25519(SIGNER.public_key.key, not_before=NOW - DAY, not_after=None)],
        issuer=ISSUER,
    )
)
VERDICT = issue_verdict(
    Status.REVIEW_REQUIRED,
    now=NOW,
    issuer=ISSUER,
    riskset_version=3,
    bundle_expires_at=NOW + DAY,
    binding=bytes(range(32)),
    binding_params=BindingParameters(),
)
TOKEN = TokenSigner(SIGNER).sign(VERDICT)


def token_path(text: str, *, now: int = NOW + HOUR) -> Verdict | None:
    """Verify ``text``; None when refused. An accepted token must say what was signed."""
    try:
        verdict = verify_token(text, KEYS, now=now, identity=NO_BINDING_CHECK)
    except SignedDataError as e:
        body = text.strip()[4:]
        if len(body) >= 24:
            assert body[:24] not in str(e), str(e)
        return None
    assert verdict == VERDICT, (verdict, VERDICT)
    return verdict


def cose_token(protected: Any, payload: Any, signature: bytes, *, tag: int = 18) -> str:
    """A token from parts; ``protected`` and ``payload`` are CBOR-encoded if not bytes."""
    p = protected if isinstance(protected, bytes) else cbor2.dumps(protected)
    body = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
    return "SC1:" + b45encode(cbor2.dumps(cbor2.CBORTag(tag, [p, {}, body, signature])))


cbor_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.binary(max_size=40),
        st.text(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.integers(-70_000, 10), children, max_size=5),
    ),
    max_leaves=12,
)
_claim_keys = st.sampled_from([1, 4, 6, 7, -65537, 2, 3, 5, 8, -65536, -65538])
claims_maps = st.dictionaries(_claim_keys, cbor_values, max_size=7)


@st.composite
def near_valid_claims(draw: Callable[..., Any]) -> dict[int, Any]:
    """The signed verdict's claims with some keys dropped, added or given odd values."""
    claims: dict[int, Any] = dict(VERDICT.claims())
    for key in draw(st.lists(_claim_keys, max_size=3)):
        if draw(st.booleans()):
            claims.pop(key, None)
        else:
            claims[key] = draw(cbor_values)
    sc = dict(claims.get(-65537, {})) if isinstance(claims.get(-65537), dict) else None
    if sc is not None:
        for key in draw(st.lists(st.integers(0, 4), max_size=2)):
            sc[key] = draw(cbor_values)
        claims[-65537] = sc
    return claims


@st.composite
def structured_tokens(draw: Callable[..., Any]) -> str:
    valid_protected = {1: -8, 4: SIGNER.kid}
    if draw(_mostly):  # mostly a valid header, so that the claims get decoded
        protected: Any = valid_protected
    else:
        protected = draw(
            st.one_of(
                st.dictionaries(st.integers(-5, 6), cbor_values, max_size=4),
                st.builds(lambda extra: {**valid_protected, **extra}, claims_maps),
                st.binary(max_size=30),
            )
        )
    if draw(_mostly):
        payload: Any = draw(near_valid_claims())
    else:
        payload = draw(st.one_of(claims_maps, cbor_values, st.binary()))
    signature = draw(st.one_of(st.binary(min_size=64, max_size=64), st.binary(max_size=80)))
    tag = 18 if draw(_mostly) else draw(st.sampled_from([17, 98, 0]))
    return cose_token(protected, payload, signature, tag=tag)


base45_text = st.text(alphabet=ALPHABET, max_size=300)


@st.composite
def mutated_tokens(draw: Callable[..., Any]) -> str:
    """The real token with a few random edits, on its text or on its COSE bytes."""
    if draw(st.booleans()):
        chars = list(TOKEN)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["replace", "insert", "delete"]))
            i = draw(st.integers(0, len(chars) - 1)) if chars else 0
            c = draw(st.one_of(st.sampled_from(ALPHABET), st.characters()))
            if op == "replace" and chars:
                chars[i] = c
            elif op == "insert":
                chars.insert(i, c)
            elif chars:
                del chars[i]
        return "".join(chars)
    data = bytearray(b45decode(TOKEN[4:]))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, len(data) - 1)) if data else 0
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[i]
        elif op == "truncate":
            del data[i:]
    return "SC1:" + b45encode(bytes(data))


tokens_any = st.one_of(
    st.text(max_size=200),
    st.builds(lambda t: "SC1:" + t, base45_text),
    st.builds(lambda b: "SC1:" + b45encode(b), st.binary(max_size=600)),
    structured_tokens(),
    mutated_tokens(),
)

"""The offline verdict verifier: what a hotel, venue or checkpoint runs.

:func:`verify_token` accepts a token when

- it decodes (``staycheck.trust.verdict``) and its claims pass the allowlist;
- its ``kid`` names a key of the issuer's key set, and that key's algorithm (from the key
  set, never from the token) equals the header's ``alg``;
- the key was valid at ``iat`` and the Ed25519 signature verifies;
- ``iss`` is the key set's issuer (with a trust store, ``iss`` picks the key set);
- its lifetime is positive and at most 24 h (``iat < exp <= iat + 24 h``), and ``now``
  lies in ``[iat - skew, exp + skew]``;
- when asked: the binding matches the given one, and the bundle version is at least the
  given minimum.

Otherwise it raises a :class:`staycheck.geo.errors.SignedDataError` subclass, whose
:func:`reason` is one of the fixed texts the command line prints. Needs nothing from
``server`` and nothing from gRPC.
"""

from __future__ import annotations

import hmac

from staycheck.geo.errors import (
    BadSignatureError,
    BindingMismatchError,
    ExpiredError,
    MalformedError,
    SignedDataError,
    StaleVersionError,
    UnknownKeyError,
)
from staycheck.trust.keys import VerdictKeySet
from staycheck.trust.truststore import TrustStore
from staycheck.trust.verdict import MAX_TTL_S, Verdict, decode_token

DEFAULT_SKEW_S = 120

_REASONS: list[tuple[type[SignedDataError], str]] = [
    (MalformedError, "malformed"),
    (BadSignatureError, "bad signature"),
    (UnknownKeyError, "unknown key"),
    (ExpiredError, "expired"),
    (BindingMismatchError, "binding mismatch"),
    (StaleVersionError, "stale bundle version"),
]


def reason(error: SignedDataError) -> str:
    """The short, fixed reason for a refusal, e.g. ``"bad signature"``."""
    for cls, text in _REASONS:
        if isinstance(error, cls):
            return text
    return "invalid"


def verify_token(
    token: str,
    trusted: VerdictKeySet | TrustStore,
    *,
    now: int,
    subject_binding: bytes | None = None,
    min_riskset_version: int | None = None,
    skew_s: int = DEFAULT_SKEW_S,
) -> Verdict:
    """Return the verdict if the token is authentic and acceptable at ``now``; else raise.

    ``trusted`` is one issuer's key set, or a trust store of several issuers (federation),
    in which case the token's ``iss`` selects the key set.
    """
    sign1, verdict = decode_token(token)
    keys = trusted.key_set_for(verdict.issuer) if isinstance(trusted, TrustStore) else trusted
    keys.verify(
        key_id=sign1.kid,
        signature=sign1.signature,
        data=sign1.to_be_signed(),
        at=verdict.issued_at,
        alg=sign1.alg if sign1.alg is not None else -1,
    )
    if keys.issuer is not None and verdict.issuer != keys.issuer:
        raise UnknownKeyError("token: issuer does not own this key")
    if not verdict.issued_at < verdict.expires_at <= verdict.issued_at + MAX_TTL_S:
        raise MalformedError("token: lifetime must be positive and at most 24 h")
    if now < verdict.issued_at - skew_s:
        raise ExpiredError("token: issued in the future")
    if now > verdict.expires_at + skew_s:
        raise ExpiredError("token: expired")
    if subject_binding is not None and not hmac.compare_digest(verdict.binding, subject_binding):
        raise BindingMismatchError("token: bound to someone else")
    if min_riskset_version is not None and verdict.riskset_version < min_riskset_version:
        raise StaleVersionError("token: computed against an older risk-area bundle")
    return verdict

"""The offline verdict verifier: what a hotel, venue or checkpoint runs.

:func:`verify_token` accepts a token when

- it decodes (``staycheck.trust.verdict``) and its claims pass the allowlist;
- its ``kid`` names a key of the issuer's key set, and that key's algorithm (from the key
  set, never from the token) equals the header's ``alg``;
- the key was valid at ``iat`` and the Ed25519 signature verifies;
- ``iss`` is the key set's issuer (with a trust store, ``iss`` picks the key set);
- its lifetime is positive and at most 24 h (``iat < exp <= iat + 24 h``), and ``now``
  lies in ``[iat - skew, exp + skew]``;
- the identity check the caller chose (``identity``, keyword-only and without a default, so
  it cannot be skipped by accident): :class:`SubjectId` derives the binding from the ID
  number and the salt with the parameters the token names and compares; :class:`SubjectBinding`
  compares a binding the caller derived; :data:`NO_BINDING_CHECK` checks nothing, which the
  caller then reports as "binding: not checked". Either check refuses an unbound token.
- when asked, the bundle version is at least the given minimum.

Otherwise it raises a :class:`staycheck.geo.errors.SignedDataError` subclass, whose
:func:`reason` is one of the fixed texts the command line prints. Needs nothing from
``server`` and nothing from gRPC.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from staycheck.geo.errors import (
    BadSignatureError,
    BindingMismatchError,
    ExpiredError,
    MalformedError,
    RevokedKeyError,
    SignedDataError,
    StaleVersionError,
    UnknownKeyError,
)
from staycheck.trust.binding import SALT_LENGTH, BindingParameters, compute_binding
from staycheck.trust.keys import VerdictKeySet
from staycheck.trust.truststore import TrustStore
from staycheck.trust.verdict import MAX_TTL_S, Verdict, decode_for_verification

DEFAULT_SKEW_S = 120

_REASONS: list[tuple[type[SignedDataError], str]] = [
    (MalformedError, "malformed"),
    (BadSignatureError, "bad signature"),
    (RevokedKeyError, "revoked key"),  # before its base class, UnknownKeyError
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


@dataclass(frozen=True, slots=True)
class SubjectId:
    """Check the binding against an identity document number and the presentation's salt."""

    id_number: str
    salt: bytes

    def __post_init__(self) -> None:
        if len(self.salt) not in (0, SALT_LENGTH):
            raise ValueError(f"salt must be {SALT_LENGTH} bytes (or empty: no salt shown)")
        if not self.id_number.strip():
            raise ValueError("identity number must not be empty")

    def __repr__(self) -> str:  # an ID number is never printed by accident
        return "SubjectId(<redacted>)"

    def derive(self, params: BindingParameters) -> bytes:
        """The binding this ID number and salt give under ``params`` (needs the salt)."""
        return compute_binding(self.id_number, self.salt, params)


@dataclass(frozen=True, slots=True)
class SubjectBinding:
    """Check the binding against 32 bytes the caller derived (a partner's online check)."""

    binding: bytes

    def __repr__(self) -> str:
        return "SubjectBinding(<redacted>)"


class NoBindingCheck:
    """The explicit choice not to check identity (a venue gate without an ID check)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_BINDING_CHECK"


NO_BINDING_CHECK: Final = NoBindingCheck()
Identity = SubjectId | SubjectBinding | NoBindingCheck
_IDENTITY_TYPES = (SubjectId, SubjectBinding, NoBindingCheck)


def verify_token(
    token: str | bytes,
    trusted: VerdictKeySet | TrustStore,
    *,
    now: int,
    identity: Identity,
    min_riskset_version: int | None = None,
    skew_s: int = DEFAULT_SKEW_S,
) -> Verdict:
    """Return the verdict if the token is authentic and acceptable at ``now``; else raise.

    ``token`` is the text form (``SC1:...``) or the COSE_Sign1 bytes. ``trusted`` is one
    issuer's key set, or a trust store of several issuers (federation), in which case the
    token's ``iss`` selects the key set. ``identity`` is the identity check (see above).
    """
    if not isinstance(identity, _IDENTITY_TYPES):
        raise TypeError("identity must be SubjectId, SubjectBinding or NO_BINDING_CHECK")
    kid, alg, signature, to_be_signed, verdict = decode_for_verification(token)
    keys = trusted.key_set_for(verdict.issuer) if isinstance(trusted, TrustStore) else trusted
    keys.verify(
        key_id=kid,
        signature=signature,
        data=to_be_signed,
        at=verdict.issued_at,
        alg=alg if alg is not None else -1,
    )
    if keys.issuer is not None and verdict.issuer != keys.issuer:
        raise UnknownKeyError("token: issuer does not own this key")
    if not verdict.issued_at < verdict.expires_at <= verdict.issued_at + MAX_TTL_S:
        raise MalformedError("token: lifetime must be positive and at most 24 h")
    if now < verdict.issued_at - skew_s:
        raise ExpiredError("token: issued in the future")
    if now > verdict.expires_at + skew_s:
        raise ExpiredError("token: expired")
    if min_riskset_version is not None and verdict.riskset_version < min_riskset_version:
        raise StaleVersionError("token: computed against an older risk-area bundle")
    # The identity check comes last: the key derivation costs ~0.1 s and is only spent on a
    # token that is genuine and current.
    _check_identity(verdict, identity)
    return verdict


def _check_identity(verdict: Verdict, identity: Identity) -> None:
    if isinstance(identity, NoBindingCheck):
        return
    if not verdict.binding or verdict.binding_params is None:
        raise BindingMismatchError("token: not bound to anyone, so identity cannot be checked")
    if isinstance(identity, SubjectId):
        if not identity.salt:
            raise BindingMismatchError("token: bound, but no salt was given to check it with")
        expected = identity.derive(verdict.binding_params)
    else:
        expected = identity.binding
    if not hmac.compare_digest(verdict.binding, expected):
        raise BindingMismatchError("token: bound to someone else")

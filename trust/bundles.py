"""Trust rules for risk-area bundles, after python-tuf's ``TrustedMetadataSet``.

:class:`TrustedBundleSet` takes the bytes of a signed bundle file and accepts it only if

- it is a COSE_Sign1 with the bundle content type, signed by a trusted authority key;
- its payload is a well-formed bundle (``staycheck.geo.bundle``);
- its version is higher than the one in use and than the floor remembered from earlier
  runs: a lower one raises :class:`BadVersionError`, an equal one
  :class:`EqualVersionError`, except that the very bundle the floor was recorded for
  (same version, same digest) is accepted again after a restart. The floor holds for one
  authority key: a new authority key starts a new sequence, which is the recovery path
  after a fast-forward attack (a stolen key signing a huge version);
- it was not issued in the future (beyond ``max_skew_s``) and has not expired.

A refused bundle changes nothing: the last trusted bundle stays in use. File and network I/O
are not handled here, nor is remembering the floor (the server's state dir does that).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from staycheck.geo.bundle import RiskAreaBundle
from staycheck.geo.errors import BadVersionError, EqualVersionError, ExpiredError, MalformedError
from staycheck.trust import cose
from staycheck.trust.keys import AuthorityKeySet, Signer

BUNDLE_CONTENT_TYPE = "application/vnd.staycheck.riskareas+protobuf"
DEFAULT_MAX_BUNDLE_SIZE = 256 * 1024 * 1024  # bytes


def sign_bundle(payload: bytes, signer: Signer) -> bytes:
    """The signed bundle file: COSE_Sign1 over a serialized ``RiskAreaBundle``."""
    protected = cose.encode_protected(
        {
            cose.HEADER_ALG: signer.alg,
            cose.HEADER_CONTENT_TYPE: BUNDLE_CONTENT_TYPE,
            cose.HEADER_KID: signer.kid,
        }
    )
    signature = signer.sign(cose.sig_structure(protected, payload))
    return cose.encode_sign1(protected, payload, signature)


def open_bundle(
    data: bytes, keys: AuthorityKeySet, *, max_size: int = DEFAULT_MAX_BUNDLE_SIZE
) -> RiskAreaBundle:
    """Verify the signature and decode; no version or expiry checks (see the set)."""
    sign1 = cose.decode_sign1(data, max_size=max_size)
    if sign1.protected.get(cose.HEADER_CONTENT_TYPE) != BUNDLE_CONTENT_TYPE:
        raise MalformedError("bundle: wrong content type (not a risk-area bundle)")
    # Authority keys carry no validity window; the bundle's own dates bound it.
    key = keys.verify(
        key_id=sign1.kid,
        signature=sign1.signature,
        data=sign1.to_be_signed(),
        at=0,
        alg=sign1.alg if sign1.alg is not None else -1,
    )
    bundle = RiskAreaBundle.from_payload(sign1.payload, digest=hashlib.sha256(data).hexdigest())
    return dataclasses.replace(bundle, signed_by=key.kid.hex())


@dataclass(frozen=True)
class VersionFloor:
    """The highest version accepted so far, the digest of that bundle file, and the
    authority key that signed it. Versions are a sequence per authority key: when the
    authority rotates its key (as it must after a compromise, e.g. after a fast-forward
    attack signed a huge version), bundles of the new key start their own sequence."""

    version: int = 0
    digest: str = ""
    signed_by: str = ""


class TrustedBundleSet:
    """The bundle in use, replaced only by a bundle that passes every rule."""

    def __init__(
        self,
        keys: AuthorityKeySet,
        *,
        floor: VersionFloor = VersionFloor(),
        max_size: int = DEFAULT_MAX_BUNDLE_SIZE,
        max_skew_s: int = 300,
    ) -> None:
        self._keys = keys
        self._floor = floor
        self._max_size = max_size
        self._max_skew_s = max_skew_s
        self.current: RiskAreaBundle | None = None

    @property
    def floor(self) -> VersionFloor:
        return self._floor

    def update(self, data: bytes, *, now: int) -> RiskAreaBundle:
        """Accept ``data`` as the bundle in use, or raise and keep the current one."""
        bundle = self.check(data, now=now)
        self.accept(bundle)
        return bundle

    def accept(self, bundle: RiskAreaBundle) -> None:
        """Put a bundle that passed :meth:`check` in use (after its floor was persisted)."""
        self.current = bundle
        self._floor = VersionFloor(bundle.version, bundle.digest, bundle.signed_by)

    def check(self, data: bytes, *, now: int) -> RiskAreaBundle:
        """Every rule of :meth:`update`, without changing what is in use."""
        bundle = open_bundle(data, self._keys, max_size=self._max_size)
        floor = self._floor
        if floor.signed_by and floor.signed_by != bundle.signed_by:
            floor = VersionFloor()  # another authority key: its own version sequence
        same_as_floor = bundle.version == floor.version and bundle.digest == floor.digest
        if self.current is not None and bundle.version == self.current.version:
            raise EqualVersionError(f"bundle version {bundle.version} is already in use")
        if self.current is not None and bundle.version < self.current.version:
            raise BadVersionError(
                f"bundle version {bundle.version} is lower than {self.current.version} in use"
            )
        if bundle.version < floor.version or (
            bundle.version == floor.version and not same_as_floor
        ):
            raise BadVersionError(
                f"bundle version {bundle.version} is not above {floor.version} accepted before"
            )
        if bundle.issued_at > now + self._max_skew_s:
            raise ExpiredError("bundle is issued in the future")
        if bundle.expires_at <= now:
            raise ExpiredError("bundle has expired")
        return bundle

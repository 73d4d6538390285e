"""Keys, key sets and signers: the trust objects of StayCheck.

- :class:`PublicKey`: one verification key with its algorithm, key id, validity window and
  whether its owner revoked it.
- :class:`KeySet`: keys trusted for one purpose, with
  ``verify(*, key_id, signature, data, at)``. The key id is an unauthenticated hint: it only
  selects the key; the algorithm always comes from the key set, never from the signed data.
  A revoked key verifies nothing.
- :data:`AuthorityKeySet` and :data:`VerdictKeySet`: key sets of different purpose, kept
  apart by type.
- :class:`Signer`: the one small interface signing goes through (a key file today, an HSM
  later), with :class:`Ed25519Signer` as the key-file backend.
- JWKS (RFC 7517/8037) import and export, with ``nbf``/``exp`` members giving each key's
  validity window in Unix seconds and ``"revoked": true`` marking a revoked key; at the top
  level, ``published_at`` (when the set was published) and ``refresh_interval_s`` (how often
  a verifier should fetch it again), both in seconds.

Pure: takes and returns bytes and objects; reads no file and no clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NewType, Protocol

import nacl.bindings
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from staycheck.geo.errors import (
    BadSignatureError,
    ConfigurationError,
    ExpiredError,
    RevokedKeyError,
    UnknownKeyError,
)
from staycheck.trust.cose import ALG_EDDSA, ALG_ES256

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
ALG_NAMES = {ALG_EDDSA: "EdDSA", ALG_ES256: "ES256"}
P256_COORD = 32
KID_LENGTH = 8


def key_id(raw_public_key: bytes) -> bytes:
    """The key id: the first 8 bytes of SHA-256 of the raw public key (32 bytes for Ed25519;
    the 65-byte uncompressed SEC1 point for P-256)."""
    return hashlib.sha256(raw_public_key).digest()[:KID_LENGTH]


def is_weak_ed25519_key(raw: bytes) -> bool:
    """True if ``raw`` is not a usable Ed25519 public key: not 32 bytes, not a canonical
    encoding of a curve point, of small order, or outside the prime-order subgroup.

    The check is libsodium's ``crypto_core_ed25519_is_valid_point`` (through PyNaCl), the
    one that ``crypto_sign_verify`` applies itself, so the refusals are a well-kept
    library's and not our arithmetic."""
    if len(raw) != nacl.bindings.crypto_core_ed25519_BYTES:
        return True
    return not nacl.bindings.crypto_core_ed25519_is_valid_point(raw)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None:
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PublicKey:
    """A verification key. ``not_before``/``not_after`` bound when it may have signed; a
    ``revoked`` key (compromised, its owner says) verifies nothing at all."""

    kid: bytes
    alg: int
    key: Ed25519PublicKey | ec.EllipticCurvePublicKey
    raw: bytes
    not_before: int | None = None
    not_after: int | None = None
    revoked: bool = False

    @classmethod
    def from_ed25519(
        cls,
        key: Ed25519PublicKey,
        *,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> PublicKey:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if is_weak_ed25519_key(raw):
            raise ConfigurationError("public key: not a canonical Ed25519 point of full order")
        return cls(key_id(raw), ALG_EDDSA, key, raw, not_before, not_after)

    @classmethod
    def from_p256(
        cls,
        key: ec.EllipticCurvePublicKey,
        *,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> PublicKey:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigurationError("public key: only the P-256 curve is supported for ES256")
        raw = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return cls(key_id(raw), ALG_ES256, key, raw, not_before, not_after)

    def verify_signature(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`BadSignatureError` unless ``signature`` is valid over ``data``
        under this key's own algorithm (COSE encodings: 64 bytes for both)."""
        try:
            if isinstance(self.key, Ed25519PublicKey):
                self.key.verify(signature, data)
            else:
                if len(signature) != 2 * P256_COORD:
                    raise InvalidSignature
                r = int.from_bytes(signature[:P256_COORD], "big")
                s = int.from_bytes(signature[P256_COORD:], "big")
                self.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as e:
            raise BadSignatureError("signature does not verify") from e

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as e:
            raise ConfigurationError("public key: not a PEM public key") from e
        if isinstance(key, ec.EllipticCurvePublicKey):
            return cls.from_p256(key)
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigurationError("public key: not an Ed25519 or P-256 key")
        return cls.from_ed25519(key)

    def to_pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def valid_at(self, t: int) -> bool:
        if self.not_before is not None and t < self.not_before:
            return False
        return self.not_after is None or t <= self.not_after

    def to_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any]
        if self.alg == ALG_ES256:
            x, y = self.raw[1 : 1 + P256_COORD], self.raw[1 + P256_COORD :]
            jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(x), "y": _b64url(y)}
        else:
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.raw)}
        jwk.update({"kid": self.kid.hex(), "alg": ALG_NAMES[self.alg], "use": "sig"})
        if self.not_before is not None:
            jwk["nbf"] = self.not_before
        if self.not_after is not None:
            jwk["exp"] = self.not_after
        if self.revoked:
            jwk["revoked"] = True
        return jwk

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """One JWK: OKP/Ed25519 (EdDSA) or EC/P-256 (ES256); the algorithm is fixed by the
        key type, so a key can never be used with another algorithm."""
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if (kty, crv) == ("OKP", "Ed25519"):
            alg_name = "EdDSA"
        elif (kty, crv) == ("EC", "P-256"):
            alg_name = "ES256"
        else:
            raise ConfigurationError("jwk: kty/crv must be OKP/Ed25519 or EC/P-256")
        if jwk.get("alg", alg_name) != alg_name:
            raise ConfigurationError(f"jwk: alg must be {alg_name} for this key type")
        bounds = []
        for name in ("nbf", "exp"):
            value = jwk.get(name)
            if value is not None and (type(value) is not int or value < 0):
                raise ConfigurationError(f"jwk: {name} must be a non-negative integer")
            bounds.append(value)
        revoked = jwk.get("revoked", False)
        if type(revoked) is not bool:
            raise ConfigurationError("jwk: revoked must be true or false")
        if alg_name == "EdDSA":
            try:
                key = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
            except (KeyError, ValueError) as e:
                raise ConfigurationError("jwk: x must be a base64url 32-byte Ed25519 key") from e
            pk = cls.from_ed25519(key, not_before=bounds[0], not_after=bounds[1])
        else:
            try:
                x, y = _b64url_decode(jwk["x"]), _b64url_decode(jwk["y"])
                if len(x) != P256_COORD or len(y) != P256_COORD:
                    raise ValueError
                point = ec.EllipticCurvePublicKey.from_encoded_point(
                    ec.SECP256R1(), b"\x04" + x + y
                )
            except (KeyError, ValueError) as e:
                raise ConfigurationError("jwk: x and y must be a base64url P-256 point") from e
            pk = cls.from_p256(point, not_before=bounds[0], not_after=bounds[1])
        if "kid" in jwk and jwk["kid"] != pk.kid.hex():
            raise ConfigurationError("jwk: kid does not match the key (first 8 bytes of SHA-256)")
        return replace(pk, revoked=True) if revoked else pk


def _seconds(name: str, value: Any) -> int | None:
    """A top-level JWKS member in seconds: absent (None) or a non-negative JSON integer."""
    if value is not None and (type(value) is not int or value < 0):
        raise ConfigurationError(f"jwks: {name} must be a non-negative integer (seconds)")
    return value


class KeySet:
    """Keys trusted for one purpose, looked up by key id.

    ``published_at`` (when the issuer published this set) and ``refresh_interval_s`` (how
    often a verifier should fetch it again), Unix seconds and seconds, travel with the set;
    a new key is published at least that long before it signs."""

    def __init__(
        self,
        keys: Iterable[PublicKey],
        *,
        issuer: str | None = None,
        refresh_interval_s: int | None = None,
        published_at: int | None = None,
    ) -> None:
        self._keys: dict[bytes, PublicKey] = {}
        for k in keys:
            if k.kid in self._keys:
                raise ConfigurationError("key set: duplicate key id")
            self._keys[k.kid] = k
        # The bound ``verify`` of each Ed25519 key, found once: ``isinstance`` against
        # cryptography's abstract key class costs about a quarter of a microsecond a call.
        self._ed25519_verify: dict[bytes, Callable[[bytes, bytes], None]] = {
            k.kid: k.key.verify for k in self._keys.values() if isinstance(k.key, Ed25519PublicKey)
        }
        self.issuer = issuer
        self.refresh_interval_s = _seconds("refresh_interval_s", refresh_interval_s)
        self.published_at = _seconds("published_at", published_at)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Any:
        return iter(self._keys.values())

    def get(self, kid: bytes | None) -> PublicKey:
        """The key ``kid`` names, or :class:`UnknownKeyError`."""
        key = self._keys.get(kid) if kid is not None else None
        if key is None:
            raise UnknownKeyError("signed by an unknown key")
        return key

    def verify(
        self,
        *,
        key_id: bytes | None,
        signature: bytes,
        data: bytes,
        at: int,
        alg: int | None = None,
    ) -> PublicKey:
        """Verify ``signature`` over ``data`` with the key ``key_id`` names.

        ``at`` is the time the data claims to have been signed: the key must have been valid
        then (an expired key still verifies what it signed while valid). ``alg``, when
        given, is what the signed data's header claims: it must be the key's own algorithm
        (the key decides; a header naming another one is refused, never obeyed). A revoked
        key is refused before anything else (:class:`RevokedKeyError`).
        """
        key = self.get(key_id)
        if key.revoked:
            raise RevokedKeyError("signed by a revoked key")
        if alg is not None and alg != key.alg:
            raise BadSignatureError("header alg is not the key's algorithm")
        if not key.valid_at(at):
            raise ExpiredError("signing key was not valid at the signing time")
        ed25519_verify = self._ed25519_verify.get(key.kid)
        if ed25519_verify is None:
            key.verify_signature(signature, data)
            return key
        try:  # what PublicKey.verify_signature does for an Ed25519 key
            ed25519_verify(signature, data)
        except InvalidSignature as e:
            raise BadSignatureError("signature does not verify") from e
        return key

    def to_jwks(self) -> dict[str, Any]:
        jwks: dict[str, Any] = {"keys": [k.to_jwk() for k in self._keys.values()]}
        if self.issuer is not None:
            jwks["issuer"] = self.issuer
        if self.published_at is not None:
            jwks["published_at"] = self.published_at
        if self.refresh_interval_s is not None:
            jwks["refresh_interval_s"] = self.refresh_interval_s
        return jwks

    def to_json(self) -> str:
        return json.dumps(self.to_jwks(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_jwks(cls, data: bytes | str | Mapping[str, Any]) -> KeySet:
        try:
            obj = json.loads(data) if isinstance(data, bytes | str) else data
        except ValueError as e:
            raise ConfigurationError("jwks: not valid JSON") from e
        if not isinstance(obj, Mapping) or not isinstance(obj.get("keys"), list):
            raise ConfigurationError("jwks: must be an object with a keys array")
        issuer = obj.get("issuer")
        if issuer is not None and not isinstance(issuer, str):
            raise ConfigurationError("jwks: issuer must be a string")
        # Present means a number: null is refused, not taken for "absent".
        seconds = {}
        for name in ("refresh_interval_s", "published_at"):
            if name in obj and obj[name] is None:
                raise ConfigurationError(f"jwks: {name} must be a non-negative integer (seconds)")
            seconds[name] = _seconds(name, obj.get(name))
        keys = []
        for i, jwk in enumerate(obj["keys"]):
            if not isinstance(jwk, Mapping):
                raise ConfigurationError(f"jwks: keys[{i}] must be an object")
            try:
                keys.append(PublicKey.from_jwk(jwk))
            except ConfigurationError as e:
                raise ConfigurationError(f"jwks: keys[{i}]: {e}") from e
        return cls(
            keys,
            issuer=issuer,
            refresh_interval_s=seconds["refresh_interval_s"],
            published_at=seconds["published_at"],
        )


AuthorityKeySet = NewType("AuthorityKeySet", KeySet)
"""Keys of health authorities, trusted to sign risk-area bundles."""

VerdictKeySet = NewType("VerdictKeySet", KeySet)
"""Keys of one verdict issuer (a province), trusted to sign verdicts."""


class Signer(Protocol):
    """What signing needs: a key id, an algorithm, and ``sign``."""

    @property
    def kid(self) -> bytes: ...

    @property
    def alg(self) -> int: ...

    def sign(self, data: bytes) -> bytes: ...


class Ed25519Signer:
    """Signs with an Ed25519 private key held in memory (the key-file backend)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = PublicKey.from_ed25519(private_key.public_key())

    @property
    def kid(self) -> bytes:
        return self.public_key.kid

    @property
    def alg(self) -> int:
        return ALG_EDDSA

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> Ed25519Signer:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigurationError("private key: not an unencrypted PEM private key") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError("private key: not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


class P256Signer:
    """Signs with an ECDSA P-256 key (ES256), COSE encoding r || s. Partner provinces whose
    HSMs only do P-256 sign this way; StayCheck itself signs with Ed25519."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self.public_key = PublicKey.from_p256(private_key.public_key())

    @property
    def kid(self) -> bytes:
        return self.public_key.kid

    @property
    def alg(self) -> int:
        return ALG_ES256

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(P256_COORD, "big") + s.to_bytes(P256_COORD, "big")

    @classmethod
    def generate(cls) -> P256Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

"""A TUF role's key on a PKCS#11 token: :class:`Pkcs11TufSigner` is a securesystemslib
``Signer`` over :class:`staycheck.server.pkcs11.Pkcs11Signer`, so that a department's (or
the authority's) repository signatures come from a token (issue 12 with issue 11).

securesystemslib's own ``HSMSigner`` signs ECDSA only; this one does Ed25519 (``CKM_EDDSA``)
and P-256 through the same signer the verdicts use. The public key is read from the token,
and its TUF key id is securesystemslib's (SHA-256 of the canonical key), computed from it.
"""

from __future__ import annotations

from typing import Any

from securesystemslib.signer import Signature, Signer, SSlibKey
from staycheck.server.pkcs11 import Pkcs11Signer
from staycheck.trust.cose import ALG_EDDSA


class Pkcs11TufSigner(Signer):
    """Signs TUF metadata with a key on a token named by an RFC 7512 URI."""

    def __init__(self, uri: str) -> None:
        self._signer = Pkcs11Signer(uri)
        key = self._signer.public_key
        scheme = "ed25519" if key.alg == ALG_EDDSA else "ecdsa-sha2-nistp256"
        self._public_key = SSlibKey.from_crypto(key.key, scheme=scheme)
        self.uri = uri

    @property
    def public_key(self) -> SSlibKey:
        return self._public_key

    def sign(self, payload: bytes) -> Signature:
        raw = self._signer.sign(payload)
        if self._signer.public_key.alg != ALG_EDDSA:
            raw = _raw_to_der(raw)  # securesystemslib verifies ECDSA signatures as DER
        return Signature(self._public_key.keyid, raw.hex())

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Any, secrets_handler: Any = None
    ) -> Pkcs11TufSigner:
        signer = cls(priv_key_uri)
        if public_key is not None and public_key.keyid != signer.public_key.keyid:
            raise ValueError("the key on the token is not the one named")
        return signer


def _raw_to_der(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )

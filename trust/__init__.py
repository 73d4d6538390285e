"""Signed data: the rules for what StayCheck signs and what it accepts.

- :mod:`staycheck.trust.cose`: the COSE_Sign1 envelope (RFC 9052), strictly decoded.
- :mod:`staycheck.trust.keys`: public keys, key sets by purpose, signers, JWKS.
- :mod:`staycheck.trust.verdict`: the verdict token (a CWT in COSE_Sign1, ``SC1:`` + base45).
- :mod:`staycheck.trust.verifier`: the offline verifier, one function, :func:`verify_token`.
- :mod:`staycheck.trust.truststore`: the issuers a verifier accepts (federation).
- :mod:`staycheck.trust.binding`: the subject binding a traveller derives from an ID number
  (Argon2id).
- :mod:`staycheck.trust.presentation`: what the traveller shows, token and salt (``SCP1:``).
- :mod:`staycheck.trust.base45`: RFC 9285.
- :mod:`staycheck.trust.bundles`: the trust rules for risk-area bundles (signature, version,
  expiry); it needs the geometry, so it is imported on its own and needs the ``server``
  extra.

Everything here is pure: bytes and objects in, objects out or an exception; no file, no
clock, no network. Everything listed below needs only the base install
(``pip install staycheck``). The rules themselves are in docs/rules.md.
"""

from staycheck.trust.binding import (
    DEFAULT_PARAMETERS,
    SALT_LENGTH,
    BindingParameters,
    binding_matches,
    compute_binding,
    new_salt,
)
from staycheck.trust.keys import (
    AuthorityKeySet,
    Ed25519Signer,
    KeySet,
    P256Signer,
    PublicKey,
    Signer,
    VerdictKeySet,
)
from staycheck.trust.presentation import Presentation, present, read_presentation
from staycheck.trust.truststore import Issuer, TrustStore
from staycheck.trust.verdict import TOKEN_PREFIX, TokenSigner, Verdict, decode_token, issue_verdict
from staycheck.trust.verifier import (
    NO_BINDING_CHECK,
    SubjectBinding,
    SubjectId,
    reason,
    verify_token,
)

__all__ = [
    "DEFAULT_PARAMETERS",
    "NO_BINDING_CHECK",
    "SALT_LENGTH",
    "TOKEN_PREFIX",
    "AuthorityKeySet",
    "BindingParameters",
    "Ed25519Signer",
    "Issuer",
    "KeySet",
    "P256Signer",
    "Presentation",
    "PublicKey",
    "Signer",
    "SubjectBinding",
    "SubjectId",
    "TokenSigner",
    "TrustStore",
    "Verdict",
    "VerdictKeySet",
    "binding_matches",
    "compute_binding",
    "decode_token",
    "issue_verdict",
    "new_salt",
    "present",
    "read_presentation",
    "reason",
    "verify_token",
]

"""Subject binding: ties a verdict to its bearer without the server learning who they are.

The client computes ``HMAC-SHA256(key=salt, msg=normalized identity document number)``
(32 bytes) and sends only that. The traveller keeps the salt (16 random bytes); a verifier
holding the ID card and the salt recomputes the binding and compares. Without the salt the
binding reveals nothing useful: identity numbers are guessable, 16 random bytes are not.

Normalization: surrounding whitespace removed, letters upper-cased (the check character
``X`` of a resident ID number may be written either way).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

BINDING_LENGTH = 32
SALT_LENGTH = 16


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_LENGTH)


def compute_binding(id_number: str, salt: bytes) -> bytes:
    """The 32-byte binding of ``id_number`` under ``salt``."""
    if len(salt) != SALT_LENGTH:
        raise ValueError(f"salt must be {SALT_LENGTH} bytes")
    normalized = id_number.strip().upper()
    if not normalized:
        raise ValueError("identity number must not be empty")
    return hmac.new(salt, normalized.encode("utf-8"), hashlib.sha256).digest()


def binding_matches(binding: bytes, id_number: str, salt: bytes) -> bool:
    return hmac.compare_digest(binding, compute_binding(id_number, salt))

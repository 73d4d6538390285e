"""Subject binding: ties a verdict to its bearer without the server learning who they are.

The client derives ``Argon2id(password=normalized identity document number, salt)``
(RFC 9106; 32 bytes) and sends only that, with the parameters it used. The traveller keeps
the salt (16 random bytes) and shows it in the presentation; a verifier holding the ID card
and the salt derives the binding again with the parameters the token names and compares.

Why memory-hard: a Chinese resident ID number has about 10^11 possible values, so whoever
holds a screenshot of a presentation (token and salt) could try them all. With HMAC-SHA256
that is hours on one core; with the default parameters here (64 MiB, 2 passes) every guess
costs about 0.16 s of CPU and 64 MiB, so 10^11 guesses are ~500 core-years. What no
offline check can prevent: whoever already knows the traveller's region and birth date has
about a thousand candidates left (minutes). A presentation is to be shown, not posted.

Normalization, exactly (other implementations must match it): Unicode NFKC (full-width
digits from a Chinese input method become ASCII), every whitespace character removed,
letters upper-cased (the check character ``X`` may be written either way); the result must
be 1-64 ASCII letters and digits, else it is refused (``ValueError``), never silently
derived into a binding that matches nothing.

Pure: no file, no clock; the salt comes from :func:`new_salt` (the OS's random source).
"""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

BINDING_LENGTH = 32
SALT_LENGTH = 16

# Bounds on the parameters a token may name. The floor is OWASP's minimum for Argon2id
# (19 MiB, 2 passes); the ceiling (256 MiB x 1 pass, or 128 MiB x 2) keeps one derivation
# under about 0.4 s on the reference machine, so a token cannot make a verifier spend more
# (the offline verifier checks the signature first anyway).
MIN_MEMORY_KIB = 19 * 1024
MAX_MEMORY_KIB = 256 * 1024
MIN_COST_KIB = 2 * MIN_MEMORY_KIB
MAX_COST_KIB = MAX_MEMORY_KIB
MAX_ITERATIONS = 16
MAX_LANES = 16


@dataclass(frozen=True, slots=True)
class BindingParameters:
    """Argon2id's cost parameters (RFC 9106 section 3.1): memory in KiB, passes, lanes.

    The default, 64 MiB and 2 passes over 4 lanes, takes about 0.1 s on one core of the
    reference machine (RFC 9106's second recommended option has 3 passes; 2 keep a
    verification under 150 ms there). They travel in the token, so they can be raised.
    """

    memory_kib: int = 64 * 1024
    iterations: int = 2
    lanes: int = 4

    def check(self) -> None:
        """Raise ``ValueError`` naming the parameter and the rule it breaks."""
        for name in ("memory_kib", "iterations", "lanes"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"{name}: must be an integer")
        if not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes: must be within [1, {MAX_LANES}]")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise ValueError(f"iterations: must be within [1, {MAX_ITERATIONS}]")
        if not MIN_MEMORY_KIB <= self.memory_kib <= MAX_MEMORY_KIB:
            raise ValueError(f"memory_kib: must be within [{MIN_MEMORY_KIB}, {MAX_MEMORY_KIB}]")
        cost = self.memory_kib * self.iterations
        if not MIN_COST_KIB <= cost <= MAX_COST_KIB:
            raise ValueError(
                f"memory_kib x iterations: must be within [{MIN_COST_KIB}, {MAX_COST_KIB}]"
            )

    def to_cbor(self) -> list[int]:
        """The token's form: ``[memory_kib, iterations, lanes]``."""
        return [self.memory_kib, self.iterations, self.lanes]


DEFAULT_PARAMETERS = BindingParameters()
_ID_CHARACTERS = re.compile(r"[0-9A-Z]{1,64}", re.ASCII)


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_LENGTH)


def normalize_id(id_number: str) -> bytes:
    """The bytes the binding is derived from (see the module docstring)."""
    normalized = "".join(unicodedata.normalize("NFKC", id_number).split()).upper()
    if not normalized:
        raise ValueError("identity number must not be empty")
    if not _ID_CHARACTERS.fullmatch(normalized):
        raise ValueError("identity number: 1-64 letters and digits (spaces are ignored)")
    return normalized.encode("ascii")


def compute_binding(
    id_number: str, salt: bytes, params: BindingParameters = DEFAULT_PARAMETERS
) -> bytes:
    """The 32-byte binding of ``id_number`` under ``salt`` with ``params``."""
    if len(salt) != SALT_LENGTH:
        raise ValueError(f"salt must be {SALT_LENGTH} bytes")
    params.check()
    kdf = Argon2id(
        salt=salt,
        length=BINDING_LENGTH,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(normalize_id(id_number))


def binding_matches(
    binding: bytes, id_number: str, salt: bytes, params: BindingParameters = DEFAULT_PARAMETERS
) -> bool:
    return hmac.compare_digest(binding, compute_binding(id_number, salt, params))

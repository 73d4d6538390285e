"""The StayCheck exception tree.

One root, :class:`Error`, and one branch per kind of fault, so that a boundary (the gRPC
error mapping, the command line) can decide what to do by branch alone:

- :class:`InvalidInputError`: a caller sent something that breaks a documented rule. It
  names the field and the rule, never the value.
- :class:`SignedDataError`: signed data (a bundle or a verdict token) is malformed, not
  authentic or not acceptable now.
- :class:`ConfigurationError`: our own configuration or state is unusable.
- :class:`UnavailableError`: the service cannot answer now (no valid bundle in use).

Messages of these errors are safe to show to a caller and to log: they are built from
field paths and fixed rule texts only.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every error StayCheck raises on purpose."""


class InvalidInputError(Error):
    """Caller input breaks a rule. ``field`` is a path like ``stays[3].departure``."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class SignedDataError(Error):
    """Signed data that cannot be accepted."""


class MalformedError(SignedDataError):
    """The signed container or its payload cannot be decoded."""


class BadSignatureError(SignedDataError):
    """The signature does not verify under the key it names."""


class UnknownKeyError(SignedDataError):
    """The key id names no trusted key."""


class RevokedKeyError(UnknownKeyError):
    """The key id names a key its issuer has revoked (published with ``"revoked": true``):
    nothing it signed is accepted, whatever the signing time."""


class ExpiredError(SignedDataError):
    """The signed data is past its expiry (or not yet valid)."""


class BadVersionError(SignedDataError):
    """A bundle version lower than the one already trusted (rollback)."""


class EqualVersionError(BadVersionError):
    """A bundle version equal to the one already trusted (replay)."""


class BindingMismatchError(SignedDataError):
    """A verdict bound to someone else."""


class StaleVersionError(SignedDataError):
    """A verdict computed against a bundle older than the verifier's minimum."""


class ConfigurationError(Error):
    """Our own configuration or stored state is unusable."""


class UnavailableError(Error):
    """The service cannot answer now; the reason is safe to show."""

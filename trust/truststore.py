"""Federation: the issuers whose verdicts a verifier accepts.

A trust store file (TOML) lists issuers::

    [[issuer]]
    code = "120000"              # province code, the tokens' iss
    name = "Tianjin"
    jwks = "tianjin.jwks.json"   # `staycheck keys` output of that deployment; relative
                                 # paths are relative to this file

    [[issuer]]
    code = "130000"
    name = "Hebei"
    keys = [{kty = "EC", crv = "P-256", x = "...", y = "...", alg = "ES256"}]  # inline

The key set of a token is chosen by the token's ``iss``; within it the ``kid`` selects a key
and the key's own algorithm is used (EdDSA or ES256), never the token's header. A JWKS that
names another issuer than its entry is refused at load.

Pure: :meth:`TrustStore.from_toml` takes the file's bytes and a function that reads a JWKS
named in it; reading files is ``staycheck.client.files.load_trust_store``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from staycheck.geo.errors import ConfigurationError, UnknownKeyError
from staycheck.trust.keys import KeySet, VerdictKeySet


@dataclass(frozen=True)
class Issuer:
    code: str
    name: str
    keys: VerdictKeySet


class TrustStore:
    """Verdict key sets by issuer code."""

    def __init__(self, issuers: Iterable[Issuer]) -> None:
        self._issuers: dict[str, Issuer] = {}
        for issuer in issuers:
            if issuer.code in self._issuers:
                raise ConfigurationError(f"trust store: issuer {issuer.code} listed twice")
            self._issuers[issuer.code] = issuer

    def __contains__(self, code: object) -> bool:
        return code in self._issuers

    def __iter__(self) -> Any:
        return iter(self._issuers.values())

    def key_set_for(self, issuer_code: str) -> VerdictKeySet:
        issuer = self._issuers.get(issuer_code)
        if issuer is None:
            raise UnknownKeyError("issuer is not in the trust store")
        return issuer.keys

    def name_of(self, issuer_code: str) -> str:
        issuer = self._issuers.get(issuer_code)
        return issuer.name if issuer else ""

    def with_issuer(self, issuer: Issuer) -> TrustStore:
        """A copy where ``issuer`` replaces any entry with its code."""
        others = [i for i in self._issuers.values() if i.code != issuer.code]
        return TrustStore([*others, issuer])

    @classmethod
    def from_toml(cls, data: bytes, *, read_jwks: Callable[[str], bytes]) -> TrustStore:
        """Parse a trust store file. ``read_jwks`` gets the ``jwks`` value of an entry as
        written and returns that file's bytes; it raises ``OSError`` when it cannot."""
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigurationError("trust store: not valid TOML") from e
        entries = doc.get("issuer", [])
        if not isinstance(entries, list):
            raise ConfigurationError("trust store: [[issuer]] must be an array of tables")
        return cls(_issuer(i, entry, read_jwks) for i, entry in enumerate(entries))


def _issuer(i: int, entry: Any, read_jwks: Callable[[str], bytes]) -> Issuer:
    where = f"trust store: issuer[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where}: must be a table")
    code, name = entry.get("code"), entry.get("name", "")
    if not isinstance(code, str) or not code:
        raise ConfigurationError(f"{where}.code: required text")
    if not isinstance(name, str):
        raise ConfigurationError(f"{where}.name: must be text")
    if ("jwks" in entry) == ("keys" in entry):
        raise ConfigurationError(f"{where}: give exactly one of jwks (a path) or keys (inline)")
    if "jwks" in entry:
        name = str(entry["jwks"])
        try:
            jwks: Any = read_jwks(name)
        except OSError as e:
            raise ConfigurationError(f"{where}.jwks: cannot read {name}") from e
    else:
        jwks = {"keys": entry["keys"]}
    try:
        keys = KeySet.from_jwks(jwks)
    except ConfigurationError as e:
        raise ConfigurationError(f"{where}: {e}") from e
    if keys.issuer is not None and keys.issuer != code:
        raise ConfigurationError(f"{where}: the JWKS names another issuer")
    return Issuer(code, name, VerdictKeySet(KeySet(keys, issuer=code)))

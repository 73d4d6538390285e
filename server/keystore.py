"""The verdict key store: the server's signing keys in its state dir.

Layout of ``STATE_DIR``::

    verdict-keys/<kid hex>.pem   PKCS#8 private keys, mode 0600
    verdict-keys.json            {"active": kid, "keys": [{"kid", "not_before", "not_after"}]}

On first start a key is generated and recorded; afterwards the same key is loaded. A key's
``not_before`` is its creation time rounded down to the verdict ``iat`` bucket, so the first
verdict it signs is inside its window. :meth:`VerdictKeyStore.rotate` (``staycheck keys
rotate``) adds a new active key and ends the old key's window ``ROTATION_GRACE_S`` later
(the time running servers take to notice); the published JWKS keeps every key whose
verdicts may still be valid, so the old key drops out 24 h after its window ends. A running
server notices the changed index file and signs with the new key from then on.
Signing goes through ``staycheck.trust.keys.Signer``; an HSM backend would
replace :class:`Ed25519Signer` here and nowhere else.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from staycheck.client.files import atomic_write, ensure_private_dir
from staycheck.geo.errors import ConfigurationError
from staycheck.trust.keys import Ed25519Signer, KeySet, PublicKey, VerdictKeySet
from staycheck.trust.verdict import IAT_BUCKET_S, MAX_TTL_S, TokenSigner
from staycheck.trust.verifier import DEFAULT_SKEW_S

KEYS_DIR = "verdict-keys"
INDEX_FILE = "verdict-keys.json"
ROTATION_GRACE_S = 60
"""After a rotation the old key may still sign this long (servers pick the change up)."""
PUBLISH_MARGIN_S = DEFAULT_SKEW_S
"""A retired key stays published this long past its last verdict's expiry: the verifiers'
clock skew, during which they still accept that verdict."""


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    not_before: int
    not_after: int | None = None


class VerdictKeyStore:
    """Loads (or on first start creates) the verdict keys of one issuer."""

    def __init__(self, state_dir: pathlib.Path, *, issuer: str) -> None:
        self._dir = state_dir
        self._issuer = issuer
        self._signers: dict[str, Ed25519Signer] = {}
        self._records: list[KeyRecord] = []
        self._active = ""
        self._index_stat: tuple[int, int, int] | None = None

    @property
    def index_path(self) -> pathlib.Path:
        return self._dir / INDEX_FILE

    def load_or_create(self, *, now: int) -> None:
        """Load the keys, or make the first one; a state dir that cannot be written (full,
        read-only, not ours) is a :class:`ConfigurationError` naming it, not a traceback."""
        try:
            ensure_private_dir(self._dir)
            ensure_private_dir(self._dir / KEYS_DIR)
            if self.index_path.exists():
                self._load()
            else:
                self._create(now=now)
        except OSError as e:
            raise ConfigurationError(f"state dir {self._dir}: {e.strerror or e}") from e

    def _create(self, *, now: int) -> None:
        self._add_key(now=now, records=[])

    def _add_key(self, *, now: int, records: list[KeyRecord]) -> None:
        signer = Ed25519Signer.generate()
        kid = signer.kid.hex()
        atomic_write(self._dir / KEYS_DIR / f"{kid}.pem", signer.to_pem(), mode=0o600)
        records = [*records, KeyRecord(kid, now - now % IAT_BUCKET_S)]
        index = {"active": kid, "keys": [r.__dict__ for r in records]}
        # The key file is in place before the index names it: readers never miss it.
        atomic_write(self.index_path, json.dumps(index, indent=2).encode(), mode=0o600)
        self._signers = {**self._signers, kid: signer}
        self._records = records
        self._active = kid
        self._index_stat = self._stat()

    def rotate(self, *, now: int, grace_s: int = ROTATION_GRACE_S) -> str:
        """Make a new active key; the old one signs no more after ``now + grace_s``.
        Returns the new key id (hex)."""
        self.load_or_create(now=now)
        records = [
            KeyRecord(r.kid, r.not_before, now + grace_s)
            if r.kid == self._active and r.not_after is None
            else r
            for r in self._records
        ]
        self._add_key(now=now, records=records)
        return self._active

    @property
    def active_kid(self) -> str:
        return self._active

    @property
    def active_not_before(self) -> int:
        return next(r.not_before for r in self._records if r.kid == self._active)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.index_path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload_if_changed(self) -> bool:
        """Reload when the index file changed (a rotation by another process)."""
        if self._stat() == self._index_stat:
            return False
        self._load()
        return True

    def _load(self) -> None:
        stat = self._stat()  # recorded only once loading succeeded, so failures are retried
        try:
            index = json.loads(self.index_path.read_bytes())
            records = [KeyRecord(**r) for r in index["keys"]]
            active = index["active"]
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigurationError(f"{self.index_path}: not a verdict key index") from e
        signers = {}
        for record in records:
            path = self._dir / KEYS_DIR / f"{record.kid}.pem"
            try:
                signer = Ed25519Signer.from_pem(path.read_bytes())
            except OSError as e:
                raise ConfigurationError(f"{path}: cannot read verdict key") from e
            if signer.kid.hex() != record.kid:
                raise ConfigurationError(f"{path}: key does not match its kid")
            signers[record.kid] = signer
        if active not in signers:
            raise ConfigurationError(f"{self.index_path}: active key is not recorded")
        self._signers, self._records, self._active = signers, records, active
        self._index_stat = stat

    def token_signer(self) -> TokenSigner:
        return TokenSigner(self._signers[self._active])

    def key_set(self, *, now: int) -> VerdictKeySet:
        """Keys whose verdicts may still be valid at ``now``, with their windows."""
        keys = []
        for record in self._records:
            # Published until its last verdict expired, plus the verifiers' clock skew.
            if (
                record.not_after is not None
                and record.not_after + MAX_TTL_S + PUBLISH_MARGIN_S < now
            ):
                continue
            pk = self._signers[record.kid].public_key
            keys.append(
                PublicKey(pk.kid, pk.alg, pk.key, pk.raw, record.not_before, record.not_after)
            )
        return VerdictKeySet(KeySet(keys, issuer=self._issuer))

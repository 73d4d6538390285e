"""The verdict key store: the server's signing keys in its state dir.

Layout of ``STATE_DIR``::

    verdict-keys/<kid hex>.pem   PKCS#8 private keys, mode 0600 (key files only)
    verdict-keys.json            {"format": 2, "pending": kid or null,
                                  "keys": [{"kid", "not_before", "not_after", "revoked"}]}

A key on a PKCS#11 token (``staycheck serve --verdict-key pkcs11:...``, ADR 10) has no file:
its record carries the key's URI (never its ``pin-value``) and the public key read from the
token when it was recorded, ``{..., "uri", "public_key" (base64url of the raw key), "alg"
("EdDSA" or "ES256")}``, and the index says ``"format": 3``. The state dir of a server that
started with a token key holds no private key. The public key in the index publishes the key
set while the token is away; the signer checks the token still holds that very key.

A new key is published before it signs. On first start two keys are made: the one that
signs (``not_before`` is the start time rounded down to the verdict ``iat`` bucket, so its
first verdict is inside its window) and a *pending* next key, published in the key set at
once with a ``not_before`` in the future, that signs nothing until a rotation schedules it.

- :meth:`VerdictKeyStore.rotate` (``staycheck keys rotate``) schedules the pending key to
  start signing a publish-ahead period later (default 24 h), rounded up to the ``iat``
  bucket, and never before the ``not_before`` it was published with; the key signing now
  gets a ``not_after`` ``ROTATION_GRACE_S`` past that switch (pods whose clocks differ a
  little); a fresh pending key is made and published. A verifier that fetched the key set
  since the previous rotation (or first start) already holds the next key, and one that
  fetches it at least once within the publish-ahead period does too.
- ``rotate(emergency=True)`` (``keys rotate --now``) is for a compromised key. The state dir
  itself may be what leaked, so every key in it that is still published (whose verdicts
  could still be accepted) is marked revoked, the pending one too; a brand-new key signs at
  once and a fresh pending key is made. Revoked keys stay published, ``"revoked": true``,
  until their verdicts would have expired anyway; verifiers that fetch the key set again
  refuse everything they signed.

The key that signs at ``now`` is the newest key (largest ``not_before``) that is neither
revoked nor pending and whose ``not_before`` is at most ``now``: the switch happens at the
scheduled time in every process that reads this state dir, without a file change.
:meth:`VerdictKeyStore.signing_key` says until when its answer holds, so the service checks
one number per call. The published JWKS keeps every key whose verdicts may still be valid,
so a retired key drops out 24 h (plus the verifiers' clock skew) after its window ends.

Token keys rotate the same way, except that the store never makes a key by itself: the
first start records the ``--verdict-key`` key alone (no pending key), and ``keys rotate
--next-key URI`` (a key made on the token beforehand, or by ``--create``) publishes the next
key now and schedules it a publish-ahead period later, as above; with ``--now`` it revokes
and switches at once. A rotation of a store whose signing key is on a token without
``--next-key`` is refused, so keys never move back to files unnoticed. A pending file key
left from before is retired (it never signed) when a token key is scheduled.

The first index layout (``{"active": kid, "keys": [...]}``, no pending key) still loads and
is not rewritten on load; the next rotation writes the current layout. Reads no clock: the
callers pass ``now``. Signing goes through ``staycheck.trust.keys.Signer``:
:class:`Ed25519Signer` for key files, ``staycheck.server.pkcs11.Pkcs11Signer`` for tokens.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from staycheck.client.files import atomic_write, ensure_private_dir
from staycheck.geo.errors import ConfigurationError
from staycheck.trust.cose import ALG_EDDSA, ALG_ES256
from staycheck.trust.keys import (
    ALG_NAMES,
    Ed25519Signer,
    KeySet,
    PublicKey,
    Signer,
    VerdictKeySet,
    key_id,
)
from staycheck.trust.verdict import IAT_BUCKET_S, MAX_TTL_S, TokenSigner
from staycheck.trust.verifier import DEFAULT_SKEW_S

if TYPE_CHECKING:
    from staycheck.server.pkcs11 import Pkcs11Signer

KEYS_DIR = "verdict-keys"
INDEX_FILE = "verdict-keys.json"
INDEX_FORMAT = 2
TOKEN_INDEX_FORMAT = 3
"""The index format once a record names a key on a PKCS#11 token (older servers refuse it
rather than misread it)."""
ROTATION_GRACE_S = 60
"""A replaced key's window ends this long after the switch (pods whose clocks differ)."""
DEFAULT_PUBLISH_AHEAD_S = 24 * 3600
"""How long a new key is published before it signs, seconds."""
DEFAULT_REFRESH_INTERVAL_S = 6 * 3600
"""How often verifiers are told to fetch the key set again, seconds."""
PUBLISH_MARGIN_S = DEFAULT_SKEW_S
"""A retired key stays published this long past its last verdict's expiry: the verifiers'
clock skew, during which they still accept that verdict."""


def bucket_floor(t: int) -> int:
    """``t`` rounded down to the verdict ``iat`` bucket (what ``iat`` itself is)."""
    return t - t % IAT_BUCKET_S


def bucket_ceil(t: int) -> int:
    """``t`` rounded up to the verdict ``iat`` bucket."""
    return -(-t // IAT_BUCKET_S) * IAT_BUCKET_S


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    not_before: int
    not_after: int | None = None
    revoked: bool = False
    uri: str | None = None
    """A key on a PKCS#11 token: its URI, without ``pin-value``; None for a key file."""
    public_key: str | None = None
    """With ``uri``: the raw public key read from the token, base64url."""
    alg: str | None = None
    """With ``uri``: ``EdDSA`` or ``ES256``."""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.uri is None:
            for name in ("uri", "public_key", "alg"):
                del out[name]
        return out


class NextKey:
    """A key on a token to record (``--verdict-key`` on first start, ``keys rotate
    --next-key``): its signer and the URI to record (without ``pin-value``)."""

    def __init__(self, signer: Pkcs11Signer) -> None:
        self.signer = signer
        self.public_key: PublicKey = signer.public_key

    @property
    def kid(self) -> str:
        return self.public_key.kid.hex()

    def record(self, not_before: int) -> KeyRecord:
        raw = base64.urlsafe_b64encode(self.public_key.raw).rstrip(b"=").decode("ascii")
        alg = ALG_NAMES[self.public_key.alg]
        return KeyRecord(self.kid, not_before, uri=str(self.signer.uri), public_key=raw, alg=alg)


@dataclass(frozen=True)
class SigningKey:
    """The key that signs at some ``now``, and the times between which that answer holds:
    ``valid_from <= now < valid_until`` (None: unbounded on that side)."""

    kid: str
    signer: TokenSigner
    not_before: int
    valid_from: int | None
    valid_until: int | None
    generation: int
    """Counts the loads of the store: an answer from an older load is out of date."""
    backend: Signer | None = None
    """What ``signer`` signs with (an :class:`Ed25519Signer`, a ``Pkcs11Signer``)."""


@dataclass(frozen=True)
class Rotation:
    """What :meth:`VerdictKeyStore.rotate` did."""

    kid: str
    """The key that signs next."""
    signs_from: int
    """When it starts signing, Unix seconds (a multiple of the ``iat`` bucket)."""
    replaces: str | None
    """The key whose window now ends at ``signs_from`` + the grace (None in an emergency)."""
    pending_kid: str | None
    """The fresh pending key, published now for the rotation after this one (None when the
    next key is on a token: the next rotation names its own)."""
    revoked: tuple[str, ...] = ()
    """Emergency only: the keys marked revoked."""


@dataclass(frozen=True)
class _State:
    """Everything loaded, replaced as one object (the watcher reloads while calls sign)."""

    records: tuple[KeyRecord, ...]
    pending: str | None
    signers: Mapping[str, Signer]
    generation: int
    publics: Mapping[str, PublicKey] = dataclasses.field(default_factory=dict)


_EMPTY = _State((), None, {}, 0)
_RECORD_MEMBERS = frozenset({"kid", "not_before", "not_after", "revoked"})
_TOKEN_MEMBERS = frozenset({"uri", "public_key", "alg"})


def _record(obj: Any, *, tokens: bool = False) -> KeyRecord:
    """One index entry, strictly: a bool is no time, unknown members are refused; with
    ``tokens`` (format 3), the members of a token key, all three or none."""
    allowed = _RECORD_MEMBERS | _TOKEN_MEMBERS if tokens else _RECORD_MEMBERS
    if not isinstance(obj, dict) or not {"kid", "not_before"} <= set(obj) <= allowed:
        raise TypeError("not a key record")
    kid, not_before = obj["kid"], obj["not_before"]
    not_after, revoked = obj.get("not_after"), obj.get("revoked", False)
    if not isinstance(kid, str) or type(not_before) is not int:
        raise TypeError("not a key record")
    if (not_after is not None and type(not_after) is not int) or type(revoked) is not bool:
        raise TypeError("not a key record")
    token = [obj.get(name) for name in ("uri", "public_key", "alg")]
    some, complete = (f(v is not None for v in token) for f in (any, all))
    if some and (not complete or not all(isinstance(v, str) for v in token)):
        raise TypeError("not a token key record")
    if some and token[2] not in ("EdDSA", "ES256"):
        raise TypeError("not a token key record")
    return KeyRecord(kid, not_before, not_after, revoked, *token)


def _recorded_public_key(record: KeyRecord) -> PublicKey:
    """The public key a token key's record holds; its kid must be the record's."""
    assert record.public_key is not None
    text = record.public_key
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if record.alg == "EdDSA":
            pk = PublicKey.from_ed25519(Ed25519PublicKey.from_public_bytes(raw))
        else:
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
            pk = PublicKey.from_p256(point)
    except (ValueError, binascii.Error, ConfigurationError) as e:
        raise ConfigurationError(f"key {record.kid}: public_key is not a {record.alg} key") from e
    if key_id(raw).hex() != record.kid or pk.alg not in (ALG_EDDSA, ALG_ES256):
        raise ConfigurationError(f"key {record.kid}: public_key does not match its kid")
    return pk


def _signing_candidates(state: _State) -> list[KeyRecord]:
    """Keys that may sign, by ``not_before`` (ties: later in the index is newer)."""
    keys = [r for r in state.records if not r.revoked and r.kid != state.pending]
    return sorted(keys, key=lambda r: r.not_before)


class VerdictKeyStore:
    """Loads (or on first start creates) the verdict keys of one issuer.

    ``refresh_interval_s`` goes into the published key set (``refresh_interval_s``).
    ``verdict_key``: a PKCS#11 URI (``--verdict-key``). On first start that key is the
    signing key; later it must be one the index records. Its PIN (``pin-source`` or
    ``pin-value``) serves every recorded key on the same token whose URI names none."""

    def __init__(
        self,
        state_dir: pathlib.Path,
        *,
        issuer: str,
        refresh_interval_s: int | None = None,
        verdict_key: str | None = None,
    ) -> None:
        self._dir = state_dir
        self._issuer = issuer
        self._refresh_interval_s = refresh_interval_s
        self._verdict_key = verdict_key
        self._state = _EMPTY
        self._index_stat: tuple[int, int, int] | None = None

    @property
    def index_path(self) -> pathlib.Path:
        return self._dir / INDEX_FILE

    @property
    def records(self) -> tuple[KeyRecord, ...]:
        return self._state.records

    @property
    def pending_kid(self) -> str | None:
        """The pending next key (published, signing nothing, not yet scheduled), if any."""
        return self._state.pending

    def record(self, kid: str) -> KeyRecord:
        for r in self._state.records:
            if r.kid == kid:
                return r
        raise KeyError(kid)

    def load_or_create(self, *, now: int, publish_ahead_s: int = DEFAULT_PUBLISH_AHEAD_S) -> None:
        """Load the keys, or make the first ones: the signing key and the pending next key,
        whose ``not_before`` is ``now + publish_ahead_s`` rounded up to the bucket. A state
        dir that cannot be written (full, read-only, not ours) is a
        :class:`ConfigurationError` naming it, not a traceback."""
        try:
            ensure_private_dir(self._dir)
            ensure_private_dir(self._dir / KEYS_DIR)
            if self.index_path.exists():
                self._load()
                if self._verdict_key is not None:
                    self._check_verdict_key()
            else:
                self._create(now=now, publish_ahead_s=publish_ahead_s)
        except OSError as e:
            raise ConfigurationError(f"state dir {self._dir}: {e.strerror or e}") from e

    def _open_verdict_key(self) -> NextKey:
        from staycheck.server.pkcs11 import Pkcs11Signer

        assert self._verdict_key is not None
        return NextKey(Pkcs11Signer(self._verdict_key))

    def _check_verdict_key(self) -> None:
        key = self._open_verdict_key()
        if all(r.kid != key.kid for r in self._state.records):
            raise ConfigurationError(
                f"verdict_key: {key.signer.uri} is key {key.kid}, which {self.index_path} "
                "does not record (staycheck keys rotate --next-key URI adds a key)"
            )

    def _create(self, *, now: int, publish_ahead_s: int) -> None:
        if self._verdict_key is not None:
            key = self._open_verdict_key()
            self._commit((key.record(bucket_floor(now)),), None, [], [key])
            return
        active, pending = Ed25519Signer.generate(), Ed25519Signer.generate()
        records = (
            KeyRecord(active.kid.hex(), bucket_floor(now)),
            KeyRecord(pending.kid.hex(), _pending_not_before(now, publish_ahead_s, now)),
        )
        self._commit(records, pending.kid.hex(), [active, pending])

    def _commit(
        self,
        records: tuple[KeyRecord, ...],
        pending: str | None,
        new: list[Ed25519Signer],
        tokens: Sequence[NextKey] = (),
    ) -> None:
        for signer in new:
            path = self._dir / KEYS_DIR / f"{signer.kid.hex()}.pem"
            atomic_write(path, signer.to_pem(), mode=0o600)
        on_token = any(r.uri is not None for r in records)
        index = {
            "format": TOKEN_INDEX_FORMAT if on_token else INDEX_FORMAT,
            "pending": pending,
            "keys": [r.to_json() for r in records],
        }
        # The key files are in place before the index names them: readers never miss one.
        atomic_write(self.index_path, json.dumps(index, indent=2).encode(), mode=0o600)
        signers: dict[str, Signer] = {
            **self._state.signers,
            **{s.kid.hex(): s for s in new},
            **{k.kid: k.signer for k in tokens},
        }
        publics = {
            **self._state.publics,
            **{s.kid.hex(): s.public_key for s in new},
            **{k.kid: k.public_key for k in tokens},
        }
        self._state = _State(records, pending, signers, self._state.generation + 1, publics)
        self._index_stat = self._stat()

    def _signs_on_a_token(self, now: int) -> bool:
        keys = _signing_candidates(self._state)
        if not keys:
            return False
        started = [r for r in keys if r.not_before <= now]
        return (started[-1] if started else keys[0]).uri is not None

    def rotate(
        self,
        *,
        now: int,
        publish_ahead_s: int = DEFAULT_PUBLISH_AHEAD_S,
        emergency: bool = False,
        grace_s: int = ROTATION_GRACE_S,
        next_key: NextKey | None = None,
    ) -> Rotation:
        """Schedule the next key (see the module docstring); with ``emergency``, revoke
        every key still published and sign with a brand-new one at once. ``next_key``: a
        key on a token to be that next key (required once the signing key is on one)."""
        if publish_ahead_s < 0:
            raise ValueError("publish_ahead_s must not be negative")
        if not self.index_path.exists():
            # A mistyped --state-dir must not "revoke" keys of a store made on the spot
            # while the compromised key stays live elsewhere.
            raise ConfigurationError(
                f"{self._dir}: no verdict key store here ({INDEX_FILE}); check --state-dir"
            )
        self.load_or_create(now=now, publish_ahead_s=publish_ahead_s)
        if next_key is not None:
            return self._rotate_to_token_key(
                next_key, now=now, publish_ahead_s=publish_ahead_s, emergency=emergency,
                grace_s=grace_s,
            )  # fmt: skip
        if self._signs_on_a_token(now):
            raise ConfigurationError(
                "the verdict key is on a PKCS#11 token: name the next key (keys rotate "
                "--next-key URI, with --create to make it on the token)"
            )
        state = self._state
        new: list[Ed25519Signer] = []
        if emergency:
            # Keys no longer published cannot make a verdict that is valid now or later.
            revoked = tuple(r.kid for r in state.records if not r.revoked and _published(r, now))
            records = [_revoked(r, now) if r.kid in revoked else r for r in state.records]
            fresh = Ed25519Signer.generate()
            new.append(fresh)
            # From the bucket of ``now - grace``: a pod whose clock lags a little behind
            # this one signs with the new key inside its window too (its iat is earlier).
            kid, signs_from, replaces = fresh.kid.hex(), bucket_floor(now - grace_s), None
            records.append(KeyRecord(kid, signs_from))
        else:
            revoked = ()
            signs_from = bucket_ceil(now + publish_ahead_s)
            if state.pending is not None:
                kid = state.pending
                # Verifiers hold the not_before it was published with: never start earlier.
                signs_from = max(signs_from, self.record(kid).not_before)
                records = list(state.records)
            else:  # a state dir of the first layout: the next key is made now
                fresh = Ed25519Signer.generate()
                new.append(fresh)
                kid = fresh.kid.hex()
                records = [*state.records, KeyRecord(kid, signs_from)]
            open_windows = [
                r.kid
                for r in records
                if r.not_after is None and not r.revoked and r.kid not in (kid, state.pending)
            ]
            replaces = open_windows[-1] if open_windows else None
            records = [
                dataclasses.replace(r, not_before=signs_from)
                if r.kid == kid
                else dataclasses.replace(r, not_after=signs_from + grace_s)
                if r.kid in open_windows
                else r
                for r in records
            ]
        pending = Ed25519Signer.generate()
        new.append(pending)
        records.append(
            KeyRecord(pending.kid.hex(), _pending_not_before(now, publish_ahead_s, signs_from))
        )
        self._commit(tuple(records), pending.kid.hex(), new)
        return Rotation(kid, signs_from, replaces, pending.kid.hex(), revoked)

    def _rotate_to_token_key(
        self, key: NextKey, *, now: int, publish_ahead_s: int, emergency: bool, grace_s: int
    ) -> Rotation:
        state = self._state
        if any(r.kid == key.kid for r in state.records):
            raise ConfigurationError(
                f"next key {key.kid} is recorded already (a key signs one period only)"
            )
        revoked: tuple[str, ...] = ()
        if emergency:
            revoked = tuple(r.kid for r in state.records if not r.revoked and _published(r, now))
            records = [_revoked(r, now) if r.kid in revoked else r for r in state.records]
            signs_from, replaces = bucket_floor(now - grace_s), None  # as above
        else:
            signs_from = bucket_ceil(now + publish_ahead_s)
            open_windows = [
                r.kid
                for r in state.records
                if r.not_after is None and not r.revoked and r.kid != state.pending
            ]
            replaces = open_windows[-1] if open_windows else None
            records = [
                dataclasses.replace(r, not_after=signs_from + grace_s)
                if r.kid in open_windows
                # A pending key file never signed: its window closes now.
                else dataclasses.replace(r, not_after=now)
                if r.kid == state.pending
                else r
                for r in state.records
            ]
        records.append(key.record(signs_from))
        self._commit(tuple(records), None, [], [key])
        return Rotation(key.kid, signs_from, replaces, None, revoked)

    def signing_key(self, *, now: int) -> SigningKey:
        """The key that signs at ``now``: the newest one neither revoked nor pending whose
        ``not_before`` is at most ``now`` (before every such key: the oldest one)."""
        state = self._state
        keys = _signing_candidates(state)
        if not keys:
            raise ConfigurationError(f"{self.index_path}: no verdict keys loaded")
        started = [i for i, r in enumerate(keys) if r.not_before <= now]
        if started:
            i = started[-1]
            valid_from: int | None = keys[i].not_before
        else:
            i, valid_from = 0, None
        later = [r.not_before for r in keys[i + 1 :] if r.not_before > now]
        chosen = keys[i]
        if not started:  # a clock before every key: the rule applies from the first one on
            valid_until: int | None = chosen.not_before
        else:
            valid_until = min(later) if later else None
        backend = state.signers[chosen.kid]
        return SigningKey(
            chosen.kid,
            TokenSigner(backend),
            chosen.not_before,
            valid_from,
            valid_until,
            state.generation,
            backend,
        )

    def token_signer(self, *, now: int) -> TokenSigner:
        """The signer of :meth:`signing_key` at ``now``."""
        return self.signing_key(now=now).signer

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
            tokens = index.get("format") == TOKEN_INDEX_FORMAT
            records = tuple(_record(r, tokens=tokens) for r in index["keys"])
            kids = [r.kid for r in records]
            if "format" in index:
                if index["format"] not in (INDEX_FORMAT, TOKEN_INDEX_FORMAT):
                    raise ValueError("unknown format")
                if tokens and all(r.uri is None for r in records):
                    raise ValueError("format 3 is that of an index naming a token key")
                pending = index["pending"]
                if pending is not None and not isinstance(pending, str):
                    raise TypeError("pending must be a kid or null")
            else:
                active = index["active"]
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigurationError(f"{self.index_path}: not a verdict key index") from e
        if "format" not in index:
            if active not in kids:
                raise ConfigurationError(f"{self.index_path}: active key is not recorded")
            pending = _first_layout_pending(records, active)
        if len(set(kids)) != len(kids):
            raise ConfigurationError(f"{self.index_path}: a key is recorded twice")
        if pending is not None and not any(r.kid == pending and not r.revoked for r in records):
            raise ConfigurationError(f"{self.index_path}: pending key is not a recorded live key")
        signers: dict[str, Signer] = {}
        publics: dict[str, PublicKey] = {}
        for record in records:
            if record.uri is not None:
                token_signer = self._token_signer(record)
                signers[record.kid], publics[record.kid] = token_signer, token_signer.public_key
                continue
            path = self._dir / KEYS_DIR / f"{record.kid}.pem"
            try:
                signer = Ed25519Signer.from_pem(path.read_bytes())
            except OSError as e:
                raise ConfigurationError(f"{path}: cannot read verdict key") from e
            if signer.kid.hex() != record.kid:
                raise ConfigurationError(f"{path}: key does not match its kid")
            signers[record.kid], publics[record.kid] = signer, signer.public_key
        state = _State(records, pending, signers, self._state.generation + 1, publics)
        if not _signing_candidates(state):
            raise ConfigurationError(f"{self.index_path}: no key may sign (all revoked)")
        self._state = state
        self._index_stat = stat

    def _token_signer(self, record: KeyRecord) -> Pkcs11Signer:
        """The signer of a token key's record: the one already loaded when it is the same
        key under the same URI (its sessions and health carry over), else a new one that
        connects when it first signs."""
        from staycheck.server.pkcs11 import Pkcs11Signer, Pkcs11Uri

        assert record.uri is not None
        public = _recorded_public_key(record)
        try:
            uri = Pkcs11Uri.parse(record.uri)
        except ConfigurationError as e:
            raise ConfigurationError(f"{self.index_path}: key {record.kid}: {e}") from e
        if self._verdict_key is not None:
            given = Pkcs11Uri.parse(self._verdict_key)
            if uri.same_token(given):
                uri = uri.with_pin_of(given)
        loaded = self._state.signers.get(record.kid)
        if isinstance(loaded, Pkcs11Signer) and str(loaded.uri) == str(uri):
            return loaded
        return Pkcs11Signer(uri, expected=public)

    def key_set(self, *, now: int) -> VerdictKeySet:
        """Keys whose verdicts may still be valid at ``now``, with their windows; the
        pending key too (published before it signs), revoked ones marked so."""
        keys = []
        for record in self._state.records:
            if not _published(record, now):
                continue
            pk = self._state.publics[record.kid]
            keys.append(
                dataclasses.replace(
                    pk,
                    not_before=record.not_before,
                    not_after=record.not_after,
                    revoked=record.revoked,
                )
            )
        return VerdictKeySet(
            KeySet(
                keys,
                issuer=self._issuer,
                refresh_interval_s=self._refresh_interval_s,
                published_at=now,
            )
        )


def _pending_not_before(now: int, publish_ahead_s: int, not_earlier_than: int) -> int:
    """A pending key's ``not_before``: a publish-ahead period from ``now`` rounded up, never
    before ``not_earlier_than`` (the key scheduled just before it) and always in the
    future."""
    return max(
        bucket_ceil(now + publish_ahead_s), not_earlier_than, bucket_floor(now) + IAT_BUCKET_S
    )


def _published(record: KeyRecord, now: int) -> bool:
    """A key is published until its last verdict expired, plus the verifiers' clock skew."""
    return record.not_after is None or now <= record.not_after + MAX_TTL_S + PUBLISH_MARGIN_S


def _revoked(record: KeyRecord, now: int) -> KeyRecord:
    """``record`` revoked at ``now``: its window ends then at the latest, so it stays
    published (marked revoked) while the verdicts it signed would still be valid."""
    not_after = now if record.not_after is None else min(record.not_after, now)
    return dataclasses.replace(record, not_after=not_after, revoked=True)


def _first_layout_pending(records: tuple[KeyRecord, ...], active: str) -> str | None:
    """The first layout named the signing key ``active``. A key recorded after it with an
    open window is a next key published ahead by hand (docs/deploy.md used to say so): it
    is treated as the pending key, so it does not start signing on its own."""
    kids = [r.kid for r in records]
    later = [r.kid for r in records[kids.index(active) + 1 :] if r.not_after is None]
    return later[-1] if later else None

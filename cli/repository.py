"""The health authority's TUF repository of risk areas, built with python-tuf's Metadata API.

Roles (docs/adr/0011):

- ``root``: offline keys, a threshold of them (2 of 3 by default); rotatable.
- ``targets``: the health authority (offline). Signs the policy target (``policy.pb``: the
  matching policy and the list of departments) and delegates to one role per department,
  each restricted to its own one path (``areas/<name>.pb``), with its own keys and
  threshold, terminating (no further delegation).
- one role per department: signs its own areas file, nothing else.
- ``snapshot`` and ``timestamp``: one online key, short expiries (timestamp 6 h), refreshed
  by :meth:`AuthorityRepository.refresh` from a timer, so a frozen or withheld repository is
  noticed within hours.

On disk, under the authority's workspace::

    keys/<role>-<n>.pem        private keys (mode 0600); the offline ones belong elsewhere
                               after the ceremony (docs/deploy.md), an HSM in time (issue 12)
    repository/metadata/       N.root.json, timestamp.json, N.snapshot.json, N.targets.json,
                               N.<department>.json (consistent snapshots)
    repository/targets/        <sha256>.policy.pb, areas/<sha256>.<department>.pb

``repository/`` is what any static web server or object store serves; the servers follow
it with ``tuf.ngclient`` (``staycheck.server.follower``). Every write goes through a
temporary file and a rename, metadata after the targets it names.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, Signer
from staycheck.client.files import atomic_write, ensure_private_dir
from staycheck.client.repository import issuer_keys_path
from staycheck.geo.authoring import build_bundle
from staycheck.geo.bundle import Policy
from staycheck.geo.errors import ConfigurationError
from staycheck.trust.keys import KeySet
from staycheck.trust.riskset import POLICY_PATH, check_department_name, department_path, merge
from staycheck.v1 import bundle_pb2
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

DAY = 86400
EXPIRY_S = {"root": 365 * DAY, "targets": 90 * DAY, "snapshot": DAY, "timestamp": 6 * 3600}
DEPARTMENT_EXPIRY_S = 30 * DAY
TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
ONLINE = ("snapshot", "timestamp")
_JSON = JSONSerializer(compact=False)
LOCK_WAIT_S = 60.0
_HELD_LOCKS: dict[pathlib.Path, int] = {}
"""Workspace locks this process holds (flock is per open file: a second object in the same
process must not wait for the first)."""


def _expiry(now: int, seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(now + seconds, dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RoleInfo:
    """What ``inspect`` shows of one role."""

    name: str
    version: int
    expires: int
    threshold: int
    keyids: tuple[str, ...]


class AuthorityRepository:
    """A repository workspace: private keys and the published repository folder."""

    def __init__(self, workspace: pathlib.Path) -> None:
        self.workspace = workspace
        self.keys_dir = workspace / "keys"
        self.published = workspace / "repository"
        self.metadata_dir = self.published / "metadata"
        self.targets_dir = self.published / "targets"
        self._signers: dict[str, list[Signer]] = {}
        self._md: dict[str, Metadata[Any]] = {}

    # --- creating -------------------------------------------------------------------------

    def create(
        self,
        *,
        now: int,
        policy: Policy,
        root_keys: int = 3,
        root_threshold: int = 2,
        targets_keys: int = 3,
        targets_threshold: int = 2,
    ) -> None:
        """A new repository: root (``root_threshold`` of ``root_keys``), the health
        authority's targets (``targets_threshold`` of ``targets_keys``: no single key
        changes the policy or a delegation), and the online snapshot/timestamp key; the
        policy target with no department yet."""
        if (self.metadata_dir / "1.root.json").exists():
            raise ConfigurationError(f"{self.published}: a repository exists already")
        _check_threshold("root", root_threshold, root_keys)
        _check_threshold("targets", targets_threshold, targets_keys)
        for folder in (self.workspace, self.keys_dir):
            ensure_private_dir(folder)
        self._lock()
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        root = Root(expires=_expiry(now, EXPIRY_S["root"]), consistent_snapshot=True)
        self._signers["root"] = [self._new_key(f"root-{i + 1}") for i in range(root_keys)]
        self._signers["targets"] = [self._new_key(f"targets-{i + 1}") for i in range(targets_keys)]
        online = self._new_key("online-1")
        self._signers["snapshot"] = self._signers["timestamp"] = [online]
        for role in TOP_LEVEL:
            for signer in self._signers[role]:
                root.add_key(signer.public_key, role)
        root.roles["root"].threshold = root_threshold
        root.roles["targets"].threshold = targets_threshold
        self._md["root"] = Metadata(root)
        self._sign_and_write("root")
        targets = Targets(expires=_expiry(now, EXPIRY_S["targets"]))
        targets.delegations = Delegations(keys={}, roles={})
        self._md["targets"] = Metadata(targets)
        self._put_policy(bundle_pb2.RiskPolicy(policy=policy.to_proto()), now=now)
        self._md["snapshot"] = Metadata(Snapshot(expires=_expiry(now, EXPIRY_S["snapshot"])))
        self._md["timestamp"] = Metadata(Timestamp(expires=_expiry(now, EXPIRY_S["timestamp"])))
        self._publish_top(now=now, targets_changed=True, first=True)

    def _new_key(self, name: str) -> Signer:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self.keys_dir / f"{name}.pem"
        if path.exists():
            raise ConfigurationError(f"{path}: exists; refusing to overwrite a key")
        atomic_write(path, pem, mode=0o600)
        return CryptoSigner(key)

    # --- loading --------------------------------------------------------------------------

    def _lock(self) -> None:
        """One writing process at a time (an hourly ``refresh`` and a ``publish`` at once
        would write the same snapshot version twice): an exclusive lock on ``.lock`` in the
        workspace, waited for up to a minute, held until this process ends."""
        path = (self.workspace / ".lock").resolve()
        if path in _HELD_LOCKS:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise ConfigurationError(
                        f"{self.workspace}: another authority command is writing it"
                    ) from None
                time.sleep(0.1)
        _HELD_LOCKS[path] = fd

    def close(self) -> None:
        """Let other processes write the workspace (the lock is otherwise held until this
        process ends); this object must not write it afterwards."""
        fd = _HELD_LOCKS.pop((self.workspace / ".lock").resolve(), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    @classmethod
    def open(cls, workspace: pathlib.Path) -> AuthorityRepository:
        """An existing workspace: the newest metadata of every role, and the keys found."""
        repo = cls(workspace)
        if not (repo.metadata_dir / "1.root.json").exists():
            raise ConfigurationError(f"{repo.published}: no repository here (no 1.root.json)")
        repo._lock()
        root_versions = sorted(
            int(p.name.split(".")[0]) for p in repo.metadata_dir.glob("*.root.json")
        )
        if not root_versions:
            raise ConfigurationError(f"{repo.published}: no repository here (no 1.root.json)")
        repo._md["root"] = Metadata.from_file(
            str(repo.metadata_dir / f"{root_versions[-1]}.root.json")
        )
        repo._md["timestamp"] = Metadata.from_file(str(repo.metadata_dir / "timestamp.json"))
        snap_version = repo._md["timestamp"].signed.snapshot_meta.version
        repo._md["snapshot"] = Metadata.from_file(
            str(repo.metadata_dir / f"{snap_version}.snapshot.json")
        )
        for name, meta in repo._md["snapshot"].signed.meta.items():
            role = name.removesuffix(".json")
            repo._md[role] = Metadata.from_file(str(repo.metadata_dir / f"{meta.version}.{name}"))
        repo._load_signers()
        return repo

    def _load_signers(self) -> None:
        by_keyid: dict[str, Signer] = dict(signers_for(sorted(self.keys_dir.glob("*.pem"))))
        for path in sorted(self.keys_dir.glob("*.uri")):
            from staycheck.server.tuf_signer import Pkcs11TufSigner

            token_signer = Pkcs11TufSigner(path.read_text().strip())
            by_keyid[token_signer.public_key.keyid] = token_signer
        for role in self._roles():
            keyids = self._keyids(role)
            self._signers[role] = [by_keyid[k] for k in keyids if k in by_keyid]

    def _roles(self) -> list[str]:
        return [*TOP_LEVEL, *self.delegated()]

    def _keyids(self, role: str) -> list[str]:
        if role in TOP_LEVEL:
            return list(self._md["root"].signed.roles[role].keyids)
        delegations = self._md["targets"].signed.delegations
        assert delegations is not None and delegations.roles is not None
        return list(delegations.roles[role].keyids)

    def delegated(self) -> list[str]:
        """Every delegated role: the departments and the issuers."""
        delegations = self._md["targets"].signed.delegations
        if delegations is None or delegations.roles is None:
            return []
        return list(delegations.roles)

    def departments(self) -> list[str]:
        """The departments whose areas count (the policy's list)."""
        return [d.name for d in self.policy().departments]

    # --- departments ----------------------------------------------------------------------

    def add_department(
        self,
        name: str,
        *,
        now: int,
        keys: int = 1,
        threshold: int = 1,
        key_uris: Sequence[str] = (),
    ) -> None:
        """A delegated role for ``name``, restricted to ``areas/<name>.pb``, with ``keys``
        new keys (or the keys on tokens that ``key_uris`` name, RFC 7512) of which
        ``threshold`` must sign; it starts with an empty areas file."""
        check_department_name(name)
        signers = self._role_keys(name, keys, key_uris)
        self._delegate(name, department_path(name), signers, threshold=threshold)
        policy = self.policy()
        policy.departments.add(name=name, path=department_path(name))
        self._put_policy(policy, now=now)
        self._md[name] = Metadata(Targets(expires=_expiry(now, DEPARTMENT_EXPIRY_S)))
        self._put_areas(name, bundle_pb2.RiskAreaSet(department=name), now=now, bump=False)
        self._publish_top(now=now, targets_changed=True)

    def rotate_department_keys(
        self, name: str, *, now: int, keys: int = 1, threshold: int = 1
    ) -> None:
        """New keys for a department (after a loss or a theft): the health authority's
        targets role replaces the delegation's keys; the department re-signs its file."""
        if name not in self.departments():
            raise ConfigurationError(f"department {name}: not in the repository")
        _check_threshold(name, threshold, keys)
        targets = self._md["targets"].signed
        for keyid in self._keyids(name):
            targets.revoke_key(keyid, name)
        signers = [
            self._new_key(f"{name}-{_next_index(self.keys_dir, name) + i}") for i in range(keys)
        ]
        for signer in signers:
            targets.add_key(signer.public_key, name)
        assert targets.delegations is not None and targets.delegations.roles is not None
        targets.delegations.roles[name].threshold = threshold
        self._signers[name] = signers
        self._md[name].signed.version += 1
        self._sign_and_write(name)
        self._publish_top(now=now, targets_changed=True)

    def add_issuer(
        self,
        code: str,
        *,
        now: int,
        keys: int = 1,
        threshold: int = 1,
        key_uris: Sequence[str] = (),
    ) -> None:
        """A delegated role ``issuer-<code>`` that may publish that issuer's verdict key set
        (``keys/<code>.jwks.json``) and nothing else; verifiers follow it."""
        name = f"issuer-{code}"
        path = issuer_keys_path(code)
        if name in self.delegated():
            raise ConfigurationError(f"issuer {code}: already in the repository")
        self._delegate(name, path, self._role_keys(name, keys, key_uris), threshold=threshold)
        self._md[name] = Metadata(Targets(expires=_expiry(now, DEPARTMENT_EXPIRY_S)))
        self._sign_and_write(name)
        self._publish_top(now=now, targets_changed=True)

    def publish_keys(self, code: str, jwks: bytes, *, now: int) -> None:
        """The issuer's role publishes its key set (checked: a JWKS of that issuer)."""
        name = f"issuer-{code}"
        if name not in self.delegated():
            raise ConfigurationError(f"issuer {code}: no role in the repository")
        keys = KeySet.from_jwks(jwks)
        if keys.issuer != code:
            raise ConfigurationError(f"issuer {code}: the key set names issuer {keys.issuer}")
        path = issuer_keys_path(code)
        role = self._md[name].signed
        role.targets = {path: self._write_target(path, jwks)}
        role.expires = _expiry(now, DEPARTMENT_EXPIRY_S)
        role.version += 1
        self._sign_and_write(name)
        self._publish_top(now=now, targets_changed=False)

    def _role_keys(self, name: str, keys: int, key_uris: Sequence[str]) -> list[Signer]:
        if name in self.delegated():
            raise ConfigurationError(f"role {name}: exists")
        if key_uris:
            return [self._token_key(f"{name}-{i + 1}", uri) for i, uri in enumerate(key_uris)]
        return [self._new_key(f"{name}-{i + 1}") for i in range(keys)]

    def _token_key(self, name: str, uri: str) -> Signer:
        """A key on a PKCS#11 token: its URI (never a PIN value) is kept in the workspace in
        place of a private key file."""
        from staycheck.server.tuf_signer import Pkcs11TufSigner

        if "pin-value=" in uri.lower():
            raise ConfigurationError(
                "key URI: use pin-source=file:... here; a pin-value would be stored in the "
                "workspace"
            )
        signer = Pkcs11TufSigner(uri)
        path = self.keys_dir / f"{name}.uri"
        if path.exists():
            raise ConfigurationError(f"{path}: exists; refusing to overwrite a key")
        atomic_write(path, uri.encode() + b"\n", mode=0o600)
        return signer

    def _delegate(self, name: str, path: str, signers: list[Signer], *, threshold: int) -> None:
        if not 1 <= threshold <= len(signers):
            raise ConfigurationError(f"{name}: the threshold must be within [1, keys]")
        self._signers[name] = signers
        targets = self._md["targets"].signed
        assert targets.delegations is not None and targets.delegations.roles is not None
        targets.delegations.roles[name] = DelegatedRole(
            name=name, keyids=[], threshold=threshold, terminating=True, paths=[path]
        )
        for signer in signers:
            targets.add_key(signer.public_key, name)

    def publish_areas(
        self,
        name: str,
        collection: Any,
        *,
        now: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Validate the GeoJSON (:meth:`candidate`) and publish it as the department's areas
        file; returns the number of areas."""
        area_set = self.candidate(name, collection, now=now, progress=progress)
        self._put_areas(name, area_set, now=now, bump=True)
        self._publish_top(now=now, targets_changed=False)
        return len(area_set.areas)

    def candidate(
        self,
        name: str,
        collection: Any,
        *,
        now: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> bundle_pb2.RiskAreaSet:
        """The areas file that publishing ``collection`` for ``name`` would write, after every
        check of ``staycheck.geo.authoring`` (geometries, ids, levels, windows, cities)."""
        if name not in self.departments():
            raise ConfigurationError(f"department {name}: not in the repository")
        checked = build_bundle(
            collection,
            version=1,
            issued_at=now,
            expires_at=now + 1,
            policy=Policy(),
            progress=progress,
        )
        return bundle_pb2.RiskAreaSet(department=name, areas=checked.areas)

    def set_policy(self, policy: Policy, *, now: int) -> None:
        message = self.policy()
        message.policy.CopyFrom(policy.to_proto())
        self._put_policy(message, now=now)
        self._publish_top(now=now, targets_changed=True)

    def refresh(self, *, now: int) -> None:
        """The online key's job, from a timer: new snapshot and timestamp, fresh expiries."""
        self._publish_top(now=now, targets_changed=False)

    def rotate_root(self, *, now: int, keys: int = 3, threshold: int = 2) -> None:
        """New root keys: the new root is signed by a threshold of the old keys and of the
        new ones (as TUF requires), so clients holding the old root move to the new."""
        _check_threshold("root", threshold, keys)
        root = self._md["root"].signed
        old = self._signers["root"]
        if len(old) < root.roles["root"].threshold:
            raise ConfigurationError(
                f"root: {len(old)} of the current root keys in {self.keys_dir}, "
                f"{root.roles['root'].threshold} needed to sign the new root (bring them "
                "for the ceremony)"
            )
        previous = Metadata[Root].from_bytes(self._md["root"].to_bytes(_JSON))
        for keyid in list(root.roles["root"].keyids):
            root.revoke_key(keyid, "root")
        new = [self._new_key(f"root-{_next_index(self.keys_dir, 'root') + i}") for i in range(keys)]
        for signer in new:
            root.add_key(signer.public_key, "root")
        root.roles["root"].threshold = threshold
        root.version += 1
        root.expires = _expiry(now, EXPIRY_S["root"])
        self._md["root"].signatures.clear()
        for root_signer in [*old, *new]:
            self._md["root"].sign(root_signer, append=True)
        # What every client checks (TUF 5.3.4): the old root's threshold and the new one's.
        new_root = self._md["root"]
        payload = new_root.signed_bytes
        previous.signed.verify_delegate("root", payload, new_root.signatures)
        new_root.signed.verify_delegate("root", payload, new_root.signatures)
        self._signers["root"] = new
        self._write_metadata("root")

    def rotate_online_key(self, *, now: int) -> None:
        """A new snapshot/timestamp key (after a theft, or a fast-forward attack): root
        names it in place of the old one; clients that see the rotation drop the snapshot
        and timestamp they trusted (TUF 5.3.11) and follow the new ones."""
        root = self._md["root"].signed
        for role in ONLINE:
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
        online = self._new_key(f"online-{_next_index(self.keys_dir, 'online')}")
        for role in ONLINE:
            root.add_key(online.public_key, role)
            self._signers[role] = [online]
        root.version += 1
        self._sign_and_write("root")
        self._publish_top(now=now, targets_changed=False)

    # --- reading --------------------------------------------------------------------------

    def policy(self) -> bundle_pb2.RiskPolicy:
        info = self._md["targets"].signed.targets[POLICY_PATH]
        return bundle_pb2.RiskPolicy.FromString(self._read_target(info))

    def areas(self, name: str) -> bundle_pb2.RiskAreaSet:
        """The areas file the department ``name`` has published (empty until it does)."""
        if name not in self.departments():
            raise ConfigurationError(f"department {name}: not in the repository")
        info = self._md[name].signed.targets[department_path(name)]
        return bundle_pb2.RiskAreaSet.FromString(self._read_target(info))

    def merged(self, *, now: int) -> bundle_pb2.RiskAreaBundle:
        """Every department's published areas as servers merge them (ids prefixed with the
        department), with the policy; version and expiry those of the snapshot and the
        earliest metadata expiry, as a server would see them."""
        policy = self.policy()
        sets = {
            d.name: self.areas(d.name).SerializeToString(deterministic=True)
            for d in policy.departments
        }
        roles = {r.name: r for r in self.roles()}
        expires = min(r.expires for name, r in roles.items() if name != "root")
        return merge(
            policy,
            sets,
            version=roles["snapshot"].version,
            issued_at=min(now, expires - 1),
            expires_at=expires,
        )

    def trusted_root(self) -> bytes:
        """``1.root.json``: what servers and verifiers start from (in their image or a secret)."""
        return (self.metadata_dir / "1.root.json").read_bytes()

    def roles(self) -> list[RoleInfo]:
        out = []
        for role in self._roles():
            signed = self._md[role].signed
            out.append(
                RoleInfo(
                    role,
                    signed.version,
                    int(signed.expires.timestamp()),
                    self._threshold(role),
                    tuple(self._keyids(role)),
                )
            )
        return out

    # --- writing --------------------------------------------------------------------------

    def _put_policy(self, policy: bundle_pb2.RiskPolicy, *, now: int) -> None:
        data = policy.SerializeToString(deterministic=True)
        targets = self._md["targets"].signed
        targets.targets[POLICY_PATH] = self._write_target(POLICY_PATH, data)
        targets.expires = _expiry(now, EXPIRY_S["targets"])

    def _put_areas(
        self, name: str, area_set: bundle_pb2.RiskAreaSet, *, now: int, bump: bool
    ) -> None:
        path = department_path(name)
        data = area_set.SerializeToString(deterministic=True)
        role = self._md[name].signed
        role.targets = {path: self._write_target(path, data)}
        role.expires = _expiry(now, DEPARTMENT_EXPIRY_S)
        if bump:
            role.version += 1
        self._sign_and_write(name)

    def _write_target(self, path: str, data: bytes) -> TargetFile:
        info = TargetFile.from_data(path, data, ["sha256"])
        folder, _, filename = path.rpartition("/")
        where = self.targets_dir / folder if folder else self.targets_dir
        where.mkdir(parents=True, exist_ok=True)
        atomic_write(where / f"{info.hashes['sha256']}.{filename}", data, mode=0o644)
        return info

    def _read_target(self, info: TargetFile) -> bytes:
        folder, _, filename = info.path.rpartition("/")
        where = self.targets_dir / folder if folder else self.targets_dir
        return (where / f"{info.hashes['sha256']}.{filename}").read_bytes()

    def _publish_top(self, *, now: int, targets_changed: bool, first: bool = False) -> None:
        """Sign targets (when it changed), then snapshot and timestamp over the newest
        versions, in that order, so a reader never sees metadata naming a missing file."""
        if targets_changed:
            if not first:
                self._md["targets"].signed.version += 1
            self._sign_and_write("targets")
        snapshot = self._md["snapshot"].signed
        snapshot.meta = {
            f"{role}.json": MetaFile(version=self._md[role].signed.version)
            for role in ["targets", *self.delegated()]
        }
        timestamp = self._md["timestamp"].signed
        if not first:
            snapshot.version += 1
            timestamp.version += 1
        snapshot.expires = _expiry(now, EXPIRY_S["snapshot"])
        snapshot_bytes = self._sign_and_write("snapshot")
        timestamp.snapshot_meta = MetaFile(
            version=snapshot.version,
            length=len(snapshot_bytes),
            hashes={"sha256": hashlib.sha256(snapshot_bytes).hexdigest()},
        )
        timestamp.expires = _expiry(now, EXPIRY_S["timestamp"])
        self._sign_and_write("timestamp")

    def _sign_and_write(self, role: str) -> bytes:
        md = self._md[role]
        md.signatures.clear()
        signers = self._signers.get(role, [])
        needed = self._threshold(role)
        if needed < 1:
            raise ConfigurationError(f"{role}: a threshold below 1 signs nothing")
        if len(signers) < needed:
            raise ConfigurationError(
                f"{role}: {len(signers)} of its keys in {self.keys_dir}, {needed} needed to sign"
            )
        for signer in signers[:needed] if role != "root" else signers:
            md.sign(signer, append=True)
        return self._write_metadata(role)

    def _threshold(self, role: str) -> int:
        if role in TOP_LEVEL:
            return int(self._md["root"].signed.roles[role].threshold)
        delegations = self._md["targets"].signed.delegations
        assert delegations is not None and delegations.roles is not None
        return int(delegations.roles[role].threshold)

    def _write_metadata(self, role: str) -> bytes:
        md = self._md[role]
        data = md.to_bytes(_JSON)
        name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
        atomic_write(self.metadata_dir / name, data, mode=0o644)
        return data


def _check_threshold(role: str, threshold: int, keys: int) -> None:
    if not 1 <= threshold <= keys:
        raise ConfigurationError(f"{role}: the threshold must be within [1, number of keys]")


def _next_index(keys_dir: pathlib.Path, prefix: str) -> int:
    taken = [
        int(p.stem.rsplit("-", 1)[1])
        for p in [*keys_dir.glob(f"{prefix}-*.pem"), *keys_dir.glob(f"{prefix}-*.uri")]
        if p.stem.rsplit("-", 1)[1].isdigit()
    ]
    return max(taken, default=0) + 1


def signers_for(paths: Iterable[pathlib.Path]) -> Mapping[str, CryptoSigner]:
    """Signers from PEM files, by TUF key id (for an offline signing step)."""
    out = {}
    for path in paths:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{path}: not an Ed25519 key")
        signer = CryptoSigner(key)
        out[signer.public_key.keyid] = signer
    return out

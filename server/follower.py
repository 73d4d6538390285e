"""Following the risk-area repository with python-tuf's ngclient.

:class:`RepositoryFollower` refreshes a stock ``tuf.ngclient.Updater`` (root, timestamp,
snapshot, targets and the department roles, with every TUF check: signatures and
thresholds, rollback, freeze, mix-and-match, path restrictions of delegations, length and
hash of every download), downloads the policy target and each listed department's areas
file, and merges them (``staycheck.trust.riskset.merge``) into one bundle message. A refresh
that fails any check raises and changes nothing: the caller keeps serving the last good
set. The TUF side is :class:`staycheck.client.repository.RepositoryClient` (stock ngclient
and, for a local folder, our one fetcher).

TUF's local metadata (the trusted root and the newest trusted versions) lives in
``tuf/metadata`` in the state dir, so a restart resumes where it was and cannot be rolled
back; downloaded targets are kept beside it and used again while their hashes match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from staycheck.client.repository import RepositoryClient
from staycheck.trust.riskset import POLICY_PATH, merge, read_policy
from staycheck.v1 import bundle_pb2


@dataclass(frozen=True)
class Refreshed:
    """One successful refresh: the merged bundle and what it came from."""

    bundle: bundle_pb2.RiskAreaBundle
    snapshot_version: int
    timestamp_version: int
    expires_at: int
    departments: tuple[str, ...]
    content: str
    """SHA-256 over the signed hashes of the policy and every areas file: equal when only
    the metadata moved on (an hourly re-signing), so the index need not be rebuilt."""
    role_versions: Mapping[str, int] = field(default_factory=dict)
    """The version of every role trusted in this refresh (root, timestamp, snapshot,
    targets and each department's)."""


class RepositoryFollower:
    """A server's view of the repository at ``source`` (an http(s) URL, or a local folder),
    starting from ``trusted_root`` the first time; TUF's metadata in ``state_dir/folder``."""

    def __init__(
        self, state_dir: pathlib.Path, source: str, *, trusted_root: bytes, folder: str = "tuf"
    ) -> None:
        self._client = RepositoryClient(state_dir / folder, source, trusted_root=trusted_root)

    def refresh(self, *, now: int) -> Refreshed:
        """Refresh and merge; raises ``tuf.api.exceptions.RepositoryError`` (or a download
        error) for anything TUF refuses, :class:`MalformedError` for content we refuse."""
        client = self._client
        client.refresh()
        hashes: list[str] = []

        def target(path: str) -> bytes:
            hashes.append(f"{path} {client.target_info(path).hashes['sha256']}")
            return client.target(path)

        policy = read_policy(target(POLICY_PATH))
        sets = {d.name: target(d.path) for d in policy.departments}
        # What ngclient verified and kept (read after the refresh).
        signed = {
            role: client.trusted(role)
            for role in ("timestamp", "snapshot", "targets", *(d.name for d in policy.departments))
        }
        expires = min(_seconds(s.expires) for s in signed.values())
        snapshot_version = int(signed["snapshot"].version)
        bundle = merge(
            policy,
            sets,
            version=snapshot_version,
            issued_at=min(now, expires - 1),
            expires_at=expires,
        )
        return Refreshed(
            bundle,
            snapshot_version,
            int(signed["timestamp"].version),
            expires,
            tuple(d.name for d in policy.departments),
            hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            {"root": int(client.trusted("root").version)}
            | {role: int(s.version) for role, s in signed.items()},
        )


def _seconds(moment: dt.datetime) -> int:
    return int(moment.timestamp())

"""The risk-area set as TUF delivers it: a policy target and one areas target per department,
merged into the one bundle message the matching rule reads.

Repository layout (docs/adr/0011):

- ``policy.pb`` (:data:`POLICY_PATH`), a ``staycheck.v1.RiskPolicy``, signed by the health
  authority's top-level ``targets`` role: the matching policy and the departments whose
  areas count, each with its one path.
- ``areas/<department>.pb`` (:func:`department_path`), a ``staycheck.v1.RiskAreaSet``, signed
  by the department's delegated role, which may publish that path and no other.

TUF (python-tuf's ngclient) has checked every signature, threshold, version, expiry, length
and hash before any of these bytes reach :func:`merge`; what this module checks is what TUF
cannot know: that each file is the message it should be, that a department's file names
that department, and that the merged areas are a valid bundle (``staycheck.geo.bundle``).
Area ids are prefixed with the department (``police/a-17``), so two departments never
collide.

Pure: bytes in, a message out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from google.protobuf.message import DecodeError
from staycheck.geo.errors import MalformedError
from staycheck.v1 import bundle_pb2

POLICY_PATH = "policy.pb"
DEPARTMENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}", re.ASCII)
MAX_DEPARTMENTS = 64


def department_path(name: str) -> str:
    """The one target path the department ``name`` may publish."""
    check_department_name(name)
    return f"areas/{name}.pb"


def check_department_name(name: str) -> None:
    if not DEPARTMENT_NAME.fullmatch(name) or name in {"root", "targets", "snapshot", "timestamp"}:
        raise MalformedError(
            "department: a name of lower-case letters, digits and '-', 1-32 characters, "
            "starting with a letter, and not a top-level role's"
        )


def read_policy(data: bytes) -> bundle_pb2.RiskPolicy:
    """The policy target, checked: departments named and pathed by the rules above."""
    try:
        policy = bundle_pb2.RiskPolicy.FromString(data)
    except DecodeError as e:
        raise MalformedError(f"{POLICY_PATH}: not a RiskPolicy message") from e
    if not policy.HasField("policy"):
        raise MalformedError(f"{POLICY_PATH}: policy is required")
    if len(policy.departments) > MAX_DEPARTMENTS:
        raise MalformedError(f"{POLICY_PATH}: at most {MAX_DEPARTMENTS} departments")
    names = set()
    for i, dept in enumerate(policy.departments):
        check_department_name(dept.name)
        if dept.path != department_path(dept.name):
            raise MalformedError(f"{POLICY_PATH}: departments[{i}].path must be areas/<name>.pb")
        if dept.name in names:
            raise MalformedError(f"{POLICY_PATH}: departments[{i}].name is listed twice")
        names.add(dept.name)
    return policy


def merge(
    policy: bundle_pb2.RiskPolicy,
    area_sets: Mapping[str, bytes],
    *,
    version: int,
    issued_at: int,
    expires_at: int,
) -> bundle_pb2.RiskAreaBundle:
    """One bundle message from the policy and each listed department's areas file.

    ``area_sets`` maps each department the policy lists to its target's bytes, exactly those;
    ``version`` is the repository snapshot's version, ``expires_at`` the earliest expiry of
    the metadata it came through (in practice the timestamp's).
    """
    listed = [d.name for d in policy.departments]
    if set(area_sets) != set(listed):
        raise MalformedError("risk areas: one areas file per listed department, no other")
    bundle = bundle_pb2.RiskAreaBundle(version=version, policy=policy.policy)
    bundle.issued_at.FromSeconds(issued_at)
    bundle.expires_at.FromSeconds(expires_at)
    for name in listed:
        where = department_path(name)
        try:
            area_set = bundle_pb2.RiskAreaSet.FromString(area_sets[name])
        except DecodeError as e:
            raise MalformedError(f"{where}: not a RiskAreaSet message") from e
        if area_set.department != name:
            raise MalformedError(f"{where}: names another department than the role that signed it")
        for area in area_set.areas:
            if "/" in area.id:
                raise MalformedError(f"{where}: an area id must not contain '/'")
            merged = bundle.areas.add()
            merged.CopyFrom(area)
            merged.id = f"{name}/{area.id}"
    return bundle

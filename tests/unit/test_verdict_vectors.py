"""The public verdict vectors (tests/vectors/verdicts/cases/*.json) against the real verifier
and the real command line.

- The committed files are what ``tests/vectors/verdicts/generate.py`` makes: regenerated
  into a temporary folder and compared byte for byte, so they cannot drift from its table.
- Every case runs through ``read_presentation`` and ``verify_token`` the way a scanner runs
  it (:func:`run_case`), and the result must be the file's ``expected``. The expected values
  were written into the generator's table from the format's rules, not copied from here.
- A sample runs through ``staycheck verify --at NOW`` in a subprocess: exit 0 with the same
  ``--json`` fields, or exit 1 with the same reason.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import subprocess
import sys
from typing import Any

import cbor2
import pytest
from staycheck.geo.errors import SignedDataError
from staycheck.trust.keys import KeySet, VerdictKeySet
from staycheck.trust.presentation import read_presentation
from staycheck.trust.verifier import NO_BINDING_CHECK, Identity, SubjectId, reason, verify_token

from tests import harness
from tests.vectors.verdicts import generate

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASES_DIR = ROOT / "tests" / "vectors" / "verdicts" / "cases"
FILES = sorted(CASES_DIR.glob("*.json"))
# The layers the brief of the vectors names (EU DCC's public test data is layered so).
REQUIRED_LAYERS = {"base45", "cose", "signature", "claims", "times", "binding", "keys"}
FIELDS = [
    "description", "layer", "presentation", "jwks", "now", "subject_id",
    "no_binding_check", "min_riskset_version", "expected",
]  # fmt: skip
ACCEPTED_FIELDS = [
    "valid", "reason", "status", "issuer", "issued_at", "expires_at", "riskset_version",
    "binding",
]  # fmt: skip
REASONS = {
    "malformed", "bad signature", "unknown key", "revoked key", "expired", "binding mismatch",
    "stale bundle version", "identity not checked",
}  # fmt: skip
IDENTITY_NOT_CHECKED = "identity not checked"


def load(path: pathlib.Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def case_name(path: pathlib.Path) -> str:
    """``binding-04-wrong-id.json`` -> ``binding/wrong-id``."""
    layer, _, name = path.stem.split("-", 2)
    return f"{layer}/{name}"


def by_name(*names: str) -> list[pathlib.Path]:
    found = {case_name(p): p for p in FILES}
    return [found[n] for n in names]


# --- the files are the generator's --------------------------------------------------------


def test_committed_vectors_are_what_the_generator_makes(tmp_path: pathlib.Path):
    generate.write(tmp_path)
    made = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_bytes() for p in FILES}
    assert sorted(made) == sorted(committed)
    changed = [name for name in made if made[name] != committed[name]]
    assert not changed, f"regenerate with python -m tests.vectors.verdicts.generate: {changed}"


def test_the_generator_runs_as_a_module_and_its_check_passes():
    r = subprocess.run(
        [sys.executable, "-m", "tests.vectors.verdicts.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_the_check_sees_a_changed_file(tmp_path: pathlib.Path):
    generate.write(tmp_path)
    victim = sorted(tmp_path.glob("*.json"))[0]
    victim.write_text(victim.read_text().replace('"now": ', '"now": 1'))
    (tmp_path / "zz-99-extra.json").write_text("{}\n")
    assert generate.differences(tmp_path) == ["zz-99-extra.json", victim.name]


def test_the_file_count_is_the_generators():
    assert len(FILES) == len(generate.CASES) == len(generate.build())


def test_every_layer_has_cases():
    layers = [load(p)["layer"] for p in FILES]
    assert set(layers) >= REQUIRED_LAYERS
    for layer in REQUIRED_LAYERS:
        assert layers.count(layer) >= 2, layer


def test_every_file_has_the_documented_fields():
    for path in FILES:
        case = load(path)
        assert list(case) == FIELDS, path.name
        assert path.name.startswith(case["layer"] + "-")
        assert case["presentation"] and isinstance(case["now"], int)
        assert case["subject_id"] is None or not case["no_binding_check"]
        expected = case["expected"]
        if expected["valid"]:
            assert list(expected) == ACCEPTED_FIELDS, path.name
            assert expected["reason"] is None
            assert expected["binding"] in {"checked", "not checked", "none"}
        else:
            assert list(expected) == ["valid", "reason"], path.name
            assert expected["reason"] in REASONS, path.name


def test_both_outcomes_in_every_layer_but_the_structural_ones():
    """A layer of refusals only would pass against a verifier that refuses everything."""
    valid = {load(p)["layer"] for p in FILES if load(p)["expected"]["valid"]}
    assert valid >= {"base45", "claims", "times", "binding", "keys"}


def test_the_signer_makes_the_documented_bytes():
    """The real signing path (``TokenSigner``) and the generator's hand-made RFC 9052
    encoding agree on the base token, so hand-made variants differ from real tokens only
    where a case says."""
    by_hand = generate.enc(cbor2.CBORTag(18, generate.parts()))
    assert generate.unbound_token() == by_hand


# --- every case through the verifier ------------------------------------------------------


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """What a scanner does with a case, as ``staycheck verify`` does it: read the
    presentation, choose the identity check (the ID number with the presentation's salt,
    or explicitly none), verify at the file's ``now``, and refuse a bound verdict whose
    identity nobody chose to check or not."""
    trusted = VerdictKeySet(KeySet.from_jwks(case["jwks"]))
    try:
        presentation = read_presentation(case["presentation"])
        identity: Identity = (
            SubjectId(case["subject_id"], presentation.salt)
            if case["subject_id"] is not None
            else NO_BINDING_CHECK
        )
        verdict = verify_token(
            presentation.token,
            trusted,
            now=case["now"],
            identity=identity,
            min_riskset_version=case["min_riskset_version"],
        )
    except SignedDataError as e:
        return {"valid": False, "reason": reason(e)}
    if not verdict.binding:
        binding = "none"
    elif case["subject_id"] is not None:
        binding = "checked"
    elif case["no_binding_check"]:
        binding = "not checked"
    else:
        return {"valid": False, "reason": IDENTITY_NOT_CHECKED}
    return {
        "valid": True,
        "reason": None,
        "status": verdict.status.name,
        "issuer": verdict.issuer,
        "issued_at": verdict.issued_at,
        "expires_at": verdict.expires_at,
        "riskset_version": verdict.riskset_version,
        "binding": binding,
    }


def case_params(paths: list[pathlib.Path]) -> list[Any]:
    return [pytest.param(path, id=case_name(path)) for path in paths]


@pytest.mark.parametrize("path", case_params(FILES))
def test_vector(path: pathlib.Path):
    case = load(path)
    assert run_case(case) == case["expected"], case["description"]


# --- a sample through the command line ----------------------------------------------------

CLI_SAMPLE = by_name(
    "base45/unbound-presentation",
    "base45/bare-token",
    "base45/bad-character",
    "cose/indefinite-array",
    "signature/altered-status",
    "claims/map-not-deterministic",
    "claims/riskset-version-below-minimum",
    "times/now-at-iat-minus-skew",
    "times/expired-beyond-skew",
    "binding/right-id-lowercase-x",
    "binding/wrong-id",
    "binding/no-binding-check",
    "binding/identity-not-checked",
    "binding/unbound-with-subject-id",
    "keys/key-nbf-after-iat",
    "keys/es256-issuer",
)


def cli_args(case: dict[str, Any], keys: pathlib.Path, *, at: bool = True) -> list[str]:
    args = ["verify", case["presentation"], "--keys", str(keys), "--json"]
    if at:
        args += ["--at", str(case["now"])]
    if case["subject_id"] is not None:
        args += ["--subject-id", case["subject_id"]]
    if case["no_binding_check"]:
        args.append("--no-binding-check")
    if case["min_riskset_version"] is not None:
        args += ["--min-riskset-version", str(case["min_riskset_version"])]
    return args


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_cli_result(r: subprocess.CompletedProcess[str], expected: dict[str, Any]) -> None:
    if not expected["valid"]:
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stderr.startswith(f"refused: {expected['reason']}: "), r.stderr
        assert r.stdout == ""
        return
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {
        "status": out["status"],
        "issuer": out["issuer"],
        "issued_at": out["issued_at"],
        "expires_at": out["expires_at"],
        "riskset_version": out["riskset_version"],
        "binding": out["binding"],
    } == {
        "status": expected["status"],
        "issuer": expected["issuer"],
        "issued_at": rfc3339(expected["issued_at"]),
        "expires_at": rfc3339(expected["expires_at"]),
        "riskset_version": expected["riskset_version"],
        "binding": expected["binding"],
    }


def write_keys(tmp_path: pathlib.Path, case: dict[str, Any]) -> pathlib.Path:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(case["jwks"]), encoding="utf-8")
    return keys


@pytest.mark.parametrize("path", case_params(CLI_SAMPLE))
def test_the_cli_agrees(tmp_path: pathlib.Path, path: pathlib.Path):
    case = load(path)
    r = subprocess.run(
        [*harness.STAYCHECK, *cli_args(case, write_keys(tmp_path, case))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    check_cli_result(r, case["expected"])


def test_on_the_wall_clock_an_accepted_case_is_expired(tmp_path: pathlib.Path):
    """Without ``--at``, ``staycheck verify`` takes ``now`` from the wall clock, and the
    vectors' times are fixed in the past."""
    (path,) = by_name("base45/unbound-presentation")
    case = load(path)
    assert case["expected"]["valid"]
    r = subprocess.run(
        [*harness.STAYCHECK, *cli_args(case, write_keys(tmp_path, case), at=False)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    check_cli_result(r, {"valid": False, "reason": "expired"})

"""The wheel as a user gets it: one import package, and an install without extras that
verifies a real token and cannot import grpc, protobuf, shapely or numpy.

The wheel is built from this checkout (no build isolation: the dev venv's setuptools), then
installed into a fresh virtual environment with ``--no-index`` from ``.venv/wheelhouse``,
the base dependencies that ``make test`` downloads beforehand (the test itself reaches no
network).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from staycheck.geo.itinerary import Status
from staycheck.trust.binding import DEFAULT_PARAMETERS, compute_binding
from staycheck.trust.keys import Ed25519Signer, KeySet
from staycheck.trust.presentation import present
from staycheck.trust.verdict import TokenSigner, issue_verdict

ROOT = pathlib.Path(__file__).resolve().parents[2]
WHEELHOUSE = pathlib.Path(sys.prefix) / "wheelhouse"
EXTRAS_ONLY = ["grpc", "google.protobuf", "shapely", "numpy", "prometheus_client"]


@dataclass(frozen=True)
class Installed:
    wheel: pathlib.Path
    venv: pathlib.Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def staycheck(self) -> str:
        return str(self.venv / "bin" / "staycheck")


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    if not any(WHEELHOUSE.glob("cryptography-*.whl")):
        pytest.fail(f"no base dependencies in {WHEELHOUSE}: `make test` downloads them first")
    tmp = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp / "dist"), str(ROOT)]
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("staycheck-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    pip = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--find-links", str(WHEELHOUSE), str(wheel)]
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield Installed(wheel, venv)


def test_the_wheel_holds_one_import_package(installed: Installed):
    with zipfile.ZipFile(installed.wheel) as z:
        names = z.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top_level).decode().split() == ["staycheck"]
    outside = [n for n in names if not n.startswith(("staycheck/", "staycheck-"))]
    assert outside == []
    for package in ("geo", "trust", "client", "server", "cli", "v1"):
        assert f"staycheck/{package}/__init__.py" in names


def test_pip_show_lists_only_staycheck_modules(installed: Installed):
    shown = _run([installed.python, "-m", "pip", "show", "-f", "staycheck"])
    assert shown.returncode == 0, shown.stderr
    files = shown.stdout.split("Files:", 1)[1].split()
    modules = [f for f in files if f.endswith(".py")]
    assert modules and all(f.startswith("staycheck/") for f in modules), modules


@pytest.mark.parametrize("module", EXTRAS_ONLY)
def test_the_base_install_cannot_import(installed: Installed, module: str):
    result = _run([installed.python, "-c", f"import {module}"])
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr


def test_the_documented_check_imports_trust_and_geo(installed: Installed):
    result = _run([installed.python, "-c", "import staycheck.trust, staycheck.geo"])
    assert result.returncode == 0, result.stderr


@pytest.fixture
def token_and_keys(tmp_path: pathlib.Path) -> tuple[str, pathlib.Path, str]:
    """A real bound verdict's presentation (token and salt), and its JWKS file."""
    signer = Ed25519Signer.generate()
    salt = bytes(range(16))
    verdict = issue_verdict(
        Status.REVIEW_REQUIRED,
        now=int(time.time()),
        issuer="110000",
        riskset_version=7,
        bundle_expires_at=int(time.time()) + 7200,
        binding=compute_binding("11010519491231002X", salt),
        binding_params=DEFAULT_PARAMETERS,
    )
    token = TokenSigner(signer).sign(verdict)
    jwks = tmp_path / "keys.json"
    jwks.write_text(KeySet([signer.public_key], issuer="110000").to_json())
    return present(token, salt), jwks, salt.hex()


def test_staycheck_verify_works_without_extras(installed: Installed, token_and_keys):
    presentation, jwks, _ = token_and_keys
    result = _run(
        [installed.staycheck, "verify", presentation, "--keys", str(jwks),
         "--subject-id", "11010519491231002X", "--json"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "REVIEW_REQUIRED"
    assert out["binding"] == "checked"
    assert out["issuer"] == "110000"
    assert out["riskset_version"] == 7
    other = _run(
        [installed.staycheck, "verify", presentation, "--keys", str(jwks),
         "--subject-id", "110105194912310021"]
    )  # fmt: skip
    assert other.returncode == 1
    assert "binding mismatch" in other.stderr


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["submit", "--server", "127.0.0.1:1", "--itinerary", "trip.json"], "client"),
        (["keys", "--server", "127.0.0.1:1"], "client"),
        (["authority", "repo", "inspect", "--workspace", "ws"], "server"),
        (["serve", "--listen", "127.0.0.1:0"], "server"),
        (["verify", "--qr", "v.png", "--keys", "k.json", "--no-binding-check"], "qr"),
    ],
    ids=["submit", "keys", "authority", "serve", "verify-qr"],
)
def test_a_command_without_its_extra_names_the_extra(
    installed: Installed, tmp_path: pathlib.Path, argv: list[str], extra: str
):
    (tmp_path / "trip.json").write_text('{"stays": []}')
    result = _run([installed.staycheck, *argv], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"pip install 'staycheck[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_folders_named_like_ours_beside_a_script_change_nothing(
    installed: Installed, tmp_path: pathlib.Path, token_and_keys
):
    presentation, jwks, _ = token_and_keys
    for name in ("server", "client", "geo", "trust", "cli"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the wrong package')\n")
    (tmp_path / "server.py").write_text("raise ImportError('the wrong module')\n")
    script = tmp_path / "check.py"
    script.write_text(
        "import sys, time\n"
        "from staycheck.trust.keys import KeySet, VerdictKeySet\n"
        "from staycheck.trust.presentation import read_presentation\n"
        "from staycheck.trust.verifier import SubjectId, verify_token\n"
        "keys = VerdictKeySet(KeySet.from_jwks(open(sys.argv[2], 'rb').read()))\n"
        "p = read_presentation(sys.argv[1])\n"
        "identity = SubjectId('11010519491231002X', p.salt)\n"
        "print(verify_token(p.token, keys, now=int(time.time()), identity=identity).status.name)\n"
    )
    result = _run([installed.python, str(script), presentation, str(jwks)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "REVIEW_REQUIRED"

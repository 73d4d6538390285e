"""Layout rules: generated code is fresh; the layering contracts of ``make lint`` hold and
can fail; the pure rules load neither gRPC nor the server when imported.

The contracts themselves are in pyproject.toml (``[tool.importlinter]``, ADR 8).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest
import staycheck

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"


def test_generated_code_is_not_stale():
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def _lint_imports(tree: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with our contracts over the ``staycheck`` package found in ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def package_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """A plain copy of the installed ``staycheck`` package, to be changed by a test."""
    shutil.copytree(pathlib.Path(staycheck.__file__).parent, tmp_path / "staycheck")
    return tmp_path


def test_contracts_hold_on_the_package_as_it_is(package_copy: pathlib.Path):
    result = _lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


# (file to change, import added inside a function, contract that must break)
MUTATIONS = [
    ("client/files.py", "from staycheck.server import config", "One direction"),
    ("geo/itinerary.py", "from staycheck.trust import keys", "One direction"),
    ("trust/keys.py", "from staycheck.client import files", "One direction"),
    ("server/service.py", "from staycheck.cli import common", "One direction"),
    ("trust/verdict.py", "import grpc", "Pure rules"),
    ("geo/matching.py", "import socket", "Pure rules"),
    ("trust/verifier.py", "import shapely", "Verifier"),
    ("cli/verifier.py", "from staycheck.client import client", "Verifier"),
    ("client/client.py", "import numpy", "Client"),
]


@pytest.mark.parametrize(
    ("path", "statement", "contract"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_an_import_inside_a_function_breaks_its_contract(
    package_copy: pathlib.Path, path: str, statement: str, contract: str
):
    target = package_copy / "staycheck" / path
    with target.open("a", encoding="utf-8") as f:
        f.write(f"\n\ndef _added_later() -> None:\n    {statement}  # noqa\n")
    result = _lint_imports(package_copy)
    assert result.returncode == 1, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert broken, result.stdout
    assert any(line.startswith(contract) for line in broken), broken


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(out.stdout.split())


def _roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_the_verifier_loads_no_grpc_protobuf_shapely_or_numpy():
    loaded = _imported_after(["staycheck.trust", "staycheck.trust.verifier", "staycheck.geo"])
    assert not _roots(loaded) & {"grpc", "google", "shapely", "numpy", "prometheus_client"}
    assert not {m for m in loaded if m.startswith(("staycheck.server", "staycheck.client.client"))}


def test_the_command_line_loads_no_third_party_package_until_a_command_runs():
    loaded = _imported_after(["staycheck.cli.main"])
    assert not _roots(loaded) & {"grpc", "google", "shapely", "numpy", "prometheus_client"}
    assert not {m for m in loaded if m.startswith("staycheck.server")}

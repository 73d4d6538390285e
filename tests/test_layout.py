"""Layout rules: generated code is fresh; the pure core imports nothing from gRPC; a
verifier needs nothing from ``server``."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_is_not_stale():
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


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


def test_pure_core_imports_no_grpc_and_no_server():
    loaded = _imported_after(
        [
            "geo.matching",
            "geo.trust",
            "geo.authoring",
            "geo.render",
            "geo.diff",
            "client.verdict",
            "client.verifier",
        ]
    )
    assert not {m for m in loaded if m == "grpc" or m.startswith("grpc.")}
    assert not {m for m in loaded if m == "server" or m.startswith("server.")}


def test_cli_verify_path_needs_no_server():
    loaded = _imported_after(["client.cli", "client.client"])
    assert not {m for m in loaded if m == "server" or m.startswith("server.")}

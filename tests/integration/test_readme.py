"""The README's shell examples work as written: both blocks run, in order, with bash."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import pytest

from tests.harness import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _run(blocks: list[str], replace: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The blocks as one bash script, in a folder of the test's own, on free ports (the
    ``replace`` pairs); never leaving a server behind, even when a command fails midway."""
    script = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(blocks)
    for old, new in replace.items():
        script = script.replace(old, new)
    env = {
        **os.environ,
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_repository_block_runs_as_written(tmp_path):
    blocks = [b for b in _blocks() if "/tmp/staycheck-repo" in b]
    assert len(blocks) == 1
    result = _run(
        blocks, {"/tmp/staycheck-repo": str(tmp_path / "repo"), "50061": str(free_port())}
    )
    assert '"name": "police"' in result.stdout and '"name": "rail"' in result.stdout
    assert (tmp_path / "repo" / "ws" / "repository" / "metadata" / "1.root.json").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_readme_examples_run_as_written(tmp_path):
    blocks = [b for b in _blocks() if "/tmp/staycheck-example" in b or "certs demo" in b]
    assert len(blocks) == 2, "the example and the partner flow"
    result = _run(
        blocks,
        {
            "/tmp/staycheck-example": str(tmp_path / "example"),
            "50051": str(free_port()),
            "50052": str(free_port()),
        },
    )
    folder = tmp_path / "example"
    verdict = (folder / "verdict.json").read_text()
    assert '"status": "REVIEW_REQUIRED"' in verdict
    # verify read the QR and the piped text, and checked the identity both times.
    assert result.stdout.count("弹窗 REVIEW_REQUIRED\nbinding: checked\nissuer: 110000\n") == 2
    assert (folder / "verdict.png").read_bytes().startswith(b"\x89PNG")
    # verify-online printed the verdict with its issuer.
    assert '"issuer": "110000"' in result.stdout
    lines = (folder / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert '"REVIEW_REQUIRED"' in lines[0] and '"NO_ABNORMALITY"' in lines[1]
    assert "stays[0].departure: must be after arrival" in lines[2]
    # One summary line, in words a person reads (issue 13: it said "1 errors").
    assert "batch: 3 lines, 1 error\n" in result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_oblivious_block_runs_as_written(tmp_path):
    """The first example, then the Oblivious HTTP block in the same folder: a verdict
    obtained through the relay verifies offline, bound to the ID card."""
    first = next(b for b in _blocks() if "/tmp/staycheck-example" in b)
    (oblivious,) = [b for b in _blocks() if "staycheck relay" in b]
    result = _run(
        [first, oblivious],
        {
            "/tmp/staycheck-example": str(tmp_path / "example"),
            **{port: str(free_port()) for port in ("50051", "50053", "50054")},
        },
    )
    verdict = (tmp_path / "example" / "oblivious.json").read_text()
    assert '"status": "REVIEW_REQUIRED"' in verdict
    # Three checks of the same traveller: the QR, the piped text, and the oblivious one.
    assert result.stdout.count("弹窗 REVIEW_REQUIRED\nbinding: checked\nissuer: 110000\n") == 3


def test_the_partner_flow_stops_at_a_port_already_taken(tmp_path):
    """Issue 13: the partner block carried on after its server failed to bind; now it stops
    at the server's failure, before any partner command runs."""
    first, partners = [b for b in _blocks() if "/tmp/staycheck-example" in b or "certs demo" in b]
    folder = tmp_path / "example"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        # The first block as written (it makes the repository), on a free port;
        # then the partner block, whose public port is taken.
        script = "\n".join(
            [
                "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
                first.replace("/tmp/staycheck-example", str(folder)).replace(
                    "50051", str(free_port())
                ),
                partners.replace("50051", port).replace("50052", str(free_port())),
            ]
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env={
                **os.environ,
                "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}"
                f"{os.environ.get('PATH', '')}",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "Address already in use" in result.stderr or "cannot listen" in result.stderr
    # The very next command (its output file is made by the shell before it runs) never ran.
    assert not (folder / "beijing.jwks.json").exists(), "the block went on after the failure"


def _python_api_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_runs_as_written():
    """The three audiences' examples, in order, in one interpreter: a server in process, a
    traveller's submission through the area of ``demo_areas`` (6 h, three days ago, inside
    the Tianjin high-risk square: REVIEW_REQUIRED by the matching rule), the hotel's check."""
    blocks = _python_api_blocks()
    assert len(blocks) == 3, "verifier, server, traveller"
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "REVIEW_REQUIRED"

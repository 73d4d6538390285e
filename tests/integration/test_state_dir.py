"""The state dir at start-up: a full file system is one line naming the directory and the
error (issue 13, finding 7: it was a Python traceback), and the exit code of a
configuration error (2).

The full file system is a real tmpfs of 16 KiB, filled before the server starts, mounted in
a mount namespace of the test's own (``unshare``), so nothing outside the test sees it."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from tests.harness import STAYCHECK, write_server_files
from tests.helpers import spec_areas


def test_a_full_state_dir_at_start_up_is_one_line_naming_it(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("util-linux's unshare is needed to mount a private tmpfs")
    files = write_server_files(tmp_path, areas=spec_areas())
    files.state_dir.mkdir()
    state = shlex.quote(str(files.state_dir))
    serve = shlex.join([*STAYCHECK, *files.serve_args()])
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {state} && "
        f"(dd if=/dev/zero of={state}/fill bs=4k count=8 2>/dev/null || true) && "
        f"exec {serve}"
    )
    result = subprocess.run(
        [unshare, "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(files.state_dir) in lines[0]
    assert "No space left on device" in lines[0]
    assert result.returncode == 2

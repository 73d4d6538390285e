"""One way to start and stop a real StayCheck server, for the tests and the benchmarks.

Two shapes, one set of files:

- :func:`write_server_files` makes a health authority's TUF repository in a folder
  (``staycheck.cli.repository.AuthorityRepository``, one department), publishes the risk
  areas a test gives (:class:`Areas`) and copies the published repository to the folder the
  server follows, as a web server would serve it; :meth:`ServerFiles.serve_args` is the
  matching ``staycheck serve --repository DIR --trusted-root ROOT.json`` command line.
- :func:`in_process` runs :class:`staycheck.server.StayCheckServer` in this process on
  127.0.0.1:0 (an injected clock, direct access to the server object).
- :func:`spawn` runs a command (``staycheck serve ...`` or a launcher around it) as a
  subprocess, waits for its ``serving on HOST:PORT`` line, and always ends it: SIGTERM,
  then SIGKILL after a grace period. Its stdout lines are kept (and written to
  ``server.out``), its stderr goes to ``server.err``.

Nothing here stands in for a component: the servers, keys, repository and channels are
real. TUF checks metadata expiry against the real clock, while the in-process servers of
the tests run on a clock the test moves (often days before today); the repository is
therefore signed at ``max(real time, the test's clock)``: always fresh for TUF, and fresh
for the server's own expiry check until the test moves its clock past
``server.bundles.current.expires_at`` (the timestamp's expiry, 6 h after the publication).
This module imports no pytest, so ``bench/`` uses it too; a server that does not start
raises :class:`ServerDidNotStart` with the tail of its stderr.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from staycheck.cli.repository import AuthorityRepository
from staycheck.geo.bundle import Policy

_SCRIPT = pathlib.Path(sys.executable).parent / "staycheck"
# The console script of the environment running the tests, else the module.
STAYCHECK: list[str] = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "staycheck.cli.main"]
)
SERVING = re.compile(r"serving on (\[[^\]]+\]|[\w.-]+):(\d+)")
# Settings that would reach a spawned server from the caller's environment.
HERMETIC_PREFIXES = ("STAYCHECK_", "GRPC_", "AUDIT_")
DEPARTMENT = "health"
"""The one department of a test repository."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server that must keep its
    address across a restart, or a test that needs a port nothing listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerDidNotStart(RuntimeError):
    """The server exited, or printed no ``serving on`` line in time."""


@dataclass(frozen=True)
class Areas:
    """What a test publishes: one department's GeoJSON features and the matching policy."""

    features: tuple[Mapping[str, Any], ...] = ()
    policy: Policy = field(default_factory=Policy)

    def collection(self) -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": list(self.features)}


def signing_time(clock_now: int | None = None) -> int:
    """When a test repository signs: never before the real time (TUF's clock) nor before
    the test's clock (the server's)."""
    return max(int(time.time()), clock_now or 0)


@dataclass(frozen=True)
class ServerFiles:
    root: pathlib.Path
    repository: AuthorityRepository
    """The health authority's workspace (keys and the published repository)."""
    served: pathlib.Path
    """The folder the server follows: a copy of the published repository, as served."""
    trusted_root: pathlib.Path
    state_dir: pathlib.Path

    def serve_args(
        self, *, listen: str = "127.0.0.1:0", issuer: str = "110000", log_level: str = "info"
    ) -> list[str]:
        """``staycheck serve`` with these files (without the program name)."""
        return [
            "serve", "--listen", listen, "--repository", str(self.served),
            "--trusted-root", str(self.trusted_root), "--state-dir", str(self.state_dir),
            "--issuer", issuer, "--log-level", log_level,
        ]  # fmt: skip

    def publish(self, areas: Areas, *, now: int | None = None) -> None:
        """The department publishes ``areas`` (and the authority their policy, if it
        changed), signed at :func:`signing_time`, and the repository is served."""
        at = signing_time(now)
        repo = self.repository
        if repo.policy().policy != areas.policy.to_proto():
            repo.set_policy(areas.policy, now=at)
        repo.publish_areas(DEPARTMENT, areas.collection(), now=at)
        self.serve()

    def refresh(self, *, now: int | None = None) -> None:
        """The online key re-signs snapshot and timestamp, and the repository is served."""
        self.repository.refresh(now=signing_time(now))
        self.serve()

    def snapshot_version(self) -> int:
        """The version of the snapshot last published: what servers report as the risk-area
        set's version."""
        return next(r.version for r in self.repository.roles() if r.name == "snapshot")

    def serve(self) -> None:
        """Copy the published repository to :attr:`served` the way a careful upload does:
        targets first, then metadata, ``timestamp.json`` last and by rename."""
        src = self.repository.published
        shutil.copytree(src / "targets", self.served / "targets", dirs_exist_ok=True)
        metadata = self.served / "metadata"
        metadata.mkdir(parents=True, exist_ok=True)
        for path in sorted((src / "metadata").iterdir()):
            if path.name != "timestamp.json":
                shutil.copyfile(path, metadata / path.name)
        tmp = metadata / ".timestamp.json.tmp"
        shutil.copyfile(src / "metadata" / "timestamp.json", tmp)
        tmp.replace(metadata / "timestamp.json")


def write_server_files(
    root: pathlib.Path, *, areas: Areas | None, now: int | None = None
) -> ServerFiles:
    """A repository in ``root``/authority with one department, ``root``/root.json, and,
    unless ``areas`` is None, ``areas`` published and served from ``root``/served (None:
    nothing is served yet, so a server has no risk areas until :meth:`ServerFiles.publish`)."""
    root.mkdir(parents=True, exist_ok=True)
    at = signing_time(now)
    workspace = root / "authority"
    if (workspace / "repository" / "metadata" / "1.root.json").exists():
        repo = AuthorityRepository.open(workspace)  # a restart over the same files
    else:
        repo = AuthorityRepository(workspace)
        policy = areas.policy if areas is not None else Policy()
        # One key per offline role keeps a test quick; thresholds are tested elsewhere.
        repo.create(now=at, policy=policy, root_keys=1, root_threshold=1, targets_keys=1,
                    targets_threshold=1)  # fmt: skip
        repo.add_department(DEPARTMENT, now=at)
    files = ServerFiles(root, repo, root / "served", root / "root.json", root / "state")
    files.served.mkdir(exist_ok=True)
    files.trusted_root.write_bytes(repo.trusted_root())
    if areas is not None:
        files.publish(areas, now=at)
    return files


# --- in this process -----------------------------------------------------------------------


@dataclass
class InProcessServer:
    """A started :class:`StayCheckServer` and a default client for its public listener."""

    server: Any  # staycheck.server.StayCheckServer
    files: ServerFiles
    clock: Callable[[], int]
    client: Any  # staycheck.client.StayCheckClient
    new_client: Callable[..., Any]
    """Another public client (same credentials as ``client``); keyword arguments go to it."""
    pki: Any = None
    """With TLS: the test PKI (``tests/integration/partner_helpers.Pki``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> pathlib.Path:
        return self.files.root

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    public_target = target

    @property
    def partner_target(self) -> str:
        return f"127.0.0.1:{self.server.partner_port}"

    def partner(self, pair: Any, **options: Any) -> Any:
        """A partner client over mutual TLS with the test PKI's key pair ``pair``."""
        from staycheck.client import PartnerClient

        options.setdefault("timeout_s", 30)
        return PartnerClient(self.partner_target, credentials=self.pki.credentials(pair), **options)

    @property
    def repository(self) -> AuthorityRepository:
        return self.files.repository

    def snapshot_version(self) -> int:
        return self.files.snapshot_version()

    @property
    def state_dir(self) -> pathlib.Path:
        return self.files.state_dir

    def publish(self, areas: Areas) -> Any:
        """Publish ``areas`` in the repository, serve it, and refresh now (the
        ``ReloadResult``)."""
        self.files.publish(areas, now=self.clock())
        return self.server.reload_now()

    def refresh(self) -> Any:
        """Re-sign snapshot and timestamp (the online key's hourly job) and refresh now."""
        self.files.refresh(now=self.clock())
        return self.server.reload_now()


@contextlib.contextmanager
def in_process(
    root: pathlib.Path,
    *,
    areas: Areas | None,
    clock: Callable[[], int],
    issuer: str = "110000",
    pki: Any = None,
    monotonic: Callable[[], float] | None = None,
    grace_s: float = 0.5,
    **config: Any,
) -> Iterator[InProcessServer]:
    """A real StayCheckServer on 127.0.0.1:0 with its own state dir under ``root``.
    ``config`` goes to :class:`ServerConfig`. With ``pki`` (the test PKI), the public
    listener uses its server certificate and the clients trust its CA."""
    from staycheck.client import StayCheckClient
    from staycheck.server import ServerConfig, StayCheckServer

    files = write_server_files(root, areas=areas, now=clock())
    channel_credentials = None
    if pki is not None:
        config.update(tls_cert_path=pki.cert_path, tls_key_path=pki.key_path)
        channel_credentials = pki.credentials()
    cfg = ServerConfig(
        listen="127.0.0.1:0",
        repository=str(files.served),
        trusted_root_path=files.trusted_root,
        state_dir=files.state_dir,
        issuer=issuer,
        **config,
    )
    kwargs: dict[str, Any] = {"clock": clock}
    if monotonic is not None:
        kwargs["monotonic"] = monotonic
    server = StayCheckServer(cfg, **kwargs)
    port = server.start()

    def new_client(**options: Any) -> Any:
        options.setdefault("timeout_s", 10)
        return StayCheckClient(f"127.0.0.1:{port}", credentials=channel_credentials, **options)

    client = new_client()
    try:
        yield InProcessServer(server, files, clock, client, new_client, pki)
    finally:
        client.close()
        server.stop(grace=grace_s, drain=0)  # tests that drain say so themselves


# --- as a subprocess -----------------------------------------------------------------------


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    port: int
    banner: str
    root: pathlib.Path
    started_s: float
    """Seconds from the start of the process to its ``serving on`` line."""
    stdout_lines: list[str]
    stderr_path: pathlib.Path
    files: ServerFiles | None = None
    """The files of :func:`serve_process`; None for another command."""

    @property
    def state_dir(self) -> pathlib.Path:
        assert self.files is not None
        return self.files.state_dir

    @property
    def tmp_dir(self) -> pathlib.Path:
        """The server's ``TMPDIR`` under :func:`serve_process`."""
        return self.root / "tmp"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stdout_text(self) -> str:
        return "".join(self.stdout_lines)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def wait_for_stdout(self, pattern: str, *, timeout: float = 10) -> re.Match[str] | None:
        """The first match of ``pattern`` in stdout, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.stdout_text())
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    def wait_for_stderr(self, needle: str, *, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.stderr_text():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def stop_process(proc: subprocess.Popen[Any], *, grace_s: float = 15.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; never raises."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _pump(stream: Any, lines: list[str], copy: Any, q: queue.Queue[str | None]) -> None:
    with copy:
        for line in stream:
            lines.append(line)
            copy.write(line)
            copy.flush()
            q.put(line)
    q.put(None)


@contextlib.contextmanager
def spawn(
    command: Sequence[str],
    root: pathlib.Path,
    *,
    env: Mapping[str, str] | None = None,
    start_timeout_s: float = 30.0,
    grace_s: float = 15.0,
    on_start: Callable[[int], None] | None = None,
    files: ServerFiles | None = None,
) -> Iterator[ServeProcess]:
    """Run ``command`` in ``root`` until it prints ``serving on HOST:PORT``; always end it.

    The environment is the caller's without ``STAYCHECK_*``, ``GRPC_*`` and ``AUDIT_*``
    (the server's settings come from its flags), plus ``env``. ``on_start`` gets the pid
    right after the process starts (the bench pins it to CPUs)."""
    root.mkdir(parents=True, exist_ok=True)
    stderr_path = root / "server.err"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(HERMETIC_PREFIXES)}
    environment |= {"PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.monotonic()
    with stderr_path.open("ab") as err:
        proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=root,
            env=environment,
        )
    try:
        if on_start is not None:
            on_start(proc.pid)
        lines: list[str] = []
        q: queue.Queue[str | None] = queue.Queue()
        copy = (root / "server.out").open("a", encoding="utf-8")
        threading.Thread(target=_pump, args=(proc.stdout, lines, copy, q), daemon=True).start()
        deadline = started + start_timeout_s
        while True:
            try:
                line = q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise ServerDidNotStart(
                    f"no 'serving on' line within {start_timeout_s:.0f} s:\n"
                    + stderr_path.read_text(errors="replace")[-3000:]
                ) from None
            if line is None:
                raise ServerDidNotStart(
                    f"the server exited ({proc.wait()}) before serving:\n"
                    + stderr_path.read_text(errors="replace")[-3000:]
                )
            m = SERVING.search(line)
            if m:
                break
        port = int(m.group(2))
        if port == 0:
            raise ServerDidNotStart("with port 0 the server must print the port it got")
        started_s = time.monotonic() - started
        yield ServeProcess(proc, port, line, root, started_s, lines, stderr_path, files)
    finally:
        stop_process(proc, grace_s=grace_s)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def serve_process(
    root: pathlib.Path,
    *,
    areas: Areas,
    issuer: str = "110000",
    log_level: str = "info",
    extra_args: Sequence[str] = (),
    launcher: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> Iterator[ServeProcess]:
    """``staycheck serve`` on 127.0.0.1:0 over fresh files in ``root``, with a ``TMPDIR`` of
    its own (``root``/tmp, mode 0700). ``launcher`` replaces the program (e.g. ``[python,
    audited_serve.py]``); ``env`` is added to the environment; ``options`` go to
    :func:`spawn`."""
    files = write_server_files(root, areas=areas)
    (root / "tmp").mkdir(mode=0o700, exist_ok=True)
    program = list(launcher) if launcher is not None else STAYCHECK
    args = files.serve_args(issuer=issuer, log_level=log_level)
    environment = {"TMPDIR": str(root / "tmp"), **(env or {})}
    command = [*program, *args, *extra_args]
    with spawn(command, root, env=environment, files=files, **options) as served:
        yield served

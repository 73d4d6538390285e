"""Multi-process serving: a supervisor and N pre-forked workers sharing the port.

Python's gRPC server runs handlers under one GIL, so one process uses about one core. The
supervisor reserves the port (with ``SO_REUSEPORT``, as gRPC's own multiprocessing example
does), makes sure the verdict key exists (so workers do not race to create it), then forks
the workers before any gRPC object exists. Each worker builds its own server and index, and
binds the same port; the kernel spreads *connections* across them (not calls: a client with
one connection talks to one worker, so put a per-request balancer in front, or use many
connections). Each worker follows the repository (with TUF's trusted metadata of its own,
``tuf-worker-N`` in the state dir) and watches the key index itself, so new publications and
key rotations reach every worker; SIGHUP and SIGTERM sent to the supervisor are forwarded.
A worker that dies is restarted (at most once a second).

With a partner listener, the supervisor reads the partners file once and makes their token
buckets in shared memory (:class:`~staycheck.server.partner_access.SharedBuckets`) before
forking: the workers, restarted ones too, serve those partners and spend one budget per
partner between them, not one each.

With a metrics endpoint, worker ``i`` serves it on the configured port + ``i`` (or on a
free port each, with port 0); each prints its address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import time
from types import FrameType

from staycheck.geo.errors import ConfigurationError
from staycheck.server.config import ServerConfig
from staycheck.server.keystore import VerdictKeyStore
from staycheck.server.listeners import read_partners
from staycheck.server.logs import say
from staycheck.server.partner_access import SharedBuckets

READY_TIMEOUT_S = 60.0


def _reserve(listen: str) -> tuple[socket.socket, str]:
    """Bind ``listen`` with SO_REUSEPORT (not listening) and return the socket and the
    resolved HOST:PORT. Keeping it open keeps the port ours while workers bind it."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((bare, int(port)))
    except OSError as e:
        sock.close()
        raise ConfigurationError(f"listen: cannot bind {listen} ({e.strerror})") from e
    return sock, f"{host}:{sock.getsockname()[1]}"


def _worker_config(config: ServerConfig, index: int) -> ServerConfig:
    metrics = config.metrics_listen
    if metrics is not None:
        host, _, port = metrics.rpartition(":")
        metrics = f"{host}:{int(port) + index}" if int(port) else metrics
    return dataclasses.replace(config, workers=1, metrics_listen=metrics)


def supervise(config: ServerConfig) -> int:
    reserved = []
    sock, listen = _reserve(config.listen)
    reserved.append(sock)
    partner_listen = config.partner_listen
    if partner_listen is not None:
        psock, partner_listen = _reserve(partner_listen)
        reserved.append(psock)
    config = dataclasses.replace(config, listen=listen, partner_listen=partner_listen)
    # The supervisor makes the first keys before forking, so that every worker loads the
    # same ones (a key on a token is only recorded here, never made), gateway keys too.
    VerdictKeyStore(
        config.state_dir, issuer=config.issuer, verdict_key=config.verdict_key
    ).load_or_create(now=int(time.time()), publish_ahead_s=config.key_publish_ahead_s)
    if config.ohttp_listen is not None:  # the same for the gateway's keys
        from staycheck.server.gateway_keys import GatewayKeyStore

        GatewayKeyStore(config.state_dir).load_or_create(now=int(time.time()))
    shared_buckets = SharedBuckets(read_partners(config)) if partner_listen is not None else None

    ready_r, ready_w = os.pipe()
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            # Not the supervisor's handlers: until the worker installs its own, SIGTERM and
            # SIGINT end it and SIGHUP is ignored (it refreshes the repository as it starts).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.close(ready_r)
            for s in reserved:
                s.close()
            code = 1
            try:
                from staycheck.server.process import run_worker

                code = run_worker(
                    _worker_config(config, index),
                    index=index,
                    ready=lambda: _signal_ready(ready_w),
                    shared_buckets=shared_buckets,
                )
            except BaseException as e:  # report the type only; never let it escape the fork
                say(f"worker {index}: failed: {type(e).__name__}: {e}", err=True)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(config.workers):
        spawn(index)

    ready = 0
    deadline = time.monotonic() + READY_TIMEOUT_S
    while ready < config.workers:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or _reap(children, block=False) or stopping:
            forward(signal.SIGTERM, None)
            _wait_all(children)
            say("staycheck: a worker failed to start", err=True)
            return 1
        readable, _, _ = select.select([ready_r], [], [], min(remaining, 0.5))
        if readable:
            ready += len(os.read(ready_r, 64))
    tls = "TLS" if config.tls else "plaintext"
    say(f"serving on {listen} ({tls}, {config.workers} workers)")

    last_restart = 0.0
    while not stopping:
        for index in _reap(children, block=False):
            wait = max(0.0, last_restart + 1.0 - time.monotonic())
            time.sleep(wait)
            last_restart = time.monotonic()
            say(f"worker {index} exited; restarting it", err=True)
            spawn(index)
        if not stopping and select.select([ready_r], [], [], 0.5)[0]:
            os.read(ready_r, 64)  # a restarted worker is ready
    _wait_all(children)
    for s in reserved:
        s.close()
    say("stopped", err=True)
    return 0


def _signal_ready(fd: int) -> None:
    os.write(fd, b"1")


def _reap(children: dict[int, int], *, block: bool) -> list[int]:
    """Indexes of workers that exited."""
    gone = []
    while children:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        index = children.pop(pid, None)
        if index is not None:
            gone.append(index)
        if block:
            break
    return gone


def _wait_all(children: dict[int, int], *, timeout_s: float = 30.0) -> None:
    """Wait for every worker; past ``timeout_s`` kill the ones left."""
    deadline = time.monotonic() + timeout_s
    while children and time.monotonic() < deadline:
        if not _reap(children, block=False):
            time.sleep(0.1)
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while children:
        _reap(children, block=True)

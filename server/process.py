"""The server process: what ``staycheck serve`` runs, from start to stop.

:func:`run` builds a :class:`~staycheck.server.app.StayCheckServer`, installs the signal
handlers (SIGTERM and SIGINT stop gracefully: health turns NOT_SERVING first, in-flight
calls finish; SIGHUP refreshes the repository), starts it, prints ``serving on HOST:PORT`` once
ready (and the partner and metrics addresses), and waits for a stop signal. With
``workers > 1`` it hands over to the supervisor in ``staycheck.server.workers``, whose
worker processes each call :func:`run_worker`.

It does not build or wire the server (``staycheck.server.app``), make listeners
(``staycheck.server.listeners``) or read flags and files (``staycheck serve`` builds the
:class:`ServerConfig`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping

from staycheck.server.app import StayCheckServer
from staycheck.server.config import ServerConfig
from staycheck.server.logs import say
from staycheck.server.partner_access import SharedBuckets

log = logging.getLogger("staycheck.server")

# glibc fills freed chunks with this byte; its per-thread cache (tcache) would skip that, so
# it is turned off. Python's own small-object allocator would keep freed objects to itself,
# so it hands every allocation to malloc instead.
SCRUB_TUNABLES = ("glibc.malloc.perturb=165", "glibc.malloc.tcache_count=0")


def scrub_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment a process must start with to scrub freed memory, or None when
    ``environ`` already is one (then this process scrubs)."""
    tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    missing = [t for t in SCRUB_TUNABLES if t not in tunables]
    if not missing and environ.get("PYTHONMALLOC") == "malloc":
        return None
    return {
        **environ,
        "GLIBC_TUNABLES": ":".join([*tunables, *missing]),
        "PYTHONMALLOC": "malloc",
    }


def run(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT. Prints ``serving on HOST:PORT`` once ready. With
    ``workers > 1`` a supervisor runs that many processes sharing the port
    (``staycheck.server.workers``)."""
    if config.workers == 0:
        config = dataclasses.replace(config, workers=os.cpu_count() or 1)
    if config.workers > 1:
        from staycheck.server.workers import supervise

        return supervise(config)
    server = StayCheckServer(config)
    done = threading.Event()
    _install_signals(server, done)  # before start: a signal while loading is handled too
    port = server.start()
    bundle = server.bundles.current
    state = f"risk areas version {bundle.version}" if bundle else "no valid risk areas: NOT_SERVING"
    host = config.listen.rsplit(":", 1)[0]
    tls = "TLS" if config.tls else "plaintext"
    say(f"serving on {host}:{port} ({tls}, {state})")
    _print_side_ports(config, server)
    while not done.wait(0.5):
        pass
    log.info("stopping: finishing in-flight calls")
    server.stop()
    say("stopped", err=True)
    return 0


def _install_signals(server: StayCheckServer, done: threading.Event) -> None:
    def on_stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: server.request_reload())


def _print_side_ports(config: ServerConfig, server: StayCheckServer, prefix: str = "") -> None:
    if config.partner_listen is not None:
        phost = config.partner_listen.rsplit(":", 1)[0]
        say(f"{prefix}partners on {phost}:{server.partner_port} (mutual TLS)")
    if config.metrics_listen is not None:
        mhost = config.metrics_listen.rsplit(":", 1)[0]
        say(f"{prefix}metrics on http://{mhost}:{server.metrics_port}/metrics")
    if config.ohttp_listen is not None:
        ohost = config.ohttp_listen.rsplit(":", 1)[0]
        scheme = "https" if config.tls else "http"
        say(f"{prefix}oblivious gateway on {scheme}://{ohost}:{server.ohttp_port}/")


def run_worker(
    config: ServerConfig,
    *,
    index: int,
    ready: Callable[[], None],
    shared_buckets: SharedBuckets | None = None,
) -> int:
    """One worker process of ``staycheck.server.workers``: like :func:`run`, sharing the port
    and (with a partner listener) the partner budgets ``shared_buckets``."""
    server = StayCheckServer(
        config, reuse_port=True, shared_buckets=shared_buckets, worker_index=index
    )
    done = threading.Event()
    _install_signals(server, done)
    server.start()
    _print_side_ports(config, server, prefix=f"worker {index}: ")
    ready()
    while not done.wait(0.5):
        pass
    server.stop()
    return 0

"""The StayCheck server: wiring, lifecycle and signals.

:class:`StayCheckServer` assembles the servicer, the standard health and reflection
services, the bundle manager and the key store around one ``grpc.server``; a background
thread reloads the bundle when its file changes (or on :meth:`request_reload`, which SIGHUP
calls) and keeps the health status in step with the bundle's expiry. :func:`run` is what
``staycheck serve`` calls: it prints ``serving on HOST:PORT`` once ready and stops
gracefully on SIGTERM or SIGINT (health turns NOT_SERVING first, in-flight calls finish).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client._pb import verification_pb2 as pb
from client._pb import verification_pb2_grpc as pb_grpc
from geo.keys import AuthorityKeySet, KeySet, PublicKey
from server.bundles import BundleManager, ReloadResult
from server.config import ServerConfig
from server.keystore import VerdictKeyStore
from server.service import ItineraryVerificationServicer

log = logging.getLogger("staycheck.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ItineraryVerification"].full_name


def _now() -> int:
    return int(time.time())


class StayCheckServer:
    """One server process: build with a config, :meth:`start`, later :meth:`stop`."""

    def __init__(self, config: ServerConfig, *, clock: Callable[[], int] = _now) -> None:
        config.check()
        self.config = config
        self._clock = clock
        try:
            authority = PublicKey.from_pem(config.authority_key_path.read_bytes())
        except OSError as e:
            from geo.errors import ConfigurationError

            raise ConfigurationError(f"{config.authority_key_path}: cannot read") from e
        self.keys = VerdictKeyStore(config.state_dir, issuer=config.issuer)
        self.keys.load_or_create(now=clock())
        self.health = health.HealthServicer()
        self.bundles = BundleManager(
            config.bundle_path,
            AuthorityKeySet(KeySet([authority])),
            state_dir=config.state_dir,
            clock=clock,
            max_size=config.max_bundle_bytes,
            on_change=self._update_health,
        )
        self.servicer = ItineraryVerificationServicer(
            bundles=self.bundles,
            keys=self.keys,
            issuer=config.issuer,
            clock=clock,
            limits=config.limits,
            verdict_ttl_s=config.verdict_ttl_s,
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers),
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        pb_grpc.add_ItineraryVerificationServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="bundle-watcher", daemon=True)
        self.port = 0

    def _update_health(self) -> None:
        serving = self.bundles.serving(self._clock())
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving and not self._stop.is_set()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    def start(self) -> int:
        """Load the bundle, bind, start serving; returns the bound port."""
        self.bundles.reload()
        self._update_health()
        self.port = self._server.add_insecure_port(self.config.listen)
        self._server.start()
        self._watcher.start()
        return self.port

    def request_reload(self) -> None:
        """Ask the watcher thread to reload the bundle now (safe from a signal handler)."""
        self._reload_requested.set()

    def reload_now(self) -> ReloadResult:
        result = self.bundles.reload()
        self._update_health()
        return result

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._reload_requested.wait(self.config.reload_interval_s)
            if self._stop.is_set():
                break
            if self._reload_requested.is_set() or self.bundles.changed():
                self._reload_requested.clear()
                self.bundles.reload()
            self._update_health()

    def stop(self, grace: float | None = None) -> None:
        """Turn health NOT_SERVING, refuse new calls, let in-flight ones finish."""
        self._stop.set()
        self._reload_requested.set()
        self._update_health()
        self._server.stop(self.config.grace_s if grace is None else grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()


def run(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT. Prints ``serving on HOST:PORT`` once ready."""
    server = StayCheckServer(config)
    port = server.start()
    host = config.listen.rsplit(":", 1)[0]
    done = threading.Event()

    def on_stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: server.request_reload())
    bundle = server.bundles.current
    state = f"bundle version {bundle.version}" if bundle else "no valid bundle: NOT_SERVING"
    print(f"serving on {host}:{port} ({state})", flush=True)
    while not done.wait(0.5):
        pass
    log.info("stopping: finishing in-flight calls")
    server.stop()
    print("stopped", file=sys.stderr, flush=True)
    return 0

"""The StayCheck server: wiring, lifecycle and signals.

:class:`StayCheckServer` assembles, around the pure core:

- the public listener: ``ItineraryVerification``, the standard health service and
  reflection; TLS when given a certificate (plaintext only on loopback unless ``insecure``);
- the partner listener (optional): ``PartnerVerification`` (plus health) behind mutual TLS
  with the partner CA, and the partner interceptor (identity, allowed methods, budget).
  Partner services are never on the public listener: they are separate ``grpc.server``s;
- the bundle manager and verdict key store, and a background thread that reloads the
  bundle when its file changes (or on :meth:`request_reload`, which SIGHUP calls), picks up
  key rotations, and keeps health in step with the bundle's expiry.

:func:`run` is what ``staycheck serve`` calls: it prints ``serving on HOST:PORT`` once
ready and stops gracefully on SIGTERM or SIGINT (health turns NOT_SERVING first, in-flight
calls finish).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from staycheck.client.files import load_trust_store
from staycheck.geo.errors import ConfigurationError, Error
from staycheck.server.bundles import BundleManager, ReloadResult
from staycheck.server.config import ServerConfig
from staycheck.server.errors import DecodeGuard
from staycheck.server.keystore import VerdictKeyStore
from staycheck.server.limits import StreamLimiter
from staycheck.server.logs import say
from staycheck.server.metrics import Metrics, ObservingInterceptor
from staycheck.server.partner_access import PartnerAuthInterceptor, load_partners
from staycheck.server.partner_service import PartnerVerificationServicer
from staycheck.server.service import ItineraryVerificationServicer, VerdictCore
from staycheck.trust.keys import AuthorityKeySet, KeySet, PublicKey
from staycheck.trust.truststore import Issuer, TrustStore
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

log = logging.getLogger("staycheck.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ItineraryVerification"].full_name
PARTNER_SERVICE_NAME = ppb.DESCRIPTOR.services_by_name["PartnerVerification"].full_name
LIVENESS_NAME = "staycheck.liveness"
"""A health name that is SERVING while the process runs, whatever the bundle: for liveness
probes (an expired bundle must take a pod out of rotation, not restart it)."""


def _now() -> int:
    return int(time.time())


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"{what}: cannot read {path} ({e.strerror})") from e


class StayCheckServer:
    """One server process: build with a config, :meth:`start`, later :meth:`stop`."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], int] = _now,
        monotonic: Callable[[], float] = time.monotonic,
        reuse_port: bool = False,
    ) -> None:
        config.check()
        self.config = config
        self._clock = clock
        authority = PublicKey.from_pem(_read(config.authority_key_path, "authority key"))
        self._other_issuers = (
            load_trust_store(config.trust_store_path)
            if config.trust_store_path is not None
            else TrustStore([])
        )
        self.keys = VerdictKeyStore(config.state_dir, issuer=config.issuer)
        self.keys.load_or_create(now=clock())
        self._trust = self._build_trust()
        self.health = health.HealthServicer()
        self.bundles = BundleManager(
            config.bundle_path,
            AuthorityKeySet(KeySet([authority])),
            state_dir=config.state_dir,
            clock=clock,
            max_size=config.max_bundle_bytes,
            on_change=self._update_health,
        )
        self.metrics: Metrics | None = None
        if config.metrics_listen is not None:
            self.metrics = Metrics()
            self.metrics.add_state(self._state_gauges)
        interceptors: list[Any] = [DecodeGuard()]
        # Open streams hold a thread each: leave most threads to unary calls.
        public_streams = StreamLimiter(max(1, config.max_workers // 4))
        partner_streams = StreamLimiter(max(1, config.max_workers // 2))
        if self.metrics is not None or config.access_log:
            interceptors.append(ObservingInterceptor(self.metrics, access=config.access_log))
        self.core = VerdictCore(
            bundles=self.bundles,
            keys=self.keys,
            issuer=config.issuer,
            clock=clock,
            limits=config.limits,
            verdict_ttl_s=config.verdict_ttl_s,
            on_verdict=self.metrics.observe_verdict if self.metrics is not None else None,
        )
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # Several worker processes may share a port (``--workers``); otherwise never.
            ("grpc.so_reuseport", int(reuse_port)),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
            interceptors=[*interceptors, public_streams],
            options=options,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        pb_grpc.add_ItineraryVerificationServicer_to_server(
            ItineraryVerificationServicer(self.core), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._partner_server: Any = None
        if config.partner_listen is not None:
            assert config.partners_path is not None
            interceptor = PartnerAuthInterceptor(
                load_partners(config.partners_path), clock=monotonic
            )
            partner_options = [
                *options[1:],
                ("grpc.max_receive_message_length", config.partner_max_message_bytes),
            ]
            self._partner_server = grpc.server(
                futures.ThreadPoolExecutor(
                    max_workers=config.max_workers, thread_name_prefix="partner"
                ),
                interceptors=[*interceptors, partner_streams, interceptor],
                options=partner_options,
                maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            )
            ppb_grpc.add_PartnerVerificationServicer_to_server(
                PartnerVerificationServicer(self.core, lambda: self._trust), self._partner_server
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._partner_server)
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="watcher", daemon=True)
        self.port = 0
        self.partner_port = 0
        self.metrics_port = 0

    def _state_gauges(self) -> dict[str, float]:
        now = self._clock()
        values = {"staycheck_bundle_serving": float(self.bundles.serving(now))}
        bundle = self.bundles.current
        values["staycheck_bundle_version"] = float(bundle.version if bundle else 0)
        if bundle is not None:
            values["staycheck_bundle_issued_timestamp_seconds"] = float(bundle.issued_at)
            values["staycheck_bundle_expiry_timestamp_seconds"] = float(bundle.expires_at)
            values["staycheck_bundle_age_seconds"] = float(now - bundle.issued_at)
        values["staycheck_verdict_key_age_seconds"] = float(now - self.keys.active_not_before)
        return values

    def _build_trust(self) -> TrustStore:
        own = Issuer(self.config.issuer, "self", self.keys.key_set(now=self._clock()))
        return self._other_issuers.with_issuer(own)

    def _update_health(self) -> None:
        serving = self.bundles.serving(self._clock())
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving and not self._stop.is_set()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)
        self.health.set(PARTNER_SERVICE_NAME, status)
        self.health.set(LIVENESS_NAME, health_pb2.HealthCheckResponse.SERVING)

    def _credentials(self, *, partner: bool) -> grpc.ServerCredentials | None:
        cfg = self.config
        if not cfg.tls:
            return None
        assert cfg.tls_cert_path is not None and cfg.tls_key_path is not None
        pair = [(_read(cfg.tls_key_path, "tls key"), _read(cfg.tls_cert_path, "tls cert"))]
        if not partner:
            return grpc.ssl_server_credentials(pair)
        assert cfg.partner_ca_path is not None
        return grpc.ssl_server_credentials(
            pair,
            root_certificates=_read(cfg.partner_ca_path, "partner CA"),
            require_client_auth=True,
        )

    @staticmethod
    def _bind(server: Any, listen: str, credentials: grpc.ServerCredentials | None) -> int:
        try:
            if credentials is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, credentials)
        except RuntimeError as e:
            raise ConfigurationError(f"listen: cannot bind {listen}") from e
        return int(port)

    def start(self) -> int:
        """Bind, load the bundle, start serving; returns the public port."""
        self.port = self._bind(self._server, self.config.listen, self._credentials(partner=False))
        if self._partner_server is not None:
            assert self.config.partner_listen is not None
            self.partner_port = self._bind(
                self._partner_server, self.config.partner_listen, self._credentials(partner=True)
            )
        self.bundles.reload()
        self._update_health()
        if self.metrics is not None:
            assert self.config.metrics_listen is not None
            try:
                self.metrics_port = self.metrics.serve(self.config.metrics_listen)
            except OSError as e:
                raise ConfigurationError(f"metrics_listen: cannot bind ({e.strerror})") from e
        if self._partner_server is not None:
            self._partner_server.start()
        self._server.start()  # last: once the public port answers, everything does
        self._watcher.start()
        return self.port

    def request_reload(self) -> None:
        """Ask the watcher thread to reload the bundle now (safe from a signal handler)."""
        self._reload_requested.set()

    def reload_now(self) -> ReloadResult:
        result = self.bundles.reload()
        self._update_health()
        return result

    def reload_keys(self) -> bool:
        """Pick up a key rotation made by ``staycheck keys rotate``; True if keys changed."""
        try:
            changed = self.keys.reload_if_changed()
        except Error as e:
            log.error("verdict keys not reloaded: %s", e)
            return False
        if changed:
            self.core.refresh_signer()
            self._trust = self._build_trust()
            log.info("verdict keys reloaded: active key %s", self.keys.active_kid)
        return changed

    def _watch(self) -> None:
        last_trust = self._clock()
        while not self._stop.is_set():
            self._reload_requested.wait(self.config.reload_interval_s)
            if self._stop.is_set():
                break
            try:
                if self._reload_requested.is_set() or self.bundles.changed():
                    self._reload_requested.clear()
                    self.bundles.reload()
                if not self.reload_keys() and self._clock() - last_trust >= 60:
                    self._trust = self._build_trust()  # drop keys whose verdicts all expired
                    last_trust = self._clock()
            except Exception as e:  # never let the watcher die: reloads and health depend on it
                log.error("watcher: %s; retrying", type(e).__name__)
            finally:
                self._update_health()

    def stop(self, grace: float | None = None, *, drain: float | None = None) -> None:
        """Turn health NOT_SERVING, keep serving ``drain`` seconds (balancers notice), then
        refuse new calls and let in-flight ones finish within ``grace`` seconds."""
        self._stop.set()
        self._reload_requested.set()
        self._update_health()
        drain = self.config.drain_s if drain is None else drain
        if drain > 0:
            time.sleep(drain)
        grace = self.config.grace_s if grace is None else grace
        events = [self._server.stop(grace)]
        if self._partner_server is not None:
            events.append(self._partner_server.stop(grace))
        for event in events:
            event.wait()
        if self.metrics is not None:
            self.metrics.close()

    def wait(self) -> None:
        self._server.wait_for_termination()


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
    state = f"bundle version {bundle.version}" if bundle else "no valid bundle: NOT_SERVING"
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


def run_worker(config: ServerConfig, *, index: int, ready: Callable[[], None]) -> int:
    """One worker process of ``staycheck.server.workers``: like :func:`run`, sharing the port."""
    server = StayCheckServer(config, reuse_port=True)
    done = threading.Event()
    _install_signals(server, done)
    server.start()
    _print_side_ports(config, server, prefix=f"worker {index}: ")
    ready()
    while not done.wait(0.5):
        pass
    server.stop()
    return 0

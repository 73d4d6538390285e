"""The StayCheck server in this process: the wiring around the pure core.

:class:`StayCheckServer` assembles:

- on the public listener, ``ItineraryVerification``, the standard health service and
  reflection; on the partner listener (optional), ``PartnerVerification`` plus health;
- the risk areas followed from the TUF repository and the verdict key store, the verdict
  core, metrics, and a background thread that refreshes the repository every
  ``repository_refresh_s`` (or on :meth:`request_reload`, which SIGHUP calls), picks up key
  rotations, and keeps health in step with the risk-area set's expiry
  and with the signing key (a key on a PKCS#11 token that does not answer: NOT_SERVING
  until it is back; the thread probes it every ``reload_interval_s``).

It does not make the gRPC servers, their TLS credentials or bind their ports
(``staycheck.server.listeners``), and it installs no signal handlers and prints nothing:
running the process, ``staycheck serve``'s :func:`run`, is ``staycheck.server.process``
(``run`` and ``run_worker`` are still importable from here).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from staycheck.client.files import load_trust_store
from staycheck.geo.errors import ConfigurationError, Error
from staycheck.server.bundles import ReloadResult, RepositoryBundles
from staycheck.server.config import ServerConfig, read_file
from staycheck.server.errors import DecodeGuard
from staycheck.server.follower import RepositoryFollower
from staycheck.server.gateway import ObliviousGateway
from staycheck.server.gateway_http import GatewayListener
from staycheck.server.gateway_keys import GatewayKeyStore
from staycheck.server.keystore import VerdictKeyStore
from staycheck.server.listeners import Listeners
from staycheck.server.metrics import Metrics, ObservingInterceptor
from staycheck.server.partner_access import SharedBuckets
from staycheck.server.partner_service import PartnerVerificationServicer
from staycheck.server.service import ItineraryVerificationServicer, VerdictCore
from staycheck.trust.truststore import Issuer, TrustStore
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import partner_pb2_grpc as ppb_grpc
from staycheck.v1 import verification_pb2 as pb
from staycheck.v1 import verification_pb2_grpc as pb_grpc

log = logging.getLogger("staycheck.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ItineraryVerification"].full_name
PARTNER_SERVICE_NAME = ppb.DESCRIPTOR.services_by_name["PartnerVerification"].full_name
LIVENESS_NAME = "staycheck.liveness"
"""A health name that is SERVING while the process runs, whatever the risk areas: for
liveness probes (an expired set must take a pod out of rotation, not restart it)."""


def _now() -> int:
    return int(time.time())


class StayCheckServer:
    """One server process: build with a config, :meth:`start`, later :meth:`stop`."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], int] = _now,
        monotonic: Callable[[], float] = time.monotonic,
        reuse_port: bool = False,
        shared_buckets: SharedBuckets | None = None,
        worker_index: int | None = None,
    ) -> None:
        """``reuse_port``, ``shared_buckets`` and ``worker_index`` are for the workers of
        ``--workers``: the port and the partner budgets they share
        (``staycheck.server.listeners``), and which worker this is (each keeps TUF's trusted
        metadata apart, in ``tuf-worker-N`` of the state dir, so no two write one file)."""
        config.check()
        self.config = config
        self._clock = clock
        self._other_issuers = (
            load_trust_store(config.trust_store_path)
            if config.trust_store_path is not None
            else TrustStore([])
        )
        self.keys = VerdictKeyStore(
            config.state_dir,
            issuer=config.issuer,
            refresh_interval_s=config.key_refresh_interval_s,
            verdict_key=config.verdict_key,
        )
        self.keys.load_or_create(now=clock(), publish_ahead_s=config.key_publish_ahead_s)
        self._trust = self._build_trust()
        self.health = health.HealthServicer()
        follower = RepositoryFollower(
            config.state_dir,
            config.repository,
            trusted_root=read_file(config.trusted_root_path, "trusted root"),
            folder="tuf" if worker_index is None else f"tuf-worker-{worker_index}",
        )
        self.bundles = RepositoryBundles(
            follower,
            clock=clock,
            refresh_interval_s=config.repository_refresh_s,
            refresh_timeout_s=config.repository_timeout_s,
            on_change=self._update_health,
        )
        self.metrics: Metrics | None = None
        if config.metrics_listen is not None:
            self.metrics = Metrics()
            self.metrics.add_state(self._state_gauges)
        interceptors: list[Any] = [DecodeGuard()]
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
            on_signer_down=self._update_health,
        )
        if not self.core.probe_signer():  # a key on a token: it must sign now
            raise ConfigurationError(f"verdict key: {self.core.signer_problem()}")
        self._listeners = Listeners(
            config,
            interceptors=interceptors,
            monotonic=monotonic,
            reuse_port=reuse_port,
            shared_buckets=shared_buckets,
        )
        public = self._listeners.public
        pb_grpc.add_ItineraryVerificationServicer_to_server(
            ItineraryVerificationServicer(self.core), public
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, public)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), public
        )
        partner = self._listeners.partner
        if partner is not None:
            ppb_grpc.add_PartnerVerificationServicer_to_server(
                PartnerVerificationServicer(self.core, lambda: self._trust), partner
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, partner)
        self.gateway_keys: GatewayKeyStore | None = None
        self._gateway: GatewayListener | None = None
        if config.ohttp_listen is not None:
            self.gateway_keys = GatewayKeyStore(config.state_dir)
            self.gateway_keys.load_or_create(now=clock())
            gateway = ObliviousGateway(
                self.core,
                lambda: self.gateway_keys.keys,  # type: ignore[union-attr]
                max_message_bytes=config.max_message_bytes,
                on_answer=self.metrics.observe_oblivious if self.metrics is not None else None,
            )
            self._gateway = GatewayListener(
                gateway,
                config.ohttp_listen,
                ssl_context=self._gateway_tls(),
                reuse_port=reuse_port,
                # The request's protobuf, its Binary HTTP framing and the encapsulation.
                max_body=config.max_message_bytes + 4096,
            )
        self.ohttp_port = 0
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="watcher", daemon=True)
        self.port = 0
        self.partner_port = 0
        self.metrics_port = 0

    def _state_gauges(self) -> dict[str, float | dict[str, float]]:
        now = self._clock()
        values: dict[str, float | dict[str, float]] = {
            "staycheck_bundle_serving": float(self.bundles.serving(now))
        }
        bundle = self.bundles.current
        values["staycheck_bundle_version"] = float(bundle.version if bundle else 0)
        if bundle is not None:
            values["staycheck_bundle_issued_timestamp_seconds"] = float(bundle.issued_at)
            values["staycheck_bundle_expiry_timestamp_seconds"] = float(bundle.expires_at)
            values["staycheck_bundle_age_seconds"] = float(now - bundle.issued_at)
        signing = self.keys.signing_key(now=now)
        values["staycheck_verdict_key_age_seconds"] = float(now - signing.not_before)
        stats = self.bundles.stats
        values["staycheck_repository_refreshes_total"] = {
            reason: float(n) for reason, n in stats.outcomes.items()
        }
        if stats.last is not None:
            values["staycheck_repository_role_version"] = {
                role: float(v) for role, v in stats.last.role_versions.items()
            }
        if stats.last_success is not None:
            values["staycheck_repository_last_success_timestamp_seconds"] = float(
                stats.last_success
            )
        if stats.timestamp_since is not None:
            values["staycheck_repository_timestamp_age_seconds"] = float(
                now - stats.timestamp_since
            )
        return values

    def _gateway_tls(self) -> ssl.SSLContext | None:
        """The server's certificate for the gateway listener too, when it has one."""
        config = self.config
        if config.tls_cert_path is None or config.tls_key_path is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(config.tls_cert_path, config.tls_key_path)
        except (OSError, ssl.SSLError) as e:
            raise ConfigurationError(f"tls: cannot load the certificate and key ({e})") from e
        return context

    def _build_trust(self) -> TrustStore:
        own = Issuer(self.config.issuer, "self", self.keys.key_set(now=self._clock()))
        return self._other_issuers.with_issuer(own)

    def _update_health(self) -> None:
        serving = self.bundles.serving(self._clock()) and self.core.signer_healthy()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving and not self._stop.is_set()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)
        self.health.set(PARTNER_SERVICE_NAME, status)
        self.health.set(LIVENESS_NAME, health_pb2.HealthCheckResponse.SERVING)

    def start(self) -> int:
        """Bind, refresh the repository once, start serving; returns the public port."""
        self.port, self.partner_port = self._listeners.bind()
        self.bundles.reload()
        self._update_health()
        if self.metrics is not None:
            assert self.config.metrics_listen is not None
            try:
                self.metrics_port = self.metrics.serve(self.config.metrics_listen)
            except OSError as e:
                raise ConfigurationError(f"metrics_listen: cannot bind ({e.strerror})") from e
        if self._gateway is not None:
            self.ohttp_port = self._gateway.start()
        self._listeners.start()  # last but the watcher: once the public port answers, all do
        self._watcher.start()
        return self.port

    def request_reload(self) -> None:
        """Ask the watcher thread to refresh the repository now (safe from a signal handler)."""
        self._reload_requested.set()

    def reload_now(self) -> ReloadResult:
        result = self.bundles.reload()
        self._update_health()
        return result

    def reload_keys(self) -> bool:
        """Pick up a key rotation made by ``staycheck keys rotate``; True if keys changed.
        (A scheduled switch needs no reload: the core checks the time on every call.)"""
        try:
            changed = self.keys.reload_if_changed()
        except Error as e:
            log.error("verdict keys not reloaded: %s", e)
            return False
        if changed:
            self.core.refresh_signer()
            self._trust = self._build_trust()
            log.info(
                "verdict keys reloaded: signing key %s, pending key %s",
                self.core.signing_kid,
                self.keys.pending_kid,
            )
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
                if self.gateway_keys is not None and self.gateway_keys.reload_if_changed(
                    now=self._clock()
                ):
                    log.info("oblivious gateway keys reloaded")
                if not self.reload_keys() and self._clock() - last_trust >= 60:
                    self._trust = self._build_trust()  # drop keys whose verdicts all expired
                    last_trust = self._clock()
                self.core.probe_signer()  # a token key that went away, or came back
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
        if self._gateway is not None:
            self._gateway.stop(grace)
        self._listeners.stop(grace)
        if self.metrics is not None:
            self.metrics.close()

    def wait(self) -> None:
        self._listeners.wait()

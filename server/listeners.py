"""The listening sockets: the gRPC servers, their thread pools, options and interceptors,
TLS credentials, and the ports they bind.

:class:`Listeners` makes the public ``grpc.server`` and, with ``partner_listen``, a separate
partner one (partner services are never on the public listener). Each gets its own thread
pool and :class:`~staycheck.server.limits.StreamLimiter` (open streams hold a thread each);
the partner one also gets the :class:`~staycheck.server.partner_access.PartnerAuthInterceptor`
(identity, allowed methods, budget; with ``--workers``, the budgets all workers share) and the
larger partner message size. :meth:`Listeners.bind` binds the configured addresses: TLS when
the configuration has a certificate, plaintext otherwise, and mutual TLS with the partner CA
on the partner listener.

It does not decide what is served: ``staycheck.server.app`` adds the servicers, health and
reflection. It does not decide whether plaintext is allowed (:meth:`ServerConfig.check`:
loopback only unless ``insecure``), nor when the process starts and stops
(``staycheck.server.process``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from staycheck.geo.errors import ConfigurationError
from staycheck.server.config import ServerConfig, read_file
from staycheck.server.limits import StreamLimiter
from staycheck.server.partner_access import (
    Partner,
    PartnerAuthInterceptor,
    SharedBuckets,
    load_partners,
)


class Listeners:
    """The public server and the optional partner server. Made at construction (the
    partners file is read then), bound by :meth:`bind`, started by :meth:`start`."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        interceptors: Sequence[Any],
        monotonic: Callable[[], float],
        reuse_port: bool,
        shared_buckets: SharedBuckets | None = None,
    ) -> None:
        """``interceptors`` run first on both listeners; ``monotonic`` paces the partner
        budget; ``reuse_port`` lets several worker processes bind the same port;
        ``shared_buckets`` (a worker's: the supervisor made them) holds the partners and the
        budgets of every worker, and the partners file is not read again."""
        self._config = config
        # Open streams hold a thread each: leave most threads to unary calls.
        public_streams = StreamLimiter(max(1, config.max_workers // 4))
        partner_streams = StreamLimiter(max(1, config.max_workers // 2))
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # Several worker processes may share a port (``--workers``); otherwise never.
            ("grpc.so_reuseport", int(reuse_port)),
        ]
        self.public = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
            interceptors=[*interceptors, public_streams],
            options=options,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        self.partner: grpc.Server | None = None
        if config.partner_listen is not None:
            interceptor = PartnerAuthInterceptor(
                shared_buckets.partners if shared_buckets is not None else read_partners(config),
                clock=monotonic,
                max_items=config.partner_max_items_per_message,
                shared=shared_buckets,
            )
            partner_options = [
                *options[1:],
                ("grpc.max_receive_message_length", config.partner_max_message_bytes),
            ]
            self.partner = grpc.server(
                futures.ThreadPoolExecutor(
                    max_workers=config.max_workers, thread_name_prefix="partner"
                ),
                interceptors=[*interceptors, partner_streams, interceptor],
                options=partner_options,
                maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            )

    def bind(self) -> tuple[int, int]:
        """Bind both listeners; returns the public and the partner port (0: no partner
        listener). Reads the TLS files now."""
        cfg = self._config
        port = _bind(self.public, cfg.listen, credentials(cfg, partner=False))
        partner_port = 0
        if self.partner is not None:
            assert cfg.partner_listen is not None
            partner_port = _bind(self.partner, cfg.partner_listen, credentials(cfg, partner=True))
        return port, partner_port

    def start(self) -> None:
        if self.partner is not None:
            self.partner.start()
        self.public.start()  # last: once the public port answers, everything does

    def stop(self, grace: float) -> None:
        """Refuse new calls; return once in-flight ones finished (at most ``grace`` s)."""
        events = [self.public.stop(grace)]
        if self.partner is not None:
            events.append(self.partner.stop(grace))
        for event in events:
            event.wait()

    def wait(self) -> None:
        self.public.wait_for_termination()


def read_partners(config: ServerConfig) -> dict[str, Partner]:
    """The partners file the configuration names, checked against its partner CAs."""
    assert config.partners_path is not None
    return load_partners(
        config.partners_path,
        partner_cas=read_file(config.partner_ca_path, "partner CA")
        if config.partner_ca_path is not None
        else None,
    )


def credentials(config: ServerConfig, *, partner: bool) -> grpc.ServerCredentials | None:
    """None for plaintext; the server certificate, and on the partner listener the partner
    CA that client certificates must chain to."""
    if not config.tls:
        return None
    assert config.tls_cert_path is not None and config.tls_key_path is not None
    key = read_file(config.tls_key_path, "tls key")
    pair = [(key, read_file(config.tls_cert_path, "tls cert"))]
    if not partner:
        return grpc.ssl_server_credentials(pair)
    assert config.partner_ca_path is not None
    return grpc.ssl_server_credentials(
        pair,
        root_certificates=read_file(config.partner_ca_path, "partner CA"),
        require_client_auth=True,
    )


def _bind(server: grpc.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as e:
        raise ConfigurationError(f"listen: cannot bind {listen}") from e
    return int(port)

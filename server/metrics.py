"""Prometheus metrics and the per-call observation interceptor.

Metrics (on their own port, off by default; ``--metrics-listen HOST:PORT``):

- ``staycheck_requests_total{method, code}`` and
  ``staycheck_request_duration_seconds{method}``: per call;
- ``staycheck_verdicts_total{status}``: NO_ABNORMALITY / REVIEW_REQUIRED;
- ``staycheck_oblivious_requests_total{outcome}``: the Oblivious HTTP gateway's answers
  (``ok``, a gRPC code name, ``refused``);
- ``staycheck_bundle_version``, ``staycheck_bundle_issued_timestamp_seconds``,
  ``staycheck_bundle_expiry_timestamp_seconds``, ``staycheck_bundle_age_seconds``,
  ``staycheck_bundle_serving`` (1 when a valid bundle is in use);
- ``staycheck_verdict_key_age_seconds``: since the active verdict key's window began;
- ``staycheck_repository_refreshes_total{outcome}``: refreshes of the TUF repository by
  outcome (``accepted``, ``unchanged``, or the refusal's reason, an exception class name
  of TUF's or ours: a fixed set);
- ``staycheck_repository_role_version{role}``: the version of each role trusted (root,
  timestamp, snapshot, targets, and each department the signed policy lists);
- ``staycheck_repository_timestamp_age_seconds``: since this server first trusted the
  timestamp in use (a frozen or withheld repository: it grows past the online key's
  re-signing period, hours before the timestamp expires);
- ``staycheck_repository_last_success_timestamp_seconds``: the last refresh that worked.

Every label value comes from a fixed set (our method names, gRPC code names, the two
statuses, refusal reasons, role names from the signed metadata); nothing from a request
ever becomes a label. When neither metrics nor the access
log are on, the interceptor is not installed and calls do no observation work at all.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from staycheck.geo.itinerary import Status
from staycheck.server.interceptors import HandlerRewriter

access_log = logging.getLogger("staycheck.access")

KNOWN_METHODS = frozenset(
    {
        "SubmitItinerary",
        "GetVerdictKeys",
        "GetRiskAreaStatus",
        "VerifyVerdict",
        "VerifyVerdicts",
        "SubmitItineraries",
        "Check",
        "Watch",
        "ServerReflectionInfo",
    }
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "staycheck_requests",
            "Calls by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "staycheck_request_duration_seconds",
            "Call latency by method.",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.oblivious = Counter(
            "staycheck_oblivious_requests",
            "Oblivious HTTP requests by outcome: ok, a gRPC code name, or refused (the "
            "encapsulation did not open).",
            ["outcome"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "staycheck_verdicts",
            "Verdicts issued, by status.",
            ["status"],
            registry=self.registry,
        )
        for status in Status:
            self.verdicts.labels(status.name)

    def observe_verdict(self, status: Status) -> None:
        self.verdicts.labels(status.name).inc()

    def observe_oblivious(self, outcome: str) -> None:
        self.oblivious.labels(outcome).inc()

    def add_state(self, state: Callable[[], dict[str, float | dict[str, float]]]) -> None:
        """Gauges computed at scrape time from ``state()`` (risk-area, repository and key
        facts): a number, or for a labelled family, a number per label value."""
        self.registry.register(_StateCollector(state))

    def serve(self, listen: str) -> int:
        """Serve ``/metrics`` on ``listen`` (HOST:PORT) in a thread; returns the port."""
        host, _, port = listen.rpartition(":")
        self._http, _thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        return int(self._http.server_address[1])

    def close(self) -> None:
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()


_STATE_HELP = {
    "staycheck_bundle_version": "Version of the risk-area bundle in use (0: none).",
    "staycheck_bundle_issued_timestamp_seconds": "When the bundle in use was issued.",
    "staycheck_bundle_expiry_timestamp_seconds": "When the bundle in use expires.",
    "staycheck_bundle_age_seconds": "Seconds since the bundle in use was issued.",
    "staycheck_bundle_serving": "1 when a valid, unexpired bundle is in use.",
    "staycheck_verdict_key_age_seconds": "Seconds since the active verdict key began.",
    "staycheck_repository_refreshes_total": "Refreshes of the TUF repository, by outcome.",
    "staycheck_repository_role_version": "Version of each TUF role trusted, by role.",
    "staycheck_repository_timestamp_age_seconds": (
        "Seconds since this server first trusted the timestamp in use."
    ),
    "staycheck_repository_last_success_timestamp_seconds": (
        "When a repository refresh last succeeded."
    ),
}
_STATE_LABEL = {
    "staycheck_repository_refreshes_total": "outcome",
    "staycheck_repository_role_version": "role",
}


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, float | dict[str, float]]]) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        values = self._state()
        for name, text in _STATE_HELP.items():
            value = values.get(name)
            if value is None:
                continue
            if isinstance(value, dict):
                label = _STATE_LABEL[name]
                family: GaugeMetricFamily | CounterMetricFamily = (
                    CounterMetricFamily(name, text, labels=[label])
                    if name.endswith("_total")
                    else GaugeMetricFamily(name, text, labels=[label])
                )
                for key, number in sorted(value.items()):
                    family.add_metric([key], number)
                yield family
            else:
                yield GaugeMetricFamily(name, text, value=value)


def _method_name(full: str) -> str:
    name = full.rsplit("/", 1)[-1]
    return name if name in KNOWN_METHODS else "other"


class ObservingInterceptor(HandlerRewriter):
    """Counts and times every call; writes an access log line when asked."""

    def __init__(self, metrics: Metrics | None, *, access: bool) -> None:
        super().__init__()
        self._metrics = metrics
        self._access = access

    def _done(self, method: str, context: grpc.ServicerContext, start: float, ok: bool) -> None:
        elapsed = time.perf_counter() - start
        code_obj: Any = context.code() if hasattr(context, "code") else None
        code = code_obj.name if code_obj is not None else ("OK" if ok else "UNKNOWN")
        if self._metrics is not None:
            self._metrics.requests.labels(method, code).inc()
            self._metrics.duration.labels(method).observe(elapsed)
        if self._access:
            access_log.info(
                "call",
                extra={
                    "method": method,
                    "code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": secrets.token_hex(8),
                },
            )

    def rewrite(self, method: str, handler: Any) -> Any:
        done = functools.partial(self._done, _method_name(method))
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_timed_unary(handler.unary_unary, done))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_timed_stream(handler.stream_stream, done))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_timed_stream(handler.unary_stream, done))
        return handler


Done = Callable[[grpc.ServicerContext, float, bool], None]


def _timed_unary(behavior: Callable[..., Any], done: Done) -> Callable[..., Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        ok = False
        try:
            response = behavior(request, context)
            ok = True
            return response
        finally:
            done(context, start, ok)

    return unary


def _timed_stream(behavior: Callable[..., Any], done: Done) -> Callable[..., Any]:
    """For server-streaming handlers (the first argument is a request or an iterator)."""

    def stream(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        ok = False
        try:
            yield from behavior(request_or_iterator, context)
            ok = True
        finally:
            done(context, start, ok)

    return stream

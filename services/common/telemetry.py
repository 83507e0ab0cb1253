"""OpenTelemetry tracing and RPC metrics. Export is off unless an OTLP endpoint or a Prometheus
port is configured; spans still exist locally so that logs carry trace ids. Calls between the
services carry the W3C trace context (`traceparent`), so one request's spans and log lines share a
trace id across services."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.config import TelemetrySettings

_configured = False
# Trace context only: baggage, which the default global propagator also carries, may hold
# anything a caller put there, and nothing we pass on may carry personal data.
_TRACE_CONTEXT = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_TRACE_CONTEXT.fields)


class RpcMetrics:
    """Instruments recorded by the server interceptor. Labels hold method and status code only.

    Started calls are counted in a plain dictionary that an observable counter reads when metrics
    are collected: a synchronous counter's `add` costs as much as a cached consent check's
    decision, and every call pays it."""

    def __init__(self, meter: metrics.Meter):
        self.duration = meter.create_histogram("rpc.server.duration", unit="ms",
                                               description="Duration of inbound RPCs")
        self.responses = meter.create_histogram("rpc.server.responses_per_rpc", unit="{count}",
                                                description="Messages sent per response stream")
        self._started: dict[str, int] = {}
        self._lock = threading.Lock()  # the synchronous server counts from many threads
        meter.create_observable_counter("rpc.server.started", callbacks=[self._observe_started],
                                        description="Inbound RPCs started")

    def count_started(self, method: str) -> None:
        with self._lock:
            self._started[method] = self._started.get(method, 0) + 1

    def started(self, method: str) -> int:
        with self._lock:
            return self._started.get(method, 0)

    def _observe_started(self, _options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        with self._lock:
            counts = list(self._started.items())
        for method, count in counts:
            yield metrics.Observation(count, {"rpc.method": method})


def configure_telemetry(service: str, settings: TelemetrySettings) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create(
        {"service.name": f"tessera-{service}", "service.namespace": settings.service_namespace}
    )
    tracer_provider = TracerProvider(resource=resource, sampler=span_sampler(settings))
    readers = []
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=settings.otlp_endpoint)))
    if settings.metrics_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
        readers.append(PrometheusMetricReader())
    trace.set_tracer_provider(tracer_provider)
    # Exemplars link a measurement to the sampled trace it was taken in; without a trace exporter
    # no trace is sampled, so the per-measurement check for one is skipped.
    exemplars = None if settings.otlp_endpoint else AlwaysOffExemplarFilter()
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=exemplars))


def span_sampler(settings: TelemetrySettings) -> Sampler | None:
    """Without an exporter nobody reads a recorded span: root spans are then created unsampled
    (they keep their trace and span ids, so logs still carry them, at about half the cost), while
    a caller's sampled trace is still recorded and its flag passed on downstream. None keeps the
    SDK's default (parent-based, always on)."""
    return None if settings.otlp_endpoint else ParentBased(root=ALWAYS_OFF)


_rpc_metrics: RpcMetrics | None = None
_rpc_metrics_lock = threading.Lock()


def rpc_metrics() -> RpcMetrics:
    """The process's one set of RPC instruments, shared by every server in it: a meter registers an
    instrument name once and ignores a second observable counter's callback."""
    global _rpc_metrics
    with _rpc_metrics_lock:
        if _rpc_metrics is None:
            _rpc_metrics = RpcMetrics(metrics.get_meter("tessera.rpc"))
        return _rpc_metrics


_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The service's tracer, looked up once per tracer provider (`trace.get_tracer` costs as much
    as starting a span, and the interceptor asks for it on every RPC)."""
    global _tracer
    provider = trace.get_tracer_provider()
    cached = _tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    found = provider.get_tracer("tessera")
    _tracer = (provider, found)
    return found


def caller_trace(metadata: Iterable[tuple[str, Any]] | None) -> Context | None:
    """The caller's trace context from its `traceparent` / `tracestate` headers; None without
    them. A malformed header gives a context without a span: the server span is then a root."""
    carrier = {key: value for key, value in metadata or () if key in _TRACE_HEADERS}
    return _TRACE_CONTEXT.extract(carrier) if carrier else None


def trace_metadata() -> list[tuple[str, str]]:
    """Headers carrying the current span's trace context to a sibling service (none outside a span)."""
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)
    return list(carrier.items())

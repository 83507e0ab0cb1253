"""Span sampling: without an exporter root spans are not recorded but keep real ids for the logs;
a caller's sampled trace is still recorded; with an exporter every span is."""

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.common.config import TelemetrySettings
from services.common.telemetry import span_sampler


def _tracer(settings: TelemetrySettings) -> trace.Tracer:
    return TracerProvider(sampler=span_sampler(settings)).get_tracer("test")


def test_without_an_exporter_root_spans_keep_ids_but_are_not_recorded():
    with _tracer(TelemetrySettings()).start_as_current_span("call") as span:
        context = span.get_span_context()
        assert not span.is_recording()
        assert context.is_valid
        assert context.trace_id != 0
        assert not context.trace_flags.sampled


def test_without_an_exporter_a_sampled_caller_trace_is_still_recorded():
    caller = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    parent = trace.set_span_in_context(NonRecordingSpan(caller))
    with _tracer(TelemetrySettings()).start_as_current_span("call", context=parent) as span:
        assert span.is_recording()
        assert span.get_span_context().trace_id == 0x1234
        assert span.get_span_context().trace_flags.sampled


def test_with_an_exporter_root_spans_are_recorded():
    with _tracer(TelemetrySettings(otlp_endpoint="localhost:4317")).start_as_current_span("c") as span:
        assert span.is_recording()

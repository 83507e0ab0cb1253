"""The server interceptor on a real gRPC server: one server span per call, made current so that
the handler's log lines and the access line carry its trace and span ids; domain errors mapped to
statuses; handlers wrapped once per method and reused. The same on grpc's asyncio server, for
handlers written as coroutines and for synchronous ones on its thread pool."""

from __future__ import annotations

import io
import json
import time
from concurrent import futures

import grpc
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.common import auth, telemetry
from services.common.asyncio_server import AsyncioServer
from services.common.errors import InvalidArgument, NotFound
from services.common.falkordb_server import free_port
from services.common.interceptors import ServerInterceptor
from services.common.logs import configure_logging
from tests.helpers import error_details

METHOD = "/test.Echo/Say"


@pytest.fixture(params=["sync", "asyncio-coroutine", "asyncio-thread-pool"])
def echo(request, log_buffer: io.StringIO, spans: InMemorySpanExporter):
    log = structlog.get_logger("test.echo")

    def say(message: bytes, context: grpc.ServicerContext) -> bytes:
        log.info("said", size=len(message))
        if message == b"missing":
            raise NotFound("no such thing", reason="THING_NOT_FOUND")
        if message == b"":
            raise InvalidArgument.single("text", "say something")
        return message

    async def say_coroutine(message: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return say(message, context)

    interceptor = ServerInterceptor("test", auth.CallerPolicy.load("", dev_mode=True), auth_mode="dev",
                                    dev_default_caller="tessera-dev")
    if request.param == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    else:
        server = AsyncioServer(futures.ThreadPoolExecutor(max_workers=2), interceptor.wrapped_handler, [])
    handler = say_coroutine if request.param == "asyncio-coroutine" else say
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(handler)})])
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield interceptor, channel.unary_unary(METHOD)
    finally:
        channel.close()
        assert server.stop(0).wait(5)


def lines(buffer: io.StringIO, event: str) -> list[dict]:
    return [line for line in map(json.loads, buffer.getvalue().splitlines()) if line.get("event") == event]


def test_each_call_has_a_server_span_whose_ids_its_log_lines_carry(echo, spans, log_buffer):
    _interceptor, say = echo
    assert say(b"one", metadata=[("x-tessera-caller", "profile")]) == b"one"
    assert say(b"two") == b"two"
    with pytest.raises(grpc.RpcError) as failed:
        say(b"missing")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(failed.value)[0] == "THING_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as invalid:
        say(b"")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(invalid.value) == ("INVALID_ARGUMENT", {"text": "say something"})

    # The asyncio server sends an aborted call's status before the handler's bookkeeping ends.
    deadline = time.monotonic() + 5
    while len(spans.get_finished_spans()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = spans.get_finished_spans()[:3]
    assert [s.name for s in spans.get_finished_spans()] == [METHOD] * 4
    assert all(s.kind == SpanKind.SERVER for s in finished)
    assert all(dict(s.attributes) == {"rpc.system": "grpc", "rpc.service": "test.Echo", "rpc.method": "Say"}
               for s in finished)
    assert [s.status.status_code for s in finished] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    assert finished[2].status.description == "THING_NOT_FOUND"
    ids = [(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in finished]
    assert len(set(ids)) == 3  # a span of its own per call

    said = lines(log_buffer, "said")[:3]
    assert [(line["trace_id"], line["span_id"]) for line in said] == ids
    assert [line["caller"] for line in said] == ["profile", "tessera-dev", "tessera-dev"]
    assert all(line["rpc_method"] == METHOD for line in said)
    access = lines(log_buffer, "rpc")
    assert [(line["trace_id"], line["span_id"]) for line in access[:3]] == ids
    assert [(line["level"], line["grpc_code"]) for line in access] == [
        ("info", "OK"), ("info", "OK"), ("warning", "NOT_FOUND"), ("warning", "INVALID_ARGUMENT")]


def test_a_method_is_wrapped_once_and_the_wrapper_reused(echo):
    interceptor, say = echo
    for _ in range(3):
        say(b"x")
    assert list(interceptor._wrapped) == [METHOD]
    found, wrapped = interceptor._wrapped[METHOD]

    class Details:
        method = METHOD

    assert interceptor.intercept_service(lambda _details: found, Details()) is wrapped
    other = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    replaced = interceptor.intercept_service(lambda _details: other, Details())
    assert replaced is not wrapped  # a new handler is wrapped anew
    assert replaced.unary_unary is not other.unary_unary
    assert interceptor.intercept_service(lambda _details: None, Details()) is None


def test_the_tracer_is_looked_up_once_per_provider(spans):
    assert telemetry.tracer() is telemetry.tracer()
    assert telemetry._tracer is not None
    assert telemetry._tracer[0] is trace.get_tracer_provider()


def test_every_started_call_is_counted_and_reported_to_a_metric_reader(echo):
    _interceptor, say = echo
    before = telemetry.rpc_metrics().started(METHOD)
    say(b"one")
    with pytest.raises(grpc.RpcError):
        say(b"missing")
    assert telemetry.rpc_metrics().started(METHOD) == before + 2
    assert telemetry.rpc_metrics() is telemetry.rpc_metrics()  # one set per process, every server

    reader = InMemoryMetricReader()
    counts = telemetry.RpcMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    for method in (METHOD, METHOD, "/test.Echo/Other"):
        counts.count_started(method)
    [metric] = [m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.name == "rpc.server.started"]
    assert metric.data.is_monotonic
    assert {p.attributes["rpc.method"]: p.value for p in metric.data.data_points} == {
        METHOD: 2, "/test.Echo/Other": 1}


def test_successful_calls_write_no_access_line_above_info_level(echo, log_buffer):
    _interceptor, say = echo
    configure_logging("test", "warning", "json", stream=log_buffer)
    try:
        say(b"quiet")
        with pytest.raises(grpc.RpcError):
            say(b"missing")
        deadline = time.monotonic() + 5  # the asyncio server may answer before its bookkeeping ends
        while not lines(log_buffer, "rpc") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(line["level"], line["grpc_code"]) for line in lines(log_buffer, "rpc")] == [
            ("warning", "NOT_FOUND")]
    finally:
        configure_logging("test", "info", "json", stream=log_buffer)


def finished_spans(spans: InMemorySpanExporter, count: int) -> list:
    """The finished spans, once `count` have ended (the asyncio server may answer first)."""
    deadline = time.monotonic() + 5
    while len(spans.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(spans.get_finished_spans())


def test_a_caller_trace_context_makes_the_server_span_its_child(echo, spans, log_buffer):
    _interceptor, say = echo
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    say(b"traced", metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01"), ("tracestate", "vendor=1")])
    say(b"malformed", metadata=[("traceparent", "00-not-a-trace-01")])
    traced, malformed = finished_spans(spans, 2)
    assert format(traced.context.trace_id, "032x") == trace_id
    assert traced.parent is not None
    assert traced.parent.is_remote
    assert format(traced.parent.span_id, "016x") == parent_id
    assert traced.context.trace_state.get("vendor") == "1"
    assert malformed.parent is None  # a header that does not parse: a root span, and the call works
    assert format(malformed.context.trace_id, "032x") != trace_id
    said = lines(log_buffer, "said")
    assert [line["trace_id"] == trace_id for line in said] == [True, False]

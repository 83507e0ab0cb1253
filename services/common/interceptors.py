"""One server interceptor for every RPC: caller identity, tracing, logging, metrics, deadline
checks, and mapping of domain errors to AIP-193 statuses (google.rpc.Status with ErrorInfo and
BadRequest details). Servicers therefore only translate protos and call domain code."""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common import auth, errors, logs
from services.common.telemetry import caller_trace, rpc_metrics, tracer

log = structlog.get_logger("tessera.rpc")

_CODES: list[tuple[type[errors.TesseraError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
]


def grpc_code_for(exc: errors.TesseraError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(exc: errors.TesseraError) -> status_pb2.Status:
    code = grpc_code_for(exc)
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=errors.DOMAIN, metadata=exc.metadata))
    details.append(info)
    if isinstance(exc, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    if isinstance(exc, errors.Unavailable):
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": 1}))
        details.append(retry)
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def _internal_status() -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=errors.DOMAIN))
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[info])


class _Method:
    """What the interceptor records for one method, computed once per method rather than per call:
    the span's name and attributes and the metric labels (method and status code only)."""

    __slots__ = ("_duration_labels", "name", "span_attributes")

    def __init__(self, method: str):
        _, svc, name = method.split("/")
        self.name = method
        self.span_attributes = {"rpc.system": "grpc", "rpc.service": svc, "rpc.method": name}
        self._duration_labels: dict[grpc.StatusCode, dict[str, str]] = {}

    def duration_labels(self, code: grpc.StatusCode) -> dict[str, str]:
        labels = self._duration_labels.get(code)
        if labels is None:
            labels = self._duration_labels[code] = {"rpc.method": self.name, "rpc.grpc.status_code": code.name}
        return labels


class ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, service: str, policy: auth.CallerPolicy, *, auth_mode: str, dev_default_caller: str,
                 accepting: Callable[[], bool] = lambda: True):
        self._service = service
        self._accepting = accepting
        self._policy = policy
        self._auth_mode = auth_mode
        self._dev_default = dev_default_caller
        self._metrics = rpc_metrics()
        # method -> (the handler grpc found, the wrapped handler): grpc asks for the handler on
        # every call, and registered handlers do not change, so each is wrapped once.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        return self.wrapped_handler(continuation(handler_call_details), handler_call_details.method)

    def wrapped_handler(self, handler: Any, method: str) -> Any:
        """`handler` with the bookkeeping around each call (None stays None)."""
        if handler is None:
            return None
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method),
                handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method),
            handler.request_deserializer, handler.response_serializer)

    def _wrap_unary(self, behaviour: Callable, method: str) -> Callable:
        info = _Method(method)
        if inspect.iscoroutinefunction(behaviour):  # on the asyncio server's event loop
            async def wrapped_coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
                rpc = _Rpc(self, info, context, current_span=True)
                try:
                    rpc.admit()
                    return await behaviour(request, context)
                except asyncio.CancelledError:  # the client went away, or its deadline passed
                    rpc.code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    status = rpc.failure(exc)
                    await context.abort(status.code, status.details, status.trailing_metadata)  # raises
                    raise
                finally:
                    rpc.end()

            return wrapped_coroutine

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            rpc = _Rpc(self, info, context, current_span=True)
            try:
                rpc.admit()
                return behaviour(request, context)
            except Exception as exc:
                rpc.fail(exc)  # aborts the call: raises
                raise
            finally:
                rpc.end()

        return wrapped

    def _wrap_stream(self, behaviour: Callable, method: str) -> Callable:
        info = _Method(method)
        if inspect.isasyncgenfunction(behaviour):  # a response stream on the asyncio server's loop
            async def wrapped_async_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                # The generator runs in its call's task from start to end, so its span can be current.
                rpc = _Rpc(self, info, context, current_span=True, streaming=True)
                try:
                    rpc.admit()
                    async for response in behaviour(request, context):
                        rpc.responses += 1
                        yield response
                except asyncio.CancelledError:
                    rpc.code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    status = rpc.failure(exc)
                    await context.abort(status.code, status.details, status.trailing_metadata)  # raises
                    raise
                finally:
                    rpc.end()

            return wrapped_async_stream

        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            rpc = _Rpc(self, info, context, current_span=False, streaming=True)
            try:
                rpc.admit()
                for response in behaviour(request, context):
                    rpc.responses += 1
                    yield response
            except GeneratorExit:
                rpc.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                rpc.fail(exc)
                raise
            finally:
                rpc.end()

        return wrapped


class _Rpc:
    """The bookkeeping around one RPC. Servicers never call context.abort(): they raise domain
    errors, and `fail` is the one place that turns an error into a status."""

    __slots__ = ("caller_token", "code", "context", "context_token", "info", "owner", "responses", "span",
                 "start", "streaming")

    def __init__(self, owner: ServerInterceptor, info: _Method, context: grpc.ServicerContext, *,
                 current_span: bool, streaming: bool = False):
        self.owner, self.info, self.context = owner, info, context
        self.code = grpc.StatusCode.OK
        self.streaming = streaming
        self.responses = 0  # messages a response stream has sent
        self.start = time.perf_counter()
        # A child of the caller's span when the caller sent its trace context.
        parent = caller_trace(context.invocation_metadata())
        self.span = tracer().start_span(info.name, context=parent, kind=SpanKind.SERVER)
        if self.span.is_recording():  # attributes only for spans kept: the SDK cleans each value
            self.span.set_attributes(info.span_attributes)
        # The span becomes the current one (what `trace.use_span` does), so logs carry its ids.
        self.context_token = otel_context.attach(trace.set_span_in_context(self.span)) if current_span else None
        self.caller_token = None
        structlog.contextvars.bind_contextvars(rpc_method=info.name)
        owner._metrics.count_started(info.name)

    def admit(self) -> None:
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Deadline()
        if not self.owner._accepting():
            raise errors.Unavailable("the service is starting: its store is not set up yet; retry later",
                                     reason="SCHEMA_NOT_READY")
        name = auth.caller_name_from_context(self.context, mode=self.owner._auth_mode,
                                             dev_default=self.owner._dev_default)
        self.caller_token = auth.set_current_caller(self.owner._policy.resolve(name))
        structlog.contextvars.bind_contextvars(caller=name)

    def fail(self, exc: Exception) -> None:
        """Aborts the call with the status for `exc` (a synchronous context: raises)."""
        status = self.failure(exc)
        # What abort_with_status does, which the asyncio server's context for synchronous
        # handlers lacks.
        self.context.set_trailing_metadata(status.trailing_metadata)
        self.context.abort(status.code, status.details)

    def failure(self, exc: Exception) -> grpc.Status:
        """The status `exc` ends the call with, recorded on the span (and logged if unexpected)."""
        if isinstance(exc, _Deadline):
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
            self.span.set_status(Status(StatusCode.ERROR, "DEADLINE_EXCEEDED"))
            return _Status(self.code, "the deadline expired before the call started", ())
        if isinstance(exc, errors.TesseraError):
            self.code = grpc_code_for(exc)
            self.span.set_status(Status(StatusCode.ERROR, exc.reason))
            return rpc_status.to_status(to_status(exc))
        self.code = grpc.StatusCode.INTERNAL
        # Only the type and the stack: exception messages may quote personal data.
        log.error("rpc_internal_error", error_type=type(exc).__name__,
                  stack="".join(traceback.format_tb(exc.__traceback__)))
        self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        return rpc_status.to_status(_internal_status())

    def end(self) -> None:
        elapsed_ms = (time.perf_counter() - self.start) * 1000
        code = self.code
        labels = self.info.duration_labels(code)
        self.owner._metrics.duration.record(elapsed_ms, labels)
        # A stream's figures are per stream; how many answers it carried says what it did.
        extra: dict[str, int] = {}
        if self.streaming:
            self.owner._metrics.responses.record(self.responses, labels)
            extra["responses"] = self.responses
        if code == grpc.StatusCode.OK:
            if logs.info_enabled():
                log.info("rpc", grpc_code=code.name, duration_ms=round(elapsed_ms, 3), **extra)
        else:
            log.warning("rpc", grpc_code=code.name, duration_ms=round(elapsed_ms, 3), **extra)
        if self.caller_token is not None:
            auth.reset_current_caller(self.caller_token)
        structlog.contextvars.unbind_contextvars("rpc_method", "caller")
        if self.context_token is not None:
            otel_context.detach(self.context_token)
        self.span.end()


class _Deadline(Exception):
    pass


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple):
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


"""One server interceptor for every RPC: caller identity, tracing, logging, metrics, deadline
checks, and mapping of domain errors to AIP-193 statuses (google.rpc.Status with ErrorInfo and
BadRequest details). Servicers therefore only translate protos and call domain code."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common import auth, errors
from services.common.telemetry import rpc_metrics, tracer

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


class ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, service: str, policy: auth.CallerPolicy, *, auth_mode: str, dev_default_caller: str):
        self._service = service
        self._policy = policy
        self._auth_mode = auth_mode
        self._dev_default = dev_default_caller
        self._metrics = rpc_metrics()

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
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
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            rpc = _Rpc(self, method, context, current_span=True)
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
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            rpc = _Rpc(self, method, context, current_span=False)
            try:
                rpc.admit()
                yield from behaviour(request, context)
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

    def __init__(self, owner: ServerInterceptor, method: str, context: grpc.ServicerContext, *,
                 current_span: bool):
        self.owner, self.method, self.context = owner, method, context
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        _, svc, name = method.split("/")
        attributes = {"rpc.system": "grpc", "rpc.service": svc, "rpc.method": name}
        self.span = tracer().start_span(method, kind=SpanKind.SERVER, attributes=attributes)
        self.span_cm = trace.use_span(self.span, end_on_exit=False) if current_span else None
        if self.span_cm is not None:
            self.span_cm.__enter__()
        self.caller_token = None
        structlog.contextvars.bind_contextvars(rpc_method=method)
        owner._metrics.started.add(1, {"rpc.method": method})

    def admit(self) -> None:
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Deadline()
        name = auth.caller_name_from_context(self.context, mode=self.owner._auth_mode,
                                             dev_default=self.owner._dev_default)
        self.caller_token = auth.set_current_caller(self.owner._policy.resolve(name))
        structlog.contextvars.bind_contextvars(caller=name)

    def fail(self, exc: Exception) -> None:
        if isinstance(exc, _Deadline):
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
            self.span.set_status(Status(StatusCode.ERROR, "DEADLINE_EXCEEDED"))
            self.context.abort(self.code, "the deadline expired before the call started")
        if isinstance(exc, errors.TesseraError):
            self.code = grpc_code_for(exc)
            self.span.set_status(Status(StatusCode.ERROR, exc.reason))
            self.context.abort_with_status(rpc_status.to_status(to_status(exc)))
        self.code = grpc.StatusCode.INTERNAL
        # Only the type and the stack: exception messages may quote personal data.
        log.error("rpc_internal_error", error_type=type(exc).__name__,
                  stack="".join(traceback.format_tb(exc.__traceback__)))
        self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.context.abort_with_status(rpc_status.to_status(_internal_status()))

    def end(self) -> None:
        elapsed_ms = (time.perf_counter() - self.start) * 1000
        self.owner._metrics.duration.record(
            elapsed_ms, {"rpc.method": self.method, "rpc.grpc.status_code": self.code.name})
        emit = log.info if self.code == grpc.StatusCode.OK else log.warning
        emit("rpc", grpc_code=self.code.name, duration_ms=round(elapsed_ms, 3))
        if self.caller_token is not None:
            auth.reset_current_caller(self.caller_token)
        structlog.contextvars.unbind_contextvars("rpc_method", "caller")
        if self.span_cm is not None:
            self.span_cm.__exit__(None, None, None)
        self.span.end()


class _Deadline(Exception):
    pass

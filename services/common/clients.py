"""Clients for calling sibling services, with deadlines and error mapping back to domain errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common import errors
from services.common.auth import CALLER_HEADER
from services.common.config import Settings
from services.common.telemetry import trace_metadata

T = TypeVar("T")

_MAP: dict[grpc.StatusCode, type[errors.TesseraError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.ABORTED: errors.Aborted,
}


def _reason(exc: grpc.RpcError) -> str | None:
    status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def call(fn: Callable[..., T], request: Any, *, timeout: float, caller: str, what: str) -> T:
    """Calls a sibling RPC; UNAVAILABLE and DEADLINE_EXCEEDED become Unavailable, INVALID_ARGUMENT
    from a sibling is our bug (INTERNAL), the rest keep their meaning. The call carries the
    current trace context, so the sibling's span joins the caller's trace."""
    try:
        return fn(request, timeout=timeout, metadata=[(CALLER_HEADER, caller), *trace_metadata()])
    except grpc.RpcError as exc:
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise errors.Unavailable(f"{what} is unavailable; retry later", reason="DEPENDENCY_UNAVAILABLE",
                                     metadata={"dependency": what}) from exc
        kind = _MAP.get(code)
        if kind is None:
            raise errors.TesseraError(f"{what} failed", reason="DEPENDENCY_FAILED",
                                      metadata={"dependency": what}) from exc
        raise kind(exc.details() or f"{what} refused the call", reason=_reason(exc) or code.name) from exc


def channel(address: str, settings: Settings) -> grpc.Channel:
    """A channel to a sibling; under mTLS it presents this service's own certificate."""
    options = [("grpc.enable_retries", 1)]
    if settings.auth.mode != "mtls":
        return grpc.insecure_channel(address, options=options)
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(settings.server.tls_client_ca_file).read_bytes(),
        private_key=Path(settings.server.tls_key_file).read_bytes(),
        certificate_chain=Path(settings.server.tls_cert_file).read_bytes(),
    )
    return grpc.secure_channel(address, creds, options=options)

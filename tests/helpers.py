"""Helpers for tests that talk gRPC: decoding AIP-193 error details."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


def error_details(exc: grpc.RpcError) -> tuple[str | None, dict[str, str]]:
    """(ErrorInfo.reason, {field: description} of BadRequest violations) of a failed call."""
    status = rpc_status.from_call(exc)
    assert status is not None, "the error carries no google.rpc.Status"
    return status_details(status)


def status_details(status: status_pb2.Status) -> tuple[str | None, dict[str, str]]:
    """`error_details` of a google.rpc.Status carried in a message (a stream's per-request error)."""
    reason, violations = None, {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
    return reason, violations

"""The one place where domain errors become gRPC statuses with google.rpc details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagineer_common import errors

_CODES: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: errors.DomainError, *, domain: str) -> grpc.Status:
    """Builds the status for ``error``: code, message, ErrorInfo and BadRequest details."""
    code = next(c for cls, c in _CODES.items() if isinstance(error, cls))
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain))]
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ])
        details.append(_pack(bad_request))
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))


def internal_status(message: str = "internal error; see the server log") -> grpc.Status:
    """A status for unexpected failures: no stack trace or internals go to the client."""
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=message))


def error_reason(error: grpc.RpcError) -> str | None:
    """Client side: the ErrorInfo reason of a failed call, if the server sent one."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def field_violations(error: grpc.RpcError) -> list[str]:
    """Client side: the field paths named by a BadRequest detail."""
    status = rpc_status.from_call(error)
    fields: list[str] = []
    if status is None:
        return fields
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields

"""Domain errors shared by every service.

Domain code raises these; it never imports gRPC. The gRPC layer maps each class
to one canonical status code in one place (`imagineer_common.grpc_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FieldViolation:
    """One bad field of a request: its path (``album.name``) and what is wrong."""

    field: str
    description: str


class DomainError(Exception):
    """Base of all errors a client is meant to see.

    ``reason`` is a stable UPPER_SNAKE code clients can branch on.
    """

    default_reason = "DOMAIN_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


class InvalidArgument(DomainError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, *, violations: list[FieldViolation] | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.violations = violations or []

    @classmethod
    def for_field(cls, field_path: str, description: str) -> InvalidArgument:
        return cls(f"{field_path}: {description}", violations=[FieldViolation(field_path, description)])


class NotFound(DomainError):
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The request is valid but the system is not in a state to carry it out."""

    default_reason = "FAILED_PRECONDITION"


class Unauthenticated(DomainError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    default_reason = "UNAVAILABLE"


@dataclass
class ViolationCollector:
    """Collects every bad field of a request so the client hears about all at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def check(self, condition: bool, field_path: str, description: str) -> None:
        if not condition:
            self.add(field_path, description)

    def raise_if_any(self) -> None:
        if self.violations:
            summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
            raise InvalidArgument(summary, violations=list(self.violations))

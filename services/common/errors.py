"""Domain errors, free of gRPC types. The error interceptor maps them to AIP-193 statuses."""

from __future__ import annotations

from dataclasses import dataclass, field

DOMAIN = "tessera.io"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: `field` is a path like `account.identifiers[1].value`."""

    field: str
    description: str


class TesseraError(Exception):
    """Base of errors a caller should see with a precise status.

    `reason` is a stable UPPER_SNAKE_CASE code (AIP-193 ErrorInfo.reason); `metadata` carries
    identifiers of resources involved, never personal data.
    """

    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgument(TesseraError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None, **kwargs):
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", **kwargs)

    @classmethod
    def single(cls, field_path: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field_path, description)])


class NotFound(TesseraError):
    reason = "NOT_FOUND"


class AlreadyExists(TesseraError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(TesseraError):
    reason = "FAILED_PRECONDITION"


class PermissionDenied(TesseraError):
    reason = "PERMISSION_DENIED"


class Unauthenticated(TesseraError):
    reason = "UNAUTHENTICATED"


class Unavailable(TesseraError):
    """A dependency (graph store, another service) cannot be reached; the call may be retried."""

    reason = "UNAVAILABLE"


class Aborted(TesseraError):
    """A concurrent change conflicted; retry the call."""

    reason = "ABORTED"


class Unimplemented(TesseraError):
    reason = "UNIMPLEMENTED"


@dataclass
class ViolationCollector:
    """Collects field violations while validating a request, then raises them all at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def require(self, condition: bool, field_path: str, description: str) -> None:
        if not condition:
            self.add(field_path, description)

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

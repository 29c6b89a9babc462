"""Domain exceptions: raised by domain code, mapped once to gRPC statuses by an interceptor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (`prompts[3]`, `workspace.name`) and what is wrong with it."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One unmet rule: type (e.g. "LAST_OWNER"), subject (an id) and description."""

    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Base of every expected error. `reason` is an UPPER_SNAKE ErrorInfo reason."""

    reason: str = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        field: str,
        description: str,
        *,
        more: Sequence[FieldViolation] = (),
        reason: str | None = None,
    ) -> None:
        self.violations = [FieldViolation(field, description), *more]
        message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message, reason=reason, metadata={"field": field})


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    """The resource does not exist or the caller cannot see it (the two are indistinguishable)."""

    reason = "NOT_FOUND"

    def __init__(self, resource: str, resource_id: str = "", *, reason: str | None = None) -> None:
        shown = f" {resource_id!r}" if resource_id else ""
        super().__init__(
            f"{resource}{shown} not found", reason=reason, metadata={"resource": resource}
        )
        self.resource = resource
        self.resource_id = resource_id


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class Aborted(DomainError):
    """A concurrent change won (stale etag): re-read and retry."""

    reason = "ABORTED"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        violations: Sequence[PreconditionViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)


class ResourceExhausted(DomainError):
    """A rate limit (or a concurrency cap) was hit: retry after `retry_after` seconds."""

    reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        subject: str,
        quota: str,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata={"quota": quota})
        self.retry_after = retry_after
        self.subject = subject
        self.quota = quota


class Unavailable(DomainError):
    """A dependency (database, rate limiter) is unreachable: retry after `retry_after` s."""

    reason = "UNAVAILABLE"
    DEFAULT_RETRY_AFTER = 2.0

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float = DEFAULT_RETRY_AFTER
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class Unimplemented(DomainError):
    reason = "UNIMPLEMENTED"

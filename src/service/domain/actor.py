"""Who a domain command acts for, built by the API layer from its call context.

The domain sees a narrow `Actor` (ids, the audit action, the access decision), never the call
context with its metadata and peer; `Access` is what the auth check resolved for the RPC's
resource. Page tokens are signed with the key and bound to the caller of the current call
(`page_caller`), which the API layer sets for the duration of each call.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Access:
    """What the auth check resolved for the RPC's resource."""

    organization_id: str
    workspace_id: str | None = None
    organization_role: str | None = None  # owner | admin | member | billing_admin
    workspace_role: str | None = None  # effective: owner | member
    via_service_scope: bool = False
    # The workspace as read by the check (a service.domain.tenancy.workspace_views.WorkspaceView), so a
    # handler that shows it needs no second query.
    workspace: Any = None


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller of a domain command: recorded in audit events, checked by finer rules."""

    actor_id: str  # the user (acted for), else the service key, else "anonymous"
    user_id: str | None
    service_key_id: str | None
    request_id: str  # the server's own id of the call (identifies its audit event)
    correlation_id: str = ""  # the client's `x-request-id`, when it sent a sane one
    action: str = ""  # the RPC's full name, the audit event's action
    email: str = ""
    email_verified: bool = False  # whether the identity provider vouches for `email`
    acts_as_user: bool = False  # a service key speaking for a user, not the user themself
    access: Access | None = None

    def require_user_id(self) -> str:
        if self.user_id is None:
            raise RuntimeError("the principal does not act as a user")
        return self.user_id

    def require_access(self) -> Access:
        if self.access is None:
            raise RuntimeError("no access decision: the RPC has no resource-level auth rule")
        return self.access


class PageCaller(Protocol):
    """What page tokens are signed with and bound to (the API layer's call context)."""

    @property
    def page_key(self) -> bytes: ...

    @property
    def caller_id(self) -> str: ...


_page_caller: ContextVar[PageCaller | None] = ContextVar("beacon_page_caller", default=None)


def page_caller() -> PageCaller:
    """The page-token key and caller of the current call (set by the API layer)."""
    caller = _page_caller.get()
    if caller is None:
        raise RuntimeError("not inside a Beacon RPC")
    return caller


def set_page_caller(caller: PageCaller | None) -> None:
    _page_caller.set(caller)

"""The caller of the current RPC, set by the authentication step and read by servicers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from service.domain.actor import Access, Actor, set_page_caller


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling.

    A user token gives a user principal. A service key gives a service principal, which
    acts for a user (`user_id` set) when the key has the `act_as` scope and the call names
    the user in `x-beacon-act-as`. `key_organizations` bounds what a key may touch (None:
    no bound, for user tokens and `--all-organizations` keys).
    """

    user_id: str | None
    email: str = ""
    # Whether the identity provider vouches for `email` (the token's `email_verified`
    # claim; the stored user's flag when a service key acts as them). Invitations to an
    # email are claimable only when it is verified.
    email_verified: bool = False
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()
    key_organizations: frozenset[str] | None = None
    # The person behind the user (`identity.identity_key` of their tokens' issuer and
    # subject): unlike the user id it survives DeleteAccount, so per-user rate limits count
    # by it. Empty for a service key that acts for nobody.
    identity: str = ""

    @property
    def actor_id(self) -> str:
        """The id recorded in audit events and used for idempotency."""
        return self.user_id or self.key_id or "anonymous"

    @property
    def rate_limit_id(self) -> str:
        """Whom per-user rate limits count: the person, else the service key."""
        return self.identity or self.actor_id

    @property
    def is_service(self) -> bool:
        return self.key_id is not None

    @property
    def acts_as_user(self) -> bool:
        """A service key speaking for a user (`x-beacon-act-as`), not the user themself."""
        return self.is_service and self.user_id is not None


@dataclass(slots=True)
class CallContext:
    """Everything known about the current call."""

    method: str  # full name, e.g. "beacon.v1.WorkspaceService/GetWorkspace"
    request_id: str  # the server's own id of the call (identifies its audit event)
    correlation_id: str = ""  # the client's `x-request-id`, when it sent a sane one
    peer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    principal: Principal | None = None
    access: Access | None = None
    page_key: bytes = b""  # signs page tokens (derived from BEACON_SIGNING_SECRET)
    # A stream's re-check of its caller (service.pipeline.concurrency.StreamGuard):
    # raises once the credentials fail or the stream's lifetime is over.
    stream_check: Callable[[], Awaitable[None]] | None = None

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise RuntimeError("no principal: the RPC is not authenticated")
        return self.principal

    def require_user_id(self) -> str:
        user_id = self.require_principal().user_id
        if user_id is None:
            raise RuntimeError("the principal does not act as a user")
        return user_id

    def require_access(self) -> Access:
        if self.access is None:
            raise RuntimeError("no access decision: the RPC has no resource-level auth rule")
        return self.access

    @property
    def caller_id(self) -> str:
        """Whom page tokens are bound to (`service.domain.actor.PageCaller`)."""
        return self.principal.actor_id if self.principal else "anonymous"

    def actor(self) -> Actor:
        """The narrow view of this call that domain commands receive."""
        principal = self.principal
        return Actor(
            actor_id=self.caller_id,
            user_id=principal.user_id if principal else None,
            service_key_id=principal.key_id if principal else None,
            request_id=self.request_id,
            correlation_id=self.correlation_id,
            action=self.method,
            email=principal.email if principal else "",
            email_verified=principal.email_verified if principal else False,
            acts_as_user=principal.acts_as_user if principal else False,
            access=self.access,
        )


_current: ContextVar[CallContext | None] = ContextVar("beacon_call", default=None)


def current_call() -> CallContext:
    """The context of the RPC being served (set by the pipeline's steps)."""
    call = _current.get()
    if call is None:
        raise RuntimeError("not inside a Beacon RPC")
    return call


def current_actor() -> Actor:
    """The actor of the RPC being served, for domain commands."""
    return current_call().actor()


def set_current_call(call: CallContext | None) -> None:
    _current.set(call)
    set_page_caller(call)

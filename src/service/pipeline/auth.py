"""Authentication and authorization from each RPC's `(beacon.v1.auth)` option.

The level is enforced here, generically, from the request's resource field; handlers never
re-code it. A caller who cannot see the resource gets NOT_FOUND, one who sees it without
the required role PERMISSION_DENIED.
"""

from __future__ import annotations

from typing import Any

from beacon.v1 import options_pb2
from service.access_cache import AccessCache
from service.auth.context import Principal, current_call
from service.auth.identity import Authenticator
from service.db.database import Database
from service.domain.actor import Access
from service.domain.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from service.domain.inputs import require_id
from service.domain.tenancy import access as acl
from service.domain.tenancy import workspace_access
from service.pipeline.base import Around
from service.rpc_options import MethodRules

WORKSPACE_LEVELS = (
    options_pb2.AUTH_LEVEL_WORKSPACE_MEMBER,
    options_pb2.AUTH_LEVEL_WORKSPACE_OWNER,
)
ORGANIZATION_LEVELS = (
    options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN,
    options_pb2.AUTH_LEVEL_ORGANIZATION_MEMBER,
    options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING,
)
# Headers that say who calls: each may come at most once.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-beacon-act-as"})


def resource_id(request: Any, fields: tuple[str, ...]) -> tuple[str, str]:
    """(field, id) of the first non-empty resource field; INVALID_ARGUMENT when none is set."""
    for path in fields:
        value: Any = request
        for part in path.split("."):
            value = getattr(value, part)
        if value:
            return path, require_id(path, value)
    raise InvalidArgument(fields[0], "is required")


def _within_key_organizations(bound: frozenset[str], access: Access | None) -> None:
    """A key bound to organizations touches nothing else: only RPCs addressed to a resource,
    in one of them (RPCs without a resource, such as ListMyOrganizations or
    CreateOrganization, could reach past the bound)."""
    if access is None:
        raise PermissionDenied(
            "a service key bound to organizations may only call RPCs addressed to a resource"
            " in them",
            reason="OUTSIDE_KEY_ORGANIZATIONS",
        )
    if access.organization_id not in bound:
        raise PermissionDenied(
            "the resource belongs to an organization the service key is not bound to",
            reason="OUTSIDE_KEY_ORGANIZATIONS",
        )


def _credential_headers_once(metadata: Any) -> None:
    """UNAUTHENTICATED when a credential header comes more than once: which of the two
    values counted would depend on how each proxy on the way merges them."""
    seen: set[str] = set()
    for key, _ in metadata or ():
        if key in CREDENTIAL_HEADERS:
            if key in seen:
                raise Unauthenticated(
                    f"the {key!r} header is sent more than once",
                    reason="DUPLICATE_CREDENTIALS",
                    metadata={"header": key},
                )
            seen.add(key)


class AuthenticateAround(Around):
    """Who is calling: sets the call's principal, or raises UNAUTHENTICATED."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        _credential_headers_once(context.invocation_metadata())
        call = current_call()
        call.principal = await self.authenticator.authenticate(
            call.metadata.get("authorization"), call.metadata.get("x-beacon-act-as")
        )


class AuthorizeAround(Around):
    """Whether the principal may call the RPC on the resource the request names.

    A user's access decisions come from `cache` when it holds them (service.access_cache:
    invalidated on every change, at most 1 s stale); failed checks are never cached.
    """

    def __init__(self, db: Database, cache: AccessCache | None = None) -> None:
        self.db = db
        self.cache = cache if cache is not None else AccessCache(shared=not db.is_sqlite)

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        call = current_call()
        principal = call.require_principal()
        if principal.user_id is None:
            if not rules.service_scope or rules.service_scope not in principal.scopes:
                raise PermissionDenied(
                    "this RPC needs a user: a service key must act as one (x-beacon-act-as)",
                    reason="USER_REQUIRED",
                )
            call.access = await self._service_access(rules, request)
        elif rules.level in WORKSPACE_LEVELS or rules.level in ORGANIZATION_LEVELS:
            call.access = await self._user_access(rules, request, principal)
        if principal.key_organizations is not None:
            _within_key_organizations(principal.key_organizations, call.access)

    async def _user_access(self, rules: MethodRules, request: Any, who: Principal) -> Access:
        _, target = resource_id(request, rules.resource_fields)
        user_id = who.user_id
        assert user_id is not None
        workspace_level = rules.level in WORKSPACE_LEVELS
        found = await self._access(workspace_level, user_id, target)
        if workspace_level:
            if (
                rules.level == options_pb2.AUTH_LEVEL_WORKSPACE_OWNER
                and found.workspace_role != "owner"
            ):
                raise PermissionDenied("requires the workspace owner role", reason="NOT_OWNER")
            return found
        if (
            rules.level == options_pb2.AUTH_LEVEL_ORGANIZATION_ADMIN
            and found.organization_role not in acl.ORGANIZATION_ADMIN_ROLES
        ):
            raise PermissionDenied(
                "requires the organization owner or admin role", reason="NOT_ORGANIZATION_ADMIN"
            )
        if (
            rules.level == options_pb2.AUTH_LEVEL_ORGANIZATION_BILLING
            and found.organization_role not in acl.BILLING_ROLES
        ):
            raise PermissionDenied(
                "requires the organization owner or billing admin role",
                reason="NOT_BILLING_ADMIN",
            )
        return found

    async def _access(self, workspace_level: bool, user_id: str, target: str) -> Access:
        """The user's access to `target` (cached; see the class docstring)."""
        key = ("ws" if workspace_level else "org", user_id, target)
        found = self.cache.get(key)
        if found is not None:
            return found
        generation = self.cache.generation
        try:
            async with self.db.read() as session:
                if workspace_level:
                    found = await workspace_access.authorize_view(session, user_id, target)
                else:
                    found = await acl.organization_access_of(session, user_id, target)
        except NotFound:
            # Name what was asked for: another tenant's run must look absent, not confirm
            # that it exists by naming (and showing the id of) its workspace.
            raise acl.not_found(target) from None
        # An organization check on a run or prompt id names no workspace to tag it with.
        if workspace_level or target.startswith(("org_", "ws_")):
            self.cache.put(key, found, generation)
        return found

    async def _service_access(self, rules: MethodRules, request: Any) -> Access | None:
        if not rules.resource_fields:
            return None
        _, target = resource_id(request, rules.resource_fields)
        async with self.db.read() as session:
            organization_id = await acl.resource_organization(session, target)
        return Access(organization_id=organization_id, via_service_scope=True)

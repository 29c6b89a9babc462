"""Conversions between rows and protobuf messages shared by several servicers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service import providers
from service.auth.cache import TtlCache
from service.clock import utcnow
from service.config import Settings
from service.db.database import Reader
from service.domain.errors import InvalidArgument
from service.domain.tenancy import files, workspace_views
from service.domain.tenancy.organizations import OrganizationView
from service.domain.tenancy.workspace_views import WorkspaceView

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROVIDER_TO_PROTO = providers.TO_PROTO
PROVIDER_FROM_PROTO = providers.FROM_PROTO


def request_time(request: Any, field: str) -> datetime | None:
    """A request's timestamp field as a UTC datetime (None when unset); a timestamp outside
    0001-01-01..9999-12-31 or with nanos outside 0..999,999,999 is InvalidArgument."""
    if not request.HasField(field):
        return None
    try:
        value: datetime = getattr(request, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None
    return value


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None for an unset time."""
    if value is None:
        return None
    if value.tzinfo is None:  # naive times are UTC, as in Timestamp.FromDatetime
        value = value.replace(tzinfo=UTC)
    since = value - EPOCH  # exact: no float on the way (FromDatetime is several times slower)
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


ORGANIZATION_ROLE_TO_PROTO = {
    "owner": org_pb.ORGANIZATION_ROLE_OWNER,
    "admin": org_pb.ORGANIZATION_ROLE_ADMIN,
    "member": org_pb.ORGANIZATION_ROLE_MEMBER,
    "billing_admin": org_pb.ORGANIZATION_ROLE_BILLING_ADMIN,
}
ORGANIZATION_ROLE_FROM_PROTO = {v: k for k, v in ORGANIZATION_ROLE_TO_PROTO.items()}


def organization_to_proto(org: OrganizationView) -> org_pb.Organization:
    """The Organization message of an organization view."""
    return org_pb.Organization(
        id=org.id,
        name=org.name,
        slug=org.slug,
        workos_organization_id=org.workos_organization_id,
        create_time=timestamp(org.create_time),
        update_time=timestamp(org.update_time),
        etag=org.etag,
    )


def workspace_to_proto(
    view: WorkspaceView, settings: Settings, now: datetime | None = None
) -> ws_pb.Workspace:
    """The Workspace message of a view; the icon URL is signed here (an expiring GET URL,
    valid for at least `icon_url_ttl_seconds` after `now`)."""
    return ws_pb.Workspace(
        id=view.id,
        organization_id=view.organization_id,
        organization_name=view.organization_name,
        organization_slug=view.organization_slug,
        name=view.name,
        slug=view.slug,
        domain=view.domain,
        icon_file_id=view.icon_file_id,
        icon_url=files.download_url(settings, view.icon_file_id, now) if view.icon_file_id else "",
        brand_aliases=view.brand_aliases,
        competitors=[ws_pb.Competitor(name=c.name, domain=c.domain) for c in view.competitors],
        enabled_providers=[PROVIDER_TO_PROTO[p] for p in view.enabled_providers],
        schedule=ws_pb.WorkspaceSchedule(cron=view.cron, time_zone=view.time_zone),
        create_time=timestamp(view.create_time),
        update_time=timestamp(view.update_time),
        etag=view.etag,
        delete_time=timestamp(view.delete_time),
        purge_time=timestamp(view.purge_time),
    )


class WorkspaceMessages:
    """The Workspace message of each view the access cache serves, built once per view.

    GetWorkspace answers with the view its access check read, and that view object is served
    from `service.access_cache` for up to `max_age` seconds: its message is kept here, keyed
    by the object itself (an invalidated or expired entry's next check reads a new view, so
    a change is never served from here), for `max_age` seconds at most. The icon URL is
    signed as of the end of that time, so it stays valid for at least
    `icon_url_ttl_seconds` whenever the message is sent.
    """

    def __init__(self, settings: Settings, max_age: float, max_entries: int = 10_000) -> None:
        self.settings = settings
        self.max_age = max_age
        self._built: TtlCache[int, tuple[WorkspaceView, ws_pb.Workspace]] = TtlCache(
            max_age, max_entries
        )

    def get(self, view: WorkspaceView) -> ws_pb.Workspace:
        entry = self._built.get(id(view))
        if entry is not None and entry[0] is view:
            return entry[1]
        signed_as_of = utcnow() + timedelta(seconds=self.max_age)
        message = workspace_to_proto(view, self.settings, signed_as_of)
        self._built.put(id(view), (view, message))
        return message


async def workspace_messages(
    session: Reader, settings: Settings, workspace_ids: Sequence[str]
) -> list[ws_pb.Workspace]:
    """Workspace messages of the live workspaces among `workspace_ids`, in that order
    (deleted or unknown ids are skipped). One query."""
    views = await workspace_views.load_views(session, workspace_ids)
    return [workspace_to_proto(view, settings) for view in views]


async def workspace_message(
    session: Reader, settings: Settings, workspace_id: str
) -> ws_pb.Workspace:
    """The Workspace message of one live workspace; NotFound when it is gone. One query."""
    return workspace_to_proto(await workspace_views.load_view(session, workspace_id), settings)

"""Webhooks: a workspace's endpoints, their deliveries, alert rules, alerts and digest.

Each method opens the unit of work its call needs and returns plain views: no ORM row leaves
this module (rows become views inside the transaction that read or wrote them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from service.application.base import ServiceBase
from service.domain.actor import Actor
from service.domain.notifications import alerts, deliveries, digests, endpoints
from service.domain.notifications.digests import DigestState
from service.domain.notifications.endpoints import EndpointWithSecret

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

View = TypeVar("View", bound="DataclassInstance")


def view_of(view: type[View], row: object) -> View:
    """The view of an ORM row: its fields of the same names, read inside the transaction
    (its end expires the row)."""
    return view(**{field.name: getattr(row, field.name) for field in fields(view)})


@dataclass(frozen=True, slots=True)
class EndpointView:
    """A webhook endpoint as the API shows it (never its secrets)."""

    id: str
    workspace_id: str
    url: str
    event_types: list[str]
    enabled: bool
    description: str
    disabled_reason: str
    secret_create_time: datetime
    previous_secret_expire_time: datetime | None
    create_time: datetime


@dataclass(frozen=True, slots=True)
class EndpointSecretView:
    """An endpoint and the signing secret just made for it (shown once)."""

    endpoint: EndpointView
    secret: str

    @classmethod
    def of(cls, made: EndpointWithSecret) -> EndpointSecretView:
        return cls(endpoint=view_of(EndpointView, made.endpoint), secret=made.secret)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One event queued to one endpoint, and how its attempts went."""

    id: str
    endpoint_id: str
    message_id: str
    event_type: str
    status: str
    attempts: int
    last_http_status: int
    last_error: str
    last_latency_ms: int
    next_attempt_time: datetime | None
    create_time: datetime
    complete_time: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryViewPage:
    deliveries: list[DeliveryView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class AlertRuleView:
    """An alert rule of a workspace."""

    id: str
    workspace_id: str
    kind: str
    provider: str
    threshold: float
    trailing_runs: int
    min_sample: int
    create_time: datetime


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert a rule fired on a run."""

    id: str
    alert_rule_id: str
    kind: str
    run_id: str
    subject: str
    figures: dict[str, Any]
    create_time: datetime


@dataclass(frozen=True, slots=True)
class AlertViewPage:
    alerts: list[AlertView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """The fields an UpdateWebhookEndpoint may set (applied only when named in its paths)."""

    url: str
    event_types: Sequence[str]
    enabled: bool
    description: str


@dataclass(frozen=True, slots=True)
class RuleFields:
    """The fields of a new alert rule (kind and provider by name, "" when unknown/unset)."""

    kind: str
    provider: str
    threshold: float
    trailing_runs: int
    min_sample: int


@dataclass(frozen=True, slots=True)
class DigestFields:
    """The digest's frequency by name ("" when unknown), hour, weekday and time zone."""

    frequency: str
    hour: int
    weekday: int
    time_zone: str


class WebhookService(ServiceBase):
    """A workspace's webhook endpoints, deliveries, alert rules, alerts and digest."""

    async def create_endpoint(
        self,
        actor: Actor,
        workspace_id: str,
        *,
        url: str,
        event_types: Sequence[str],
        description: str,
    ) -> EndpointSecretView:
        """Adds an endpoint; its signing secret is returned this once."""
        async with self.db.transaction() as session:
            made = await endpoints.create_endpoint(
                session,
                actor,
                workspace_id,
                url=url,
                event_types=event_types,
                description=description,
                settings=self.settings,
                now=self.clock(),
            )
            return EndpointSecretView.of(made)

    async def list_endpoints(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[EndpointView], str]:
        """A page of the workspace's endpoints and the next page's token."""
        async with self.db.transaction(write=False) as session:
            rows, token = await endpoints.list_endpoints(
                session, workspace_id, page_size=page_size, page_token=page_token
            )
            return [view_of(EndpointView, row) for row in rows], token

    async def update_endpoint(
        self,
        actor: Actor,
        workspace_id: str,
        endpoint_id: str,
        paths: Sequence[str],
        change: EndpointChange,
    ) -> EndpointView:
        """Applies the fields of `change` named in `paths`."""
        async with self.db.transaction() as session:
            row = await endpoints.update_endpoint(
                session,
                actor,
                workspace_id,
                endpoint_id,
                paths,
                url=change.url,
                event_types=change.event_types,
                enabled=change.enabled,
                description=change.description,
                allow_http=self.settings.webhook_allow_http,
                now=self.clock(),
            )
            return view_of(EndpointView, row)

    async def delete_endpoint(self, actor: Actor, workspace_id: str, endpoint_id: str) -> None:
        """Removes the endpoint and its deliveries."""
        async with self.db.transaction() as session:
            await endpoints.delete_endpoint(session, actor, workspace_id, endpoint_id, self.clock())

    async def rotate_secret(
        self, actor: Actor, workspace_id: str, endpoint_id: str
    ) -> EndpointSecretView:
        """Makes the endpoint a new signing secret (returned once)."""
        async with self.db.transaction() as session:
            made = await endpoints.rotate_secret(
                session,
                actor,
                workspace_id,
                endpoint_id,
                settings=self.settings,
                now=self.clock(),
            )
            return EndpointSecretView.of(made)

    async def send_ping(self, actor: Actor, workspace_id: str, endpoint_id: str) -> DeliveryView:
        """Queues a `ping` event to the endpoint."""
        async with self.db.transaction() as session:
            row = await deliveries.send_ping(
                session, actor, workspace_id, endpoint_id, self.clock()
            )
            return view_of(DeliveryView, row)

    async def list_deliveries(
        self,
        workspace_id: str,
        *,
        endpoint_id: str,
        status: str,
        page_size: int,
        page_token: str,
    ) -> DeliveryViewPage:
        """A page of the workspace's deliveries, newest first."""
        async with self.db.transaction(write=False) as session:
            page = await deliveries.list_deliveries(
                session,
                workspace_id,
                endpoint_id=endpoint_id,
                status=status,
                page_size=page_size,
                page_token=page_token,
            )
            return DeliveryViewPage(
                [view_of(DeliveryView, row) for row in page.deliveries], page.next_page_token
            )

    async def resend(
        self,
        actor: Actor,
        workspace_id: str,
        *,
        delivery_id: str,
        failed_since: datetime | None,
        endpoint_id: str,
    ) -> list[DeliveryView]:
        """Queues again one delivery, or the failed ones since a time."""
        async with self.db.transaction() as session:
            rows = await deliveries.resend(
                session,
                actor,
                workspace_id,
                delivery_id=delivery_id,
                failed_since=failed_since,
                endpoint_id=endpoint_id,
                now=self.clock(),
            )
            return [view_of(DeliveryView, row) for row in rows]

    async def create_rule(
        self, actor: Actor, workspace_id: str, fields: RuleFields
    ) -> AlertRuleView:
        """Adds an alert rule."""
        async with self.db.transaction() as session:
            row = await alerts.create_rule(
                session,
                actor,
                workspace_id,
                kind=fields.kind,
                provider=fields.provider,
                threshold=fields.threshold,
                trailing_runs=fields.trailing_runs,
                min_sample=fields.min_sample,
                now=self.clock(),
            )
            return view_of(AlertRuleView, row)

    async def list_rules(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[AlertRuleView], str]:
        """A page of the workspace's alert rules and the next page's token."""
        async with self.db.transaction(write=False) as session:
            rows, token = await alerts.list_rules(
                session, workspace_id, page_size=page_size, page_token=page_token
            )
            return [view_of(AlertRuleView, row) for row in rows], token

    async def delete_rule(self, actor: Actor, workspace_id: str, rule_id: str) -> None:
        """Removes an alert rule (the alerts it fired stay)."""
        async with self.db.transaction() as session:
            await alerts.delete_rule(session, actor, workspace_id, rule_id, self.clock())

    async def list_alerts(
        self, workspace_id: str, *, page_size: int, page_token: str
    ) -> AlertViewPage:
        """A page of the workspace's alerts, newest first."""
        async with self.db.transaction(write=False) as session:
            page = await alerts.list_alerts(
                session, workspace_id, page_size=page_size, page_token=page_token
            )
            return AlertViewPage(
                [view_of(AlertView, row) for row in page.alerts], page.next_page_token
            )

    async def get_digest(self, workspace_id: str) -> DigestState:
        """The workspace's digest settings and when it is sent next."""
        async with self.db.transaction(write=False) as session:
            return await digests.get_digest(session, workspace_id)

    async def set_digest(
        self, actor: Actor, workspace_id: str, fields: DigestFields
    ) -> DigestState:
        """Sets the workspace's digest."""
        async with self.db.transaction() as session:
            return await digests.set_digest(
                session,
                actor,
                workspace_id,
                frequency=fields.frequency,
                hour=fields.hour,
                weekday=fields.weekday,
                time_zone=fields.time_zone,
                now=self.clock(),
            )

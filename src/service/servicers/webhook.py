"""WebhookService: endpoints, deliveries, alert rules, alerts and the digest of a workspace."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2, struct_pb2

from beacon.v1 import webhook_service_pb2 as pb
from beacon.v1 import webhook_service_pb2_grpc
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.application.webhooks import (
    AlertRuleView,
    AlertView,
    DeliveryView,
    DigestFields,
    EndpointChange,
    EndpointSecretView,
    EndpointView,
    RuleFields,
)
from service.auth.context import current_actor
from service.domain.notifications import alerts, deliveries, digests
from service.domain.notifications.digests import DigestState
from service.servicers.convert import (
    PROVIDER_FROM_PROTO,
    PROVIDER_TO_PROTO,
    time_field,
    timestamp,
)

STATUS_TO_PROTO = {
    deliveries.PENDING: pb.DELIVERY_STATUS_PENDING,
    deliveries.SUCCEEDED: pb.DELIVERY_STATUS_SUCCEEDED,
    deliveries.FAILED: pb.DELIVERY_STATUS_FAILED,
}
STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}
KIND_TO_PROTO = {
    alerts.MENTION_RATE_DROP: pb.ALERT_KIND_MENTION_RATE_DROP,
    alerts.MENTION_RATE_RISE: pb.ALERT_KIND_MENTION_RATE_RISE,
    alerts.AVERAGE_RANK_WORSENS: pb.ALERT_KIND_AVERAGE_RANK_WORSENS,
    alerts.COMPETITOR_APPEARS: pb.ALERT_KIND_COMPETITOR_APPEARS,
    alerts.DOMAIN_UNCITED: pb.ALERT_KIND_DOMAIN_UNCITED,
    alerts.SPENDING_CAP_REACHED: pb.ALERT_KIND_SPENDING_CAP_REACHED,
}
KIND_FROM_PROTO = {v: k for k, v in KIND_TO_PROTO.items()}
FREQUENCY_TO_PROTO = {
    digests.OFF: pb.DIGEST_FREQUENCY_OFF,
    digests.DAILY: pb.DIGEST_FREQUENCY_DAILY,
    digests.WEEKLY: pb.DIGEST_FREQUENCY_WEEKLY,
}
FREQUENCY_FROM_PROTO = {v: k for k, v in FREQUENCY_TO_PROTO.items()}


def endpoint_to_proto(row: EndpointView) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        id=row.id,
        workspace_id=row.workspace_id,
        url=row.url,
        event_types=row.event_types,
        enabled=row.enabled,
        description=row.description,
        disabled_reason=row.disabled_reason,
        secret_create_time=timestamp(row.secret_create_time),
        previous_secret_expire_time=timestamp(row.previous_secret_expire_time),
        create_time=timestamp(row.create_time),
    )


def _with_secret(made: EndpointSecretView) -> pb.WebhookEndpointWithSecret:
    return pb.WebhookEndpointWithSecret(
        endpoint=endpoint_to_proto(made.endpoint), secret=made.secret
    )


def delivery_to_proto(row: DeliveryView) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        message_id=row.message_id,
        event_type=row.event_type,
        status=STATUS_TO_PROTO[row.status],
        attempts=row.attempts,
        last_http_status=row.last_http_status,
        last_error=row.last_error,
        last_latency_ms=row.last_latency_ms,
        next_attempt_time=timestamp(row.next_attempt_time),
        create_time=timestamp(row.create_time),
        complete_time=timestamp(row.complete_time),
    )


def rule_to_proto(row: AlertRuleView) -> pb.AlertRule:
    return pb.AlertRule(
        id=row.id,
        workspace_id=row.workspace_id,
        kind=KIND_TO_PROTO[row.kind],
        provider=PROVIDER_TO_PROTO.get(row.provider, ws_pb.PROVIDER_UNSPECIFIED),
        threshold=row.threshold,
        trailing_runs=row.trailing_runs,
        min_sample=row.min_sample,
        create_time=timestamp(row.create_time),
    )


def alert_to_proto(row: AlertView) -> pb.Alert:
    figures = struct_pb2.Struct()
    figures.update(row.figures)
    return pb.Alert(
        id=row.id,
        alert_rule_id=row.alert_rule_id,
        kind=KIND_TO_PROTO[row.kind],
        run_id=row.run_id,
        subject=row.subject,
        figures=figures,
        create_time=timestamp(row.create_time),
    )


def digest_to_proto(workspace_id: str, state: DigestState) -> pb.Digest:
    return pb.Digest(
        workspace_id=workspace_id,
        frequency=FREQUENCY_TO_PROTO[state.frequency],
        hour=state.hour,
        weekday=state.weekday,
        time_zone=state.time_zone,
        next_send_time=timestamp(state.next_send_time),
    )


class WebhookServicer(webhook_service_pb2_grpc.WebhookServiceServicer):
    """Each handler converts the request, makes one call to `service.application.webhooks`
    and converts the result."""

    def __init__(self, app: App) -> None:
        self.webhooks = app.services.webhooks

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.WebhookEndpointWithSecret:
        made = await self.webhooks.create_endpoint(
            current_actor(),
            request.workspace_id,
            url=request.url,
            event_types=list(request.event_types),
            description=request.description,
        )
        return _with_secret(made)

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhookEndpointsResponse:
        views, token = await self.webhooks.list_endpoints(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListWebhookEndpointsResponse(
            endpoints=[endpoint_to_proto(v) for v in views], next_page_token=token
        )

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.WebhookEndpoint:
        fields = request.endpoint
        view = await self.webhooks.update_endpoint(
            current_actor(),
            request.workspace_id,
            fields.id,
            list(request.update_mask.paths),
            EndpointChange(
                url=fields.url,
                event_types=list(fields.event_types),
                enabled=fields.enabled,
                description=fields.description,
            ),
        )
        return endpoint_to_proto(view)

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.webhooks.delete_endpoint(
            current_actor(), request.workspace_id, request.endpoint_id
        )
        return empty_pb2.Empty()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.WebhookEndpointWithSecret:
        made = await self.webhooks.rotate_secret(
            current_actor(), request.workspace_id, request.endpoint_id
        )
        return _with_secret(made)

    async def SendWebhookPing(
        self, request: pb.SendWebhookPingRequest, context: grpc.aio.ServicerContext
    ) -> pb.WebhookDelivery:
        view = await self.webhooks.send_ping(
            current_actor(), request.workspace_id, request.endpoint_id
        )
        return delivery_to_proto(view)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhookDeliveriesResponse:
        page = await self.webhooks.list_deliveries(
            request.workspace_id,
            endpoint_id=request.endpoint_id,
            status=STATUS_FROM_PROTO.get(request.status, ""),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(v) for v in page.deliveries],
            next_page_token=page.next_page_token,
        )

    async def ResendWebhookDeliveries(
        self, request: pb.ResendWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResendWebhookDeliveriesResponse:
        views = await self.webhooks.resend(
            current_actor(),
            request.workspace_id,
            delivery_id=request.delivery_id,
            failed_since=time_field(request, "failed_since"),
            endpoint_id=request.endpoint_id,
        )
        return pb.ResendWebhookDeliveriesResponse(deliveries=[delivery_to_proto(v) for v in views])

    async def CreateAlertRule(
        self, request: pb.CreateAlertRuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.AlertRule:
        rule = request.alert_rule
        view = await self.webhooks.create_rule(
            current_actor(),
            request.workspace_id,
            RuleFields(
                kind=KIND_FROM_PROTO.get(rule.kind, ""),
                provider=PROVIDER_FROM_PROTO.get(rule.provider, ""),
                threshold=rule.threshold,
                trailing_runs=rule.trailing_runs,
                min_sample=rule.min_sample,
            ),
        )
        return rule_to_proto(view)

    async def ListAlertRules(
        self, request: pb.ListAlertRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertRulesResponse:
        views, token = await self.webhooks.list_rules(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListAlertRulesResponse(
            alert_rules=[rule_to_proto(v) for v in views], next_page_token=token
        )

    async def DeleteAlertRule(
        self, request: pb.DeleteAlertRuleRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.webhooks.delete_rule(
            current_actor(), request.workspace_id, request.alert_rule_id
        )
        return empty_pb2.Empty()

    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAlertsResponse:
        page = await self.webhooks.list_alerts(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListAlertsResponse(
            alerts=[alert_to_proto(v) for v in page.alerts],
            next_page_token=page.next_page_token,
        )

    async def GetDigest(
        self, request: pb.GetDigestRequest, context: grpc.aio.ServicerContext
    ) -> pb.Digest:
        state = await self.webhooks.get_digest(request.workspace_id)
        return digest_to_proto(request.workspace_id, state)

    async def SetDigest(
        self, request: pb.SetDigestRequest, context: grpc.aio.ServicerContext
    ) -> pb.Digest:
        state = await self.webhooks.set_digest(
            current_actor(),
            request.workspace_id,
            DigestFields(
                frequency=FREQUENCY_FROM_PROTO.get(request.frequency, ""),
                hour=request.hour,
                weekday=request.weekday,
                time_zone=request.time_zone,
            ),
        )
        return digest_to_proto(request.workspace_id, state)


def add(server: grpc.aio.Server, app: App) -> str:
    webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["WebhookService"].full_name)

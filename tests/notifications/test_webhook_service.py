"""WebhookService through a real server: secrets shown once and stored encrypted, rotation
signing with both secrets, URL rules, ping and resend, the digest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from beacon.v1 import webhook_service_pb2 as pb
from service.app import App
from service.clock import utcnow
from service.config import DEV_WEBHOOK_SECRET_KEY, ConfigError, Settings
from service.db.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from service.domain.errors import FailedPrecondition
from service.domain.notifications import digests, endpoints
from service.domain.notifications.secrets import SecretBox
from tests.support import expect_error
from tests.support.app import TEST_SECRET, TEST_SIGNING_SECRET, NewUser, TestUser
from tests.support.builders import make_workspace
from workers.webhooks import sign

URL = "https://hooks.example.com/beacon"


async def owner_workspace(app: App, new_user: NewUser) -> tuple[TestUser, str]:
    user = await new_user()
    return user, (await make_workspace(app, user.user_id)).workspace_id


async def create(
    stubs: SimpleNamespace, user: TestUser, ws: str, url: str = URL
) -> pb.WebhookEndpointWithSecret:
    made: pb.WebhookEndpointWithSecret = await stubs.webhooks.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(workspace_id=ws, url=url), metadata=user.metadata
    )
    return made


async def test_the_secret_is_shown_once_and_stored_encrypted(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, ws = await owner_workspace(app, new_user)
    made = await create(stubs, user, ws)
    assert made.secret.startswith("whsec_") and made.endpoint.id.startswith("whk_")
    listed = await stubs.webhooks.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(workspace_id=ws), metadata=user.metadata
    )
    assert made.secret not in str(listed)
    async with app.db.transaction(write=False) as session:
        row = await session.get(WebhookEndpoint, made.endpoint.id)
        audits = (
            await session.scalars(select(AuditEvent).where(AuditEvent.workspace_id == ws))
        ).all()
    assert row is not None
    secret_body = made.secret.removeprefix("whsec_")
    assert secret_body not in row.secret_ciphertext
    assert SecretBox.from_settings(app.settings).decrypt(row.secret_ciphertext, row.id) == (
        made.secret
    )
    assert all(secret_body not in json.dumps(a.target_ids) for a in audits)


async def test_during_a_rotation_both_secrets_sign(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, ws = await owner_workspace(app, new_user)
    made = await create(stubs, user, ws)
    rotated = await stubs.webhooks.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(workspace_id=ws, endpoint_id=made.endpoint.id),
        metadata=user.metadata,
    )
    assert rotated.secret != made.secret
    assert rotated.endpoint.HasField("previous_secret_expire_time")
    async with app.db.transaction(write=False) as session:
        row = await session.get(WebhookEndpoint, made.endpoint.id)
    assert row is not None
    box, now = SecretBox.from_settings(app.settings), utcnow()
    during = endpoints.signing_secrets(row, box, now)
    after = endpoints.signing_secrets(row, box, now + timedelta(hours=25))
    assert during == [rotated.secret, made.secret] and after == [rotated.secret]
    body = '{"type":"ping"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(during, "msg_1", now, body),
    }
    for secret in (made.secret, rotated.secret):  # a receiver on either secret verifies
        assert Webhook(secret).verify(body, headers) == {"type": "ping"}


async def test_urls_must_be_https_and_event_types_known(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, ws = await owner_workspace(app, new_user)
    refused = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, create(stubs, user, ws, "http://hooks.example.com/x")
    )
    assert refused.details["BadRequest"].field_violations[0].field == "url"
    made = await create(stubs, user, ws)
    wrong_type = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.webhooks.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                workspace_id=ws,
                endpoint=pb.WebhookEndpoint(id=made.endpoint.id, event_types=["run.exploded"]),
                update_mask=FieldMask(paths=["event_types"]),
            ),
            metadata=user.metadata,
        ),
    )
    assert wrong_type.details["BadRequest"].field_violations[0].field == "endpoint.event_types"


async def test_lists_and_updates_show_every_field_of_what_was_made(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, ws = await owner_workspace(app, new_user)
    made = await create(stubs, user, ws)
    updated = await stubs.webhooks.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            workspace_id=ws,
            endpoint=pb.WebhookEndpoint(
                id=made.endpoint.id, event_types=["run.completed"], description="ops"
            ),
            update_mask=FieldMask(paths=["event_types", "description"]),
        ),
        metadata=user.metadata,
    )
    expected = pb.WebhookEndpoint()
    expected.CopyFrom(made.endpoint)
    expected.event_types[:] = ["run.completed"]
    expected.description = "ops"
    assert updated == expected and made.endpoint.enabled and made.endpoint.create_time.seconds
    listed = await stubs.webhooks.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(workspace_id=ws), metadata=user.metadata
    )
    assert list(listed.endpoints) == [updated]
    rule = await stubs.webhooks.CreateAlertRule(
        pb.CreateAlertRuleRequest(
            workspace_id=ws,
            alert_rule=pb.AlertRule(
                kind=pb.ALERT_KIND_MENTION_RATE_DROP, threshold=15, trailing_runs=5, min_sample=20
            ),
        ),
        metadata=user.metadata,
    )
    assert (rule.workspace_id, rule.kind, rule.threshold, rule.trailing_runs) == (
        ws,
        pb.ALERT_KIND_MENTION_RATE_DROP,
        15,
        5,
    )
    assert rule.min_sample == 20 and rule.id and rule.create_time.seconds
    rules = await stubs.webhooks.ListAlertRules(
        pb.ListAlertRulesRequest(workspace_id=ws), metadata=user.metadata
    )
    assert list(rules.alert_rules) == [rule]
    ping = await stubs.webhooks.SendWebhookPing(
        pb.SendWebhookPingRequest(workspace_id=ws, endpoint_id=made.endpoint.id),
        metadata=user.metadata,
    )
    assert (ping.endpoint_id, ping.attempts) == (made.endpoint.id, 0)
    assert ping.message_id and ping.create_time.seconds and ping.next_attempt_time.seconds
    deliveries = await stubs.webhooks.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(workspace_id=ws), metadata=user.metadata
    )
    assert list(deliveries.deliveries) == [ping]


async def test_ping_and_resending_failed_deliveries(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, ws = await owner_workspace(app, new_user)
    made = await create(stubs, user, ws)
    ping = await stubs.webhooks.SendWebhookPing(
        pb.SendWebhookPingRequest(workspace_id=ws, endpoint_id=made.endpoint.id),
        metadata=user.metadata,
    )
    assert (ping.event_type, ping.status) == ("ping", pb.DELIVERY_STATUS_PENDING)
    async with app.db.transaction() as session:
        row = await session.get(WebhookDelivery, ping.id)
        assert row is not None
        row.status, row.attempts, row.next_attempt_time = "failed", 9, None
    since = Timestamp()
    since.FromDatetime(datetime.now(UTC) - timedelta(minutes=5))
    resent = await stubs.webhooks.ResendWebhookDeliveries(
        pb.ResendWebhookDeliveriesRequest(workspace_id=ws, failed_since=since),
        metadata=user.metadata,
    )
    assert [(d.id, d.message_id, d.status) for d in resent.deliveries] == [
        (ping.id, ping.message_id, pb.DELIVERY_STATUS_PENDING)
    ]
    listed = await stubs.webhooks.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(workspace_id=ws, status=pb.DELIVERY_STATUS_PENDING),
        metadata=user.metadata,
    )
    assert [d.id for d in listed.deliveries] == [ping.id]
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.webhooks.ResendWebhookDeliveries(
            pb.ResendWebhookDeliveriesRequest(workspace_id=ws), metadata=user.metadata
        ),
    )


async def test_a_weekly_digest_goes_out_at_the_local_hour(
    app: App, stubs: SimpleNamespace, new_user: NewUser
) -> None:
    user, ws = await owner_workspace(app, new_user)
    await create(stubs, user, ws)
    digest = await stubs.webhooks.SetDigest(
        pb.SetDigestRequest(
            workspace_id=ws,
            frequency=pb.DIGEST_FREQUENCY_WEEKLY,
            hour=9,
            weekday=1,
            time_zone="Europe/Paris",
        ),
        metadata=user.metadata,
    )
    due = digest.next_send_time.ToDatetime(tzinfo=UTC)
    local = due.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.isoweekday(), local.hour, local.minute) == (1, 9, 0)
    assert timedelta(0) < due - utcnow() <= timedelta(days=7)
    async with app.db.transaction() as session:
        assert await digests.send_due_digests(session, due, limit=10_000) >= 1
    async with app.db.transaction(write=False) as session:
        sent = (
            await session.scalars(
                select(WebhookDelivery).where(
                    WebhookDelivery.workspace_id == ws, WebhookDelivery.event_type == "digest"
                )
            )
        ).all()
    (only,) = sent
    data = json.loads(only.body)["data"]
    assert data["frequency"] == "weekly" and data["alerts"] == []
    again = await stubs.webhooks.GetDigest(
        pb.GetDigestRequest(workspace_id=ws), metadata=user.metadata
    )
    assert again.next_send_time.ToDatetime(tzinfo=UTC) == due + timedelta(days=7)


def test_the_secret_key_is_required_and_the_dev_key_refused_outside_dev() -> None:
    with pytest.raises(FailedPrecondition):
        SecretBox.from_settings(Settings(webhook_secret_key=""))
    dev = Settings(
        auth_secret=TEST_SECRET,
        signing_secret=TEST_SIGNING_SECRET,
        webhook_secret_key=DEV_WEBHOOK_SECRET_KEY,
    )
    with pytest.raises(ConfigError, match="BEACON_WEBHOOK_SECRET_KEY"):
        dev.check_secrets()
    dev.check_secrets(dev=True)
    short = dev.model_copy(update={"webhook_secret_key": "short"})
    with pytest.raises(ConfigError, match="BEACON_WEBHOOK_SECRET_KEY"):
        short.check_secrets()

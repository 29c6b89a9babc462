"""Webhook endpoints, their deliveries (the outbox), alert rules, fired alerts and digests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base

WORKSPACE_FK = "workspaces.id"


class WebhookEndpoint(Base):
    """A URL a workspace's events are POSTed to, with its (encrypted) signing secrets."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_ws_created", "workspace_id", "create_time"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every type
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    # AES-GCM ciphertexts (service.domain.notifications.secrets), never the secrets.
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    secret_create_time: Mapped[datetime]
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expire_time: Mapped[datetime | None] = mapped_column(default=None)
    # First failed attempt since the last success; the endpoint is disabled when it is old.
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    create_time: Mapped[datetime]


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row, written in the transaction of the event,
    and its schedule of attempts (`next_attempt_time`, swept by the ticker)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_ws_created", "workspace_id", "create_time", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_time",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(40))  # the webhook-id header
    event_type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent on every attempt
    status: Mapped[str] = mapped_column(String(20))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_time: Mapped[datetime | None] = mapped_column(default=None)
    # The claim of the attempt in flight: only the worker holding it may record its outcome.
    lease_token: Mapped[str | None] = mapped_column(String(40), default=None)
    last_http_status: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    # When the retry schedule started (creation, or the last resend).
    schedule_start_time: Mapped[datetime]
    create_time: Mapped[datetime]
    complete_time: Mapped[datetime | None] = mapped_column(default=None)


class AlertRule(Base):
    """A condition evaluated when each run of the workspace ends."""

    __tablename__ = "alert_rules"
    __table_args__ = (Index("ix_alert_rules_ws_created", "workspace_id", "create_time"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(20), default="")  # empty: overall
    threshold: Mapped[float] = mapped_column(Float, default=0.0)
    trailing_runs: Mapped[int] = mapped_column(Integer)
    min_sample: Mapped[int] = mapped_column(Integer)
    # Subjects that fired and have not recovered since (fires once per movement).
    firing: Mapped[list[str]] = mapped_column(JSON, default=list)
    create_time: Mapped[datetime]


class Alert(Base):
    """A fired alert rule, with the figures that fired it."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_ws_created", "workspace_id", "create_time", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    alert_rule_id: Mapped[str] = mapped_column(String(40))  # the rule may be deleted since
    kind: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    create_time: Mapped[datetime]


class Digest(Base):
    """A workspace's periodic digest; the row exists only while it is on."""

    __tablename__ = "digests"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    frequency: Mapped[str] = mapped_column(String(10))  # daily | weekly
    hour: Mapped[int] = mapped_column(Integer)
    weekday: Mapped[int] = mapped_column(Integer, default=1)  # ISO, weekly only
    time_zone: Mapped[str] = mapped_column(String(64))
    # The ticker claims rows with next_send_time <= now.
    next_send_time: Mapped[datetime] = mapped_column(index=True)
    last_send_time: Mapped[datetime | None] = mapped_column(default=None)

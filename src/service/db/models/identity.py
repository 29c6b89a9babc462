"""Users, service keys and idempotency records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, Timestamps


class User(Timestamps, Base):
    """A person, known by the (issuer, subject) of their tokens."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(254), index=True)
    email_verified: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(String(200), default="")
    current_workspace_id: Mapped[str | None] = mapped_column(String(40), default=None)


class ServiceKey(Base):
    """A credential of an internal service: `bk_<id>_<secret>`, stored as a SHA-256 hash."""

    __tablename__ = "service_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What the key may touch: these organizations, or every one (platform-internal keys).
    organization_ids: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    all_organizations: Mapped[bool] = mapped_column(default=False, server_default=false())
    create_time: Mapped[datetime]
    revoke_time: Mapped[datetime | None] = mapped_column(default=None)


class IdempotencyKey(Base):
    """The first response of a create carrying a request_id, replayed on retries."""

    __tablename__ = "idempotency_keys"

    principal_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    method: Mapped[str] = mapped_column(String(120), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime]

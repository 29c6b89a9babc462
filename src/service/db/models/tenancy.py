"""Organizations, workspaces, their members and invitations, uploads and audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, Timestamps

USER_FK = "users.id"


class Organization(Timestamps, Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    workos_organization_id: Mapped[str | None] = mapped_column(
        String(80), unique=True, default=None
    )
    # The user whose personal organization this is (created on first use), if any.
    personal_owner_id: Mapped[str | None] = mapped_column(
        ForeignKey(USER_FK, ondelete="SET NULL"), unique=True, default=None
    )
    # Monthly spending cap over all its workspaces, in micro-units of USD (NULL: none).
    monthly_cap_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)


class OrganizationMember(Base):
    __tablename__ = "organization_members"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey(USER_FK, ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(20))  # owner | admin | member | billing_admin
    create_time: Mapped[datetime]


class OrganizationInvitation(Base):
    __tablename__ = "organization_invitations"
    __table_args__ = (UniqueConstraint("organization_id", "email"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254), index=True)
    role: Mapped[str] = mapped_column(String(20))
    invited_by: Mapped[str | None] = mapped_column(
        ForeignKey(USER_FK, ondelete="SET NULL"), default=None
    )
    create_time: Mapped[datetime]
    # After this the invitation can no longer be accepted (and is no longer listed).
    expire_time: Mapped[datetime]


class File(Base):
    """An uploaded blob (workspace icons); the bytes live in the storage backend."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey(USER_FK, ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(20))  # pending | uploaded
    content_type: Mapped[str] = mapped_column(String(60), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    upload_expire_time: Mapped[datetime]
    create_time: Mapped[datetime]
    upload_time: Mapped[datetime | None] = mapped_column(default=None)


class Workspace(Timestamps, Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        # Slugs are unique among live workspaces of an organization.
        Index(
            "uq_workspaces_live_slug",
            "organization_id",
            "slug",
            unique=True,
            sqlite_where=text("delete_time IS NULL"),
            postgresql_where=text("delete_time IS NULL"),
        ),
        Index("ix_workspaces_org_created", "organization_id", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(50))
    domain: Mapped[str] = mapped_column(String(253), default="")
    icon_file_id: Mapped[str | None] = mapped_column(
        ForeignKey("files.id", ondelete="SET NULL"), default=None
    )
    brand_aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"name": ..., "domain": ...}]
    competitors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    enabled_providers: Mapped[list[str]] = mapped_column(JSON, default=list)
    join_code: Mapped[str | None] = mapped_column(String(20), unique=True, default=None)
    join_code_expire_time: Mapped[datetime | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)  # the etag
    delete_time: Mapped[datetime | None] = mapped_column(default=None, index=True)
    # The market prompts without one are asked from ({"country", ...}; empty: none).
    default_market: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Monthly spending cap in micro-units of USD (NULL: none), set by the organization.
    monthly_cap_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)


class WorkspaceMember(Base):
    __tablename__ = "workspace_members"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey(USER_FK, ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(20))  # owner | member
    create_time: Mapped[datetime]


class WorkspaceInvitation(Base):
    __tablename__ = "workspace_invitations"
    __table_args__ = (UniqueConstraint("workspace_id", "email"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254), index=True)
    role: Mapped[str] = mapped_column(String(20))
    invited_by: Mapped[str | None] = mapped_column(
        ForeignKey(USER_FK, ondelete="SET NULL"), default=None
    )
    create_time: Mapped[datetime]
    # After this the invitation can no longer be accepted (and is no longer listed).
    expire_time: Mapped[datetime]


class AuditEvent(Base):
    """One successful mutation, written in the transaction that made it."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_time", "organization_id", "create_time"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    workspace_id: Mapped[str | None] = mapped_column(String(40), default=None)
    actor_id: Mapped[str] = mapped_column(String(40))  # the user acted for, or the key
    service_key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    action: Mapped[str] = mapped_column(String(120))
    target_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    request_id: Mapped[str] = mapped_column(String(100), default="")  # the server's
    correlation_id: Mapped[str] = mapped_column(String(100), default="", server_default="")
    create_time: Mapped[datetime]

"""Schedules, prompts, runs and probes (one provider's answer to one prompt in one run)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base

WORKSPACE_FK = "workspaces.id"


class Schedule(Base):
    """A workspace's cron schedule; the row exists only while the workspace is scheduled."""

    __tablename__ = "schedules"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    cron: Mapped[str] = mapped_column(String(120))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    # The next slot to fire; the ticker claims rows with next_run_time <= now.
    next_run_time: Mapped[datetime] = mapped_column(index=True)
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]


class Prompt(Base):
    __tablename__ = "prompts"
    # Long texts cannot be indexed directly (PostgreSQL btree limit): dedupe on a hash.
    __table_args__ = (
        UniqueConstraint("workspace_id", "text_hash"),
        Index("ix_prompts_ws_created", "workspace_id", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime]
    # Where the prompt is asked from: {"country", "region", "city", "language"} (empty: the
    # workspace's default market). Part of the prompt's identity (`text_hash` covers it).
    market: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # One run per schedule slot, however many tickers race.
        UniqueConstraint("workspace_id", "scheduled_time"),
        Index("ix_runs_ws_created", "workspace_id", "create_time", "id"),
        # At most one open run per (workspace, lane): with lanes 0..N-1 a workspace holds at
        # most N open runs (BEACON_MAX_OPEN_RUNS_PER_WORKSPACE), however many callers and
        # tickers race (service.domain.collection.runs).
        Index(
            "uq_runs_open_lane",
            "workspace_id",
            "open_lane",
            unique=True,
            postgresql_where=text("end_time IS NULL"),
            sqlite_where=text("end_time IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(20))  # manual | schedule | schedule_set
    status: Mapped[str] = mapped_column(String(20))  # queued|running|succeeded|partial|...
    scheduled_time: Mapped[datetime | None] = mapped_column(default=None)
    # Requested subsets; empty means all prompts / all enabled providers at expansion.
    prompt_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    providers: Mapped[list[str]] = mapped_column(JSON, default=list)
    prompt_count: Mapped[int] = mapped_column(Integer, default=0)
    create_time: Mapped[datetime]
    # Outbox: NULL until the run's message is handed to the broker.
    enqueue_time: Mapped[datetime | None] = mapped_column(default=None, index=True)
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)
    # The open-run slot the run holds until it ends (NULL: none, for rows written outside
    # the commands that create runs).
    open_lane: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_reason: Mapped[str] = mapped_column(Text, default="")


class Probe(Base):
    """One (run, prompt, provider): its answer and analysis once it finishes."""

    __tablename__ = "probes"
    __table_args__ = (
        UniqueConstraint("run_id", "prompt_id", "provider"),
        Index("ix_probes_ws_created", "workspace_id", "create_time", "id"),
        # Answers by time: the partial days at the ends of a report's range, and rollup
        # rebuilds. Partial, so that pending probes (inserted in bulk) do not enter it.
        Index(
            "ix_probes_ws_answered",
            "workspace_id",
            "complete_time",
            postgresql_where=text("status = 'succeeded'"),
            sqlite_where=text("status = 'succeeded'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"))
    prompt_id: Mapped[str] = mapped_column(String(40))
    prompt_text: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # pending | succeeded | failed | skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str] = mapped_column(String(120), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    # [{"url", "title", "domain", "brand"}]
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    brand_mentioned: Mapped[bool] = mapped_column(Boolean, default=False)
    brand_rank: Mapped[int] = mapped_column(Integer, default=0)
    # [{"name", "rank"}]
    competitors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    brand_citations: Mapped[int] = mapped_column(Integer, default=0)
    citation_count: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime]
    complete_time: Mapped[datetime | None] = mapped_column(default=None)
    # The market the prompt was asked from (the prompt's, else the workspace's default, at
    # expansion) and whether the provider's API took it (`service.domain.money.markets`).
    market: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    market_applied: Mapped[bool] = mapped_column(Boolean, default=False)
    # The usage the provider reported and its cost in micro-units of USD
    # (`service.domain.money.prices`); `usage` keeps the provider's own extra figures
    # (Perplexity's cost, Cohere's billed units).
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    search_calls: Mapped[int] = mapped_column(Integer, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class VisibilityRollup(Base):
    """Sums over a workspace's answers (succeeded probes) of one provider on one UTC day.

    Written in the transaction that stores the answers (`service.domain.collection.rollups`), so that a
    report reads one row per (day, provider) instead of every answer.
    """

    __tablename__ = "visibility_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    responses: Mapped[int] = mapped_column(Integer, default=0)
    brand_mentions: Mapped[int] = mapped_column(Integer, default=0)
    # Over answers that mention and rank the brand (brand_rank > 0).
    rank_sum: Mapped[int] = mapped_column(Integer, default=0)
    ranked: Mapped[int] = mapped_column(Integer, default=0)
    brand_citations: Mapped[int] = mapped_column(Integer, default=0)
    citations: Mapped[int] = mapped_column(Integer, default=0)


class CompetitorRollup(Base):
    """Answers of one provider on one UTC day that mention a competitor (once per answer)."""

    __tablename__ = "competitor_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    mentions: Mapped[int] = mapped_column(Integer, default=0)


class _VisibilitySums:
    """`VisibilityRollup`'s sums, for the rollups of shorter slots."""

    responses: Mapped[int] = mapped_column(Integer, default=0)
    brand_mentions: Mapped[int] = mapped_column(Integer, default=0)
    rank_sum: Mapped[int] = mapped_column(Integer, default=0)
    ranked: Mapped[int] = mapped_column(Integer, default=0)
    brand_citations: Mapped[int] = mapped_column(Integer, default=0)
    citations: Mapped[int] = mapped_column(Integer, default=0)


class HourlyVisibilityRollup(_VisibilitySums, Base):
    """`VisibilityRollup`'s sums for one UTC hour: a report in a time zone whose days do not
    start at 00:00 UTC moves the hours between a UTC midnight and a local one with them."""

    __tablename__ = "hourly_visibility_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)


class HourlyCompetitorRollup(Base):
    """`CompetitorRollup`'s mentions for one UTC hour."""

    __tablename__ = "hourly_competitor_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    mentions: Mapped[int] = mapped_column(Integer, default=0)


class QuarterHourVisibilityRollup(_VisibilitySums, Base):
    """`VisibilityRollup`'s sums for one UTC quarter-hour (every zone offset is a multiple of
    15 minutes): a report in a zone off the whole hour moves the minutes between a whole UTC
    hour and a local midnight with them."""

    __tablename__ = "quarter_hour_visibility_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    quarter_hour: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)


class QuarterHourCompetitorRollup(Base):
    """`CompetitorRollup`'s mentions for one UTC quarter-hour."""

    __tablename__ = "quarter_hour_competitor_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    quarter_hour: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    mentions: Mapped[int] = mapped_column(Integer, default=0)


class UsageRollup(Base):
    """A workspace's provider usage and cost in one calendar month (UTC), over every answered
    or failed call that reported usage; written with the answers (`workers.probe_store`) and
    read by caps, estimates and the billing view (`service.domain.money`)."""

    __tablename__ = "usage_rollups"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True
    )
    # The first day of the month.
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    answers: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    search_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)

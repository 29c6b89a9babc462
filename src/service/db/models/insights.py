"""Rollups and state of the insights reports: cited sources, cited URLs, visibility per
prompt, and competitor suggestions (see `service.domain.collection.insight_rollups`).

Every rollup is keyed by (workspace, unit, bucket, ...): `unit` is "m", "d", "h" or "q" and
`bucket` the UTC instant starting that month, day, hour or quarter-hour, so one table serves
every piece of a report planned like the visibility report.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base

WORKSPACE_FK = "workspaces.id"


def _workspace() -> Mapped[str]:
    return mapped_column(ForeignKey(WORKSPACE_FK, ondelete="CASCADE"), primary_key=True)


class SourceRollup(Base):
    """Citations of a registrable domain, and answers citing it, per provider and bucket."""

    __tablename__ = "source_rollups"

    workspace_id: Mapped[str] = _workspace()
    unit: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    citations: Mapped[int] = mapped_column(Integer, default=0)
    answers: Mapped[int] = mapped_column(Integer, default=0)


class CitedUrlRollup(Base):
    """Citations of one URL (under a registrable domain) by the answers to one prompt."""

    __tablename__ = "cited_url_rollups"

    workspace_id: Mapped[str] = _workspace()
    unit: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    # sha256 of the URL: URLs may be longer than an index entry may hold.
    url_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    citations: Mapped[int] = mapped_column(Integer, default=0)


class PromptRollup(Base):
    """The visibility sums (as `VisibilityRollup`) of one prompt's answers per provider."""

    __tablename__ = "prompt_rollups"

    workspace_id: Mapped[str] = _workspace()
    unit: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    responses: Mapped[int] = mapped_column(Integer, default=0)
    brand_mentions: Mapped[int] = mapped_column(Integer, default=0)
    rank_sum: Mapped[int] = mapped_column(Integer, default=0)
    ranked: Mapped[int] = mapped_column(Integer, default=0)
    brand_citations: Mapped[int] = mapped_column(Integer, default=0)
    citations: Mapped[int] = mapped_column(Integer, default=0)


class PromptCompetitorRollup(Base):
    """Answers to one prompt mentioning a competitor, per provider and bucket."""

    __tablename__ = "prompt_competitor_rollups"

    workspace_id: Mapped[str] = _workspace()
    unit: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    mentions: Mapped[int] = mapped_column(Integer, default=0)


class AnsweredPrompt(Base):
    """The text of every prompt with answers, kept after the prompt is deleted so that
    reports still show it."""

    __tablename__ = "answered_prompts"

    workspace_id: Mapped[str] = _workspace()
    prompt_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class SuggestionEvidence(Base):
    """Answers of one provider that bring up a name or domain the workspace may not track.

    `kind` is "domain" (a cited registrable domain) or "name" (an item of a list or table in
    the answer); `key` is the domain, or the name case-folded.
    """

    __tablename__ = "suggestion_evidence"

    workspace_id: Mapped[str] = _workspace()
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    key: Mapped[str] = mapped_column(String(253), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    label: Mapped[str] = mapped_column(Text)
    answers: Mapped[int] = mapped_column(Integer, default=0)
    last_time: Mapped[datetime]
    # The newest answer bringing it up.
    example_response_id: Mapped[str] = mapped_column(String(40))


class SuggestionDecision(Base):
    """An owner's decision on a suggestion: "accepted" (it became a competitor) or
    "dismissed" (never suggested again)."""

    __tablename__ = "suggestion_decisions"

    workspace_id: Mapped[str] = _workspace()
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    key: Mapped[str] = mapped_column(String(253), primary_key=True)
    decision: Mapped[str] = mapped_column(String(10))
    decide_time: Mapped[datetime]

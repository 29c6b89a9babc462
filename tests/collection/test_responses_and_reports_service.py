"""ListResponses and GetVisibilityReport through a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import run_service_pb2 as pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import utcnow
from tests.support import expect_error
from tests.support.app import NewUser
from tests.support.app import TestUser as Caller
from tests.support.builders import all_pages, insert_probe, insert_run, make_workspace

OPENAI, ANTHROPIC = ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC


@pytest.fixture
async def owner(new_user: NewUser) -> Caller:
    return await new_user()


@pytest.fixture
async def workspace_id(app: App, owner: Caller) -> str:
    return (await make_workspace(app, owner.user_id, competitors=["Rival"])).workspace_id


async def responses(
    collection: SimpleNamespace, user: Caller, workspace_id: str, page_size: int = 0, **filters: Any
) -> list[pb.Response]:
    return await all_pages(
        lambda token: collection.runs.ListResponses(
            pb.ListResponsesRequest(
                workspace_id=workspace_id, page_size=page_size, page_token=token, **filters
            ),
            metadata=user.metadata,
        ),
        "responses",
    )


async def test_a_response_carries_the_answer_and_its_analysis(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    run_id = await insert_run(app, workspace_id)
    probe_id = await insert_probe(
        app,
        run_id,
        "prm_q",
        "openai",
        prompt_text="Which CRM?",
        model="gpt-5",
        text="Rival, then Acme.",
        citations=[
            {"url": "https://acme.com/", "title": "Acme", "domain": "acme.com", "brand": True},
            {"url": "https://news.io/x", "title": "", "domain": "news.io", "brand": False},
        ],
        brand_mentioned=True,
        brand_rank=2,
        competitors=[{"name": "Rival", "rank": 1}],
        brand_citations=1,
        citation_count=2,
        latency_ms=1234,
        attempts=2,
    )
    (response,) = await responses(collection, owner, workspace_id)
    assert (response.id, response.run_id, response.prompt_id) == (probe_id, run_id, "prm_q")
    assert (response.prompt_text, response.model, response.text) == (
        "Which CRM?",
        "gpt-5",
        "Rival, then Acme.",
    )
    assert response.provider == OPENAI
    assert response.status == pb.RESPONSE_STATUS_SUCCEEDED
    assert [(c.url, c.domain, c.brand) for c in response.citations] == [
        ("https://acme.com/", "acme.com", True),
        ("https://news.io/x", "news.io", False),
    ]
    assert (response.brand_mentioned, response.brand_rank) == (True, 2)
    assert [(c.name, c.rank) for c in response.competitors] == [("Rival", 1)]
    assert response.latency.ToMilliseconds() == 1234
    assert response.attempts == 2
    assert response.HasField("create_time")


async def test_filters_and_pages_newest_first(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    first_run = await insert_run(app, workspace_id)
    second_run = await insert_run(app, workspace_id)
    base = utcnow() - timedelta(minutes=30)
    expected: list[str] = []
    for minute, (run_id, prompt_id, provider, status) in enumerate(
        [
            (first_run, "prm_a", "openai", "succeeded"),
            (first_run, "prm_a", "anthropic", "failed"),
            (first_run, "prm_b", "openai", "succeeded"),
            (second_run, "prm_a", "openai", "succeeded"),
            (second_run, "prm_b", "anthropic", "succeeded"),
        ]
    ):
        expected.append(
            await insert_probe(
                app,
                run_id,
                prompt_id,
                provider,
                status=status,
                complete_time=base + timedelta(minutes=minute),
                error="quota exceeded" if status == "failed" else "",
            )
        )
    # Not finished: never listed.
    await insert_probe(app, second_run, "prm_c", "openai", status="pending")
    await insert_probe(app, second_run, "prm_d", "openai", status="skipped")
    newest_first = expected[::-1]

    assert [r.id for r in await responses(collection, owner, workspace_id, page_size=2)] == (
        newest_first
    )
    assert [r.id for r in await responses(collection, owner, workspace_id, run_id=first_run)] == (
        newest_first[2:]
    )
    by_provider = await responses(collection, owner, workspace_id, provider=ANTHROPIC)
    assert [(r.id, r.status, r.error) for r in by_provider] == [
        (expected[4], pb.RESPONSE_STATUS_SUCCEEDED, ""),
        (expected[1], pb.RESPONSE_STATUS_FAILED, "quota exceeded"),
    ]
    combined = await responses(
        collection, owner, workspace_id, page_size=1, run_id=first_run, prompt_id="prm_a"
    )
    assert [r.id for r in combined] == [expected[1], expected[0]]


async def test_bad_filters(
    app: App, collection: SimpleNamespace, new_user: NewUser, owner: Caller, workspace_id: str
) -> None:
    stranger = await new_user()
    theirs = await make_workspace(app, stranger.user_id)
    their_run = await insert_run(app, theirs.workspace_id)
    await insert_probe(app, their_run, "prm_x", "openai")
    await expect_error(
        grpc.StatusCode.NOT_FOUND, responses(collection, owner, workspace_id, run_id=their_run)
    )
    failure = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, responses(collection, owner, workspace_id, provider=99)
    )
    assert [v.field for v in failure.details["BadRequest"].field_violations] == ["provider"]
    hostile_filters: list[dict[str, Any]] = [{"prompt_id": "prm_\x00"}, {"run_id": "ws_notarun"}]
    for filters in hostile_filters:
        hostile = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT, responses(collection, owner, workspace_id, **filters)
        )
        assert [v.field for v in hostile.details["BadRequest"].field_violations] == list(filters)
    page = await collection.runs.ListResponses(
        pb.ListResponsesRequest(workspace_id=theirs.workspace_id, page_size=1),
        metadata=stranger.metadata,
    )
    assert len(page.responses) == 1
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        responses(collection, owner, theirs.workspace_id),
    )


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


async def test_visibility_report(
    app: App, collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    day = datetime(2026, 6, 1, tzinfo=UTC)
    run_id = await insert_run(app, workspace_id, create_time=day)
    for index, (provider, mentioned, rank, rival) in enumerate(
        [
            ("openai", True, 1, True),
            ("openai", True, 3, True),
            ("openai", False, 0, False),
            ("openai", False, 0, True),
            ("anthropic", True, 2, False),
        ]
    ):
        await insert_probe(
            app,
            run_id,
            f"prm_{index}",
            provider,
            complete_time=day + timedelta(hours=index),
            brand_mentioned=mentioned,
            brand_rank=rank,
            competitors=[{"name": "Rival", "rank": 1}] if rival else [],
            brand_citations=1 if mentioned else 0,
            citation_count=2,
        )
    report = await collection.runs.GetVisibilityReport(
        pb.GetVisibilityReportRequest(
            workspace_id=workspace_id,
            start_time=stamp(day),
            end_time=stamp(day + timedelta(days=7)),
            granularity=pb.GRANULARITY_WEEK,
        ),
        metadata=owner.metadata,
    )
    assert report.workspace_id == workspace_id
    openai, anthropic = report.rows
    assert (openai.provider, openai.period_start.ToDatetime(tzinfo=UTC)) == (OPENAI, day)
    assert openai.responses == 4
    assert openai.mention_rate == pytest.approx(0.5)
    assert openai.average_rank == pytest.approx(2.0)
    assert openai.brand_citation_share == pytest.approx(2 / 8)
    assert [(c.name, c.mentions) for c in openai.competitors] == [("Rival", 3)]
    assert openai.competitors[0].brand_share_of_voice == pytest.approx(2 / 5)
    assert (anthropic.provider, anthropic.responses, anthropic.average_rank) == (ANTHROPIC, 1, 2.0)
    assert anthropic.competitors[0].brand_share_of_voice == pytest.approx(1.0)


async def test_visibility_report_validation(
    collection: SimpleNamespace, owner: Caller, workspace_id: str
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"end_time": stamp(start), "granularity": pb.GRANULARITY_DAY}, "start_time"),
        ({"start_time": stamp(start), "granularity": pb.GRANULARITY_DAY}, "end_time"),
        (
            {
                "start_time": stamp(start),
                "end_time": stamp(start - timedelta(days=1)),
                "granularity": pb.GRANULARITY_DAY,
            },
            "end_time",
        ),
        (
            {
                "start_time": stamp(start),
                "end_time": stamp(start + timedelta(days=367)),
                "granularity": pb.GRANULARITY_WEEK,
            },
            "end_time",
        ),
        ({"start_time": stamp(start), "end_time": stamp(start + timedelta(days=1))}, "granularity"),
    ]
    for fields, field in cases:
        failure = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            collection.runs.GetVisibilityReport(
                pb.GetVisibilityReportRequest(workspace_id=workspace_id, **fields),
                metadata=owner.metadata,
            ),
        )
        assert [v.field for v in failure.details["BadRequest"].field_violations] == [field]
    empty = await collection.runs.GetVisibilityReport(
        pb.GetVisibilityReportRequest(
            workspace_id=workspace_id,
            start_time=stamp(start),
            end_time=stamp(start + timedelta(days=366)),
            granularity=pb.GRANULARITY_DAY,
        ),
        metadata=owner.metadata,
    )
    assert list(empty.rows) == []

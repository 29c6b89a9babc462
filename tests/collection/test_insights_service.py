"""InsightsService through a real server, on answers the worker collected from the fake
providers (their citations and lists are known): a brand on a `co.uk` domain, a competitor
on a subdomain, sources won and lost, cited URLs paged, visibility per prompt (a deleted
prompt under its text), and competitor suggestions accepted and dismissed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from beacon.v1 import insights_service_pb2 as pb
from beacon.v1 import prompt_service_pb2 as prompt_pb
from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import utcnow
from service.config import Settings
from tests.support import expect_error, unique
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.builders import all_pages
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import wait_for_end
from tests.support.running import pipeline

fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
collection_db = fixtures.collection_db

BEST = "insights: best crm for a startup"
CHEAP = "insights: cheapest crm"
BEST_ANSWER = (
    "Here are the best options:\n1. **Acme** - made in the UK\n2. **Initech** - solid\n"
    "3. Globex: popular\n"
)
CHEAP_ANSWER = "| Tool | Price |\n|---|---|\n| Hooli | $1 |\n| Globex | $5 |\n"
BEST_CITES = [
    ("https://www.acme.co.uk/pricing", "Acme pricing"),
    ("https://blog.acme.co.uk/why", "Acme blog"),
    ("https://shop.globex.com/crm", "Globex shop"),
    ("https://news.example.org/review", "Review"),
]
CHEAP_CITES = [
    ("https://news.example.org/review", "Review"),
    ("https://news.example.org/prices", "Prices"),
]
OPENAI, ANTHROPIC = ws_pb.PROVIDER_OPENAI, ws_pb.PROVIDER_ANTHROPIC


def stamp(value: Any) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


async def test_sources_prompts_and_suggestions_follow_the_collected_answers(
    backend: str,
    settings: Settings,
    app: App,
    stubs: SimpleNamespace,
    collection: SimpleNamespace,
    new_user: NewUser,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    user = await new_user()
    md = user.metadata
    created = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(
            name="Acme",
            domain="acme.co.uk",
            organization_name=unique("Org "),
            competitors=[ws_pb.Competitor(name="Globex", domain="shop.globex.com")],
        ),
        metadata=md,
    )
    ws = created.workspace.id
    await stubs.workspaces.SetEnabledProviders(
        ws_pb.SetEnabledProvidersRequest(workspace_id=ws, providers=[OPENAI, ANTHROPIC]),
        metadata=md,
    )
    stored = await collection.prompts.StorePrompts(
        prompt_pb.StorePromptsRequest(workspace_id=ws, prompts=[BEST, CHEAP]), metadata=md
    )
    prompt_ids = {p.text: p.id for p in stored.prompts}
    fake_provider.script(BEST, BEST_ANSWER, BEST_CITES)
    fake_provider.script(CHEAP, CHEAP_ANSWER, CHEAP_CITES)
    before = utcnow()
    async with pipeline(backend, "redis", settings, fake_provider, tmp_path, app.db):
        started = await collection.runs.StartRun(
            run_pb.StartRunRequest(workspace_id=ws), metadata=md
        )
        run = await wait_for_end(collection, started.run.id, md)
    assert run.status == run_pb.RUN_STATUS_SUCCEEDED
    start, end = before - timedelta(hours=1), utcnow() + timedelta(hours=1)
    span: dict[str, Any] = {"start_time": stamp(start), "end_time": stamp(end)}

    # Sources: hosts under one registrable domain count as one source, classified.
    report = await collection.insights.GetSourcesReport(
        pb.GetSourcesReportRequest(workspace_id=ws, **span), metadata=md
    )
    overall = report.lists[0]
    assert overall.provider == ws_pb.PROVIDER_UNSPECIFIED and overall.answers == 4
    assert [
        (s.domain, s.source_class, s.competitor, s.citations, s.answers, s.answer_share)
        for s in overall.sources
    ] == [
        ("example.org", pb.SOURCE_CLASS_OTHER, "", 6, 4, 1.0),
        ("acme.co.uk", pb.SOURCE_CLASS_BRAND, "", 4, 2, 0.5),
        ("globex.com", pb.SOURCE_CLASS_COMPETITOR, "Globex", 2, 2, 0.5),
    ]
    assert [(x.provider, x.answers, len(x.sources)) for x in report.lists[1:]] == [
        (OPENAI, 2, 3),
        (ANTHROPIC, 2, 3),
    ]
    assert sorted(s.domain for s in report.new_sources) == [
        "acme.co.uk",
        "example.org",
        "globex.com",
    ]
    assert list(report.lost_sources) == []
    by_answers = await collection.insights.GetSourcesReport(
        pb.GetSourcesReportRequest(
            workspace_id=ws, order=pb.SOURCE_ORDER_ANSWERS, max_sources=1, **span
        ),
        metadata=md,
    )
    assert [s.domain for s in by_answers.lists[0].sources] == ["example.org"]
    # The next range lost them all.
    later = await collection.insights.GetSourcesReport(
        pb.GetSourcesReportRequest(
            workspace_id=ws,
            start_time=stamp(end),
            end_time=stamp(end + (end - start)),
        ),
        metadata=md,
    )
    assert later.lists[0].answers == 0 and list(later.lists[0].sources) == []
    assert sorted(s.domain for s in later.lost_sources) == [
        "acme.co.uk",
        "example.org",
        "globex.com",
    ]

    # The URLs of a source, most cited first, paged, with the prompts citing them.
    pages = await all_pages(
        lambda token: collection.insights.ListCitedUrls(
            pb.ListCitedUrlsRequest(
                workspace_id=ws, domain="news.example.org", page_size=1, page_token=token, **span
            ),
            metadata=md,
        ),
        "urls",
    )
    assert [(u.url, u.citations, {p.prompt_id: p.citations for p in u.prompts}) for u in pages] == [
        (
            "https://news.example.org/review",
            4,
            {prompt_ids[BEST]: 2, prompt_ids[CHEAP]: 2},
        ),
        ("https://news.example.org/prices", 2, {prompt_ids[CHEAP]: 2}),
    ]

    # Visibility per prompt; a deleted prompt keeps its text; filters.
    await collection.prompts.DeletePrompt(
        prompt_pb.DeletePromptRequest(prompt_id=prompt_ids[CHEAP]), metadata=md
    )
    by_prompt = await collection.insights.GetPromptReport(
        pb.GetPromptReportRequest(
            workspace_id=ws, granularity=run_pb.GRANULARITY_WEEK, time_zone="Asia/Kolkata", **span
        ),
        metadata=md,
    )
    rows = {(r.prompt_text, r.provider): r for r in by_prompt.rows}
    assert set(rows) == {(BEST, 0), (CHEAP, 0)}
    best, cheap = rows[(BEST, 0)], rows[(CHEAP, 0)]
    assert (best.responses, best.mention_rate, best.average_rank) == (2, 1.0, 1.0)
    assert best.brand_citation_share == 0.5  # 2 of 4 citations per answer
    assert [(c.name, c.mentions, c.brand_share_of_voice) for c in best.competitors] == [
        ("Globex", 2, 0.5)
    ]
    assert (cheap.responses, cheap.mention_rate, cheap.prompt_id) == (2, 0.0, prompt_ids[CHEAP])
    assert [(c.name, c.mentions) for c in cheap.competitors] == [("Globex", 2)]
    one = await collection.insights.GetPromptReport(
        pb.GetPromptReportRequest(
            workspace_id=ws,
            granularity=run_pb.GRANULARITY_DAY,
            prompt_ids=[prompt_ids[BEST]],
            providers=[OPENAI],
            by_provider=True,
            **span,
        ),
        metadata=md,
    )
    assert [(r.prompt_id, r.provider, r.responses) for r in one.rows] == [
        (prompt_ids[BEST], OPENAI, 1)
    ]
    error = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.insights.GetPromptReport(
            pb.GetPromptReportRequest(
                workspace_id=ws,
                granularity=run_pb.GRANULARITY_DAY,
                providers=[ws_pb.Provider.ValueType(99)],
                **span,
            ),
            metadata=md,
        ),
    )
    assert error.details["BadRequest"].field_violations[0].field == "providers[0]"

    # Suggestions: untracked listed names and sources, never the brand's or competitors'.
    async def suggestions() -> dict[str, pb.CompetitorSuggestion]:
        listed = await all_pages(
            lambda token: collection.insights.ListCompetitorSuggestions(
                pb.ListCompetitorSuggestionsRequest(workspace_id=ws, page_size=2, page_token=token),
                metadata=md,
            ),
            "suggestions",
        )
        return {s.label: s for s in listed}

    found = await suggestions()
    assert set(found) == {"Initech", "Hooli", "example.org"}
    initech = found["Initech"]
    assert (initech.kind, initech.answers, list(initech.providers)) == (
        pb.SUGGESTION_KIND_NAME,
        2,
        [ANTHROPIC, OPENAI],
    )
    assert initech.example_response_id.startswith("rsp_")
    assert found["example.org"].kind == pb.SUGGESTION_KIND_DOMAIN
    accepted = await collection.insights.DecideCompetitorSuggestion(
        pb.DecideCompetitorSuggestionRequest(
            workspace_id=ws, suggestion_id=initech.id, decision=pb.SUGGESTION_DECISION_ACCEPT
        ),
        metadata=md,
    )
    assert accepted.label == "Initech"
    await collection.insights.DecideCompetitorSuggestion(
        pb.DecideCompetitorSuggestionRequest(
            workspace_id=ws,
            suggestion_id=found["example.org"].id,
            decision=pb.SUGGESTION_DECISION_DISMISS,
        ),
        metadata=md,
    )
    assert set(await suggestions()) == {"Hooli"}
    workspace = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=ws), metadata=md
    )
    assert [(c.name, c.domain) for c in workspace.competitors] == [
        ("Globex", "shop.globex.com"),
        ("Initech", ""),
    ]
    again = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        collection.insights.DecideCompetitorSuggestion(
            pb.DecideCompetitorSuggestionRequest(
                workspace_id=ws, suggestion_id=initech.id, decision=pb.SUGGESTION_DECISION_DISMISS
            ),
            metadata=md,
        ),
    )
    assert "already" in again.message
    bad = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        collection.insights.DecideCompetitorSuggestion(
            pb.DecideCompetitorSuggestionRequest(
                workspace_id=ws, suggestion_id="sug_x", decision=pb.SUGGESTION_DECISION_ACCEPT
            ),
            metadata=md,
        ),
    )
    assert bad.details["BadRequest"].field_violations[0].field == "suggestion_id"

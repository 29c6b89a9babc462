"""Alert rules on crafted series of runs, ended through the one way a run ends (`end_run`):
each fires once per movement, waits for its minimum sample, and its alert and the run's event
are written in the transaction that ends the run."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select

from service.app import App
from service.clock import new_id, utcnow
from service.db.models import AlertRule, WebhookDelivery
from service.domain.collection.run_lifecycle import RunStatus, end_run
from tests.support.builders import insert_probe, insert_run
from tests.support.webhook_builders import alerts_of, make_endpoint, make_workspace


async def add_rule(app: App, workspace_id: str, kind: str, **fields: object) -> str:
    rule_id = new_id("alr")
    values: dict[str, object] = {"provider": "", "threshold": 0.0, "trailing_runs": 3}
    values.update(fields)
    async with app.db.transaction() as session:
        session.add(
            AlertRule(
                id=rule_id,
                workspace_id=workspace_id,
                kind=kind,
                firing=[],
                create_time=utcnow(),
                **values,
            )
        )
    return rule_id


async def completed_run(
    app: App,
    workspace_id: str,
    answers: int,
    mentions: int,
    *,
    provider: str = "openai",
    rank: int = 1,
    competitors: Sequence[str] = (),
    brand_citations: int = 0,
    status: RunStatus = RunStatus.SUCCEEDED,
) -> str:
    """A run of `answers` answers of which `mentions` mention the brand, ended by end_run."""
    run_id = await insert_run(app, workspace_id, providers=(provider,))
    for n in range(answers):
        mentioned = n < mentions
        await insert_probe(
            app,
            run_id,
            f"prm_{n}",
            provider,
            brand_mentioned=mentioned,
            brand_rank=rank if mentioned else 0,
            competitors=[{"name": name, "rank": 2} for name in competitors],
            brand_citations=brand_citations,
        )
    async with app.db.transaction() as session:
        assert await end_run(session, run_id, status, utcnow())
    return run_id


async def test_a_mention_rate_drop_fires_once_per_movement(app: App) -> None:
    ws = await make_workspace(app)
    await add_rule(app, ws, "mention_rate_drop", threshold=20.0, min_sample=10)
    runs = [await completed_run(app, ws, 10, 8) for _ in range(3)]  # 80 %
    runs.append(await completed_run(app, ws, 10, 2))  # 20 %: fires
    runs.append(await completed_run(app, ws, 10, 2))  # still down: no second alert
    runs.append(await completed_run(app, ws, 10, 8))  # recovered
    runs.append(await completed_run(app, ws, 10, 2))  # a new movement: fires again

    alerts = await alerts_of(app, ws)
    assert [a.run_id for a in alerts] == [runs[3], runs[6]]
    first = alerts[0]
    assert first.subject == "overall"
    assert first.figures["current"] == 20.0 and first.figures["baseline"] == 80.0
    assert first.figures["change"] == -60.0
    assert (first.figures["sample"], first.figures["baseline_sample"]) == (10, 30)


async def test_a_rule_waits_for_its_minimum_sample(app: App) -> None:
    ws = await make_workspace(app)
    await add_rule(app, ws, "mention_rate_drop", threshold=20.0, min_sample=10)
    for _ in range(3):
        await completed_run(app, ws, 10, 8)
    small = await completed_run(app, ws, 5, 0)  # 0 % of 5 answers: too few to judge
    assert await alerts_of(app, ws) == []
    enough = await completed_run(app, ws, 10, 1)
    assert [a.run_id for a in await alerts_of(app, ws)] == [enough]
    assert small != enough


async def test_a_rise_a_worse_rank_and_a_provider_filter(app: App) -> None:
    ws = await make_workspace(app)
    await add_rule(app, ws, "mention_rate_rise", threshold=30.0, min_sample=4, provider="openai")
    await add_rule(app, ws, "average_rank_worsens", threshold=2.0, min_sample=4)
    await add_rule(app, ws, "mention_rate_rise", threshold=30.0, min_sample=4, provider="google")
    for _ in range(3):
        await completed_run(app, ws, 4, 1, rank=1)
    run = await completed_run(app, ws, 4, 4, rank=4)
    kinds = sorted((a.kind, a.subject) for a in await alerts_of(app, ws))
    assert kinds == [("average_rank_worsens", "overall"), ("mention_rate_rise", "openai")]
    assert all(a.run_id == run for a in await alerts_of(app, ws))


async def test_a_new_competitor_and_an_uncited_domain(app: App) -> None:
    ws = await make_workspace(app)
    await add_rule(app, ws, "competitor_appears", min_sample=2)
    await add_rule(app, ws, "domain_uncited", min_sample=2)
    for _ in range(3):
        await completed_run(app, ws, 2, 1, competitors=["Globex"], brand_citations=1)
    run = await completed_run(app, ws, 2, 1, competitors=["Globex", "Initech"])
    again = await completed_run(app, ws, 2, 1, competitors=["Globex", "Initech"])
    alerts = await alerts_of(app, ws)
    assert sorted((a.kind, a.subject, a.run_id) for a in alerts) == [
        ("competitor_appears", "Initech", run),
        ("domain_uncited", "openai", run),
    ]
    assert again != run


async def test_the_run_event_and_the_alert_leave_with_the_run_end(app: App) -> None:
    ws = await make_workspace(app)
    endpoint_id, _ = await make_endpoint(app, ws, "https://hooks.example.com/beacon")
    await add_rule(app, ws, "mention_rate_drop", threshold=20.0, min_sample=2, trailing_runs=1)
    await completed_run(app, ws, 2, 2)
    run = await completed_run(app, ws, 4, 1, status=RunStatus.PARTIAL)
    failed = await completed_run(app, ws, 0, 0, status=RunStatus.FAILED)
    async with app.db.transaction(write=False) as session:
        rows = (
            await session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.create_time, WebhookDelivery.event_type)
            )
        ).all()
    bodies = [json.loads(row.body) for row in rows]
    assert [b["type"] for b in bodies] == [
        "run.completed",
        "alert.triggered",
        "run.completed",
        "run.failed",
    ]
    completed = bodies[2]["data"]
    assert completed["run_id"] == run and completed["status"] == "partial"
    assert completed["counts"]["succeeded"] == 4
    assert completed["providers"]["openai"]["mention_rate"] == 25.0
    assert bodies[1]["data"]["run_id"] == run
    assert bodies[1]["data"]["figures"]["current"] == 25.0
    assert bodies[3]["data"]["run_id"] == failed
    assert all(row.status == "pending" for row in rows)

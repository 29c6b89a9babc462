"""A tenant's answers cannot stall the worker for other tenants, and an answer that cannot be
analysed within the limits is stored as such.

A tenant chooses the answers its prompts get ("reply with 3. and 40,000 digits"). Analysing
such an answer once took time quadratic in its length, on the worker's event loop: another
tenant's run went from 0.44 s to 26 s. These tests run a real worker against the fake
providers and measure the bystander's run, alone and while the attacker's answers are
analysed.
"""

from __future__ import annotations

import asyncio
import time

import dramatiq

from service.db.database import Database
from service.db.models import Run
from service.outbox import dispatch_pending_runs
from tests.support import pipeline as fixtures
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import (
    StartWorker,
    drained,
    insert_run,
    load_probes,
    load_run,
    make_workspace,
)
from workers.analysis import MAX_ANSWER_CHARS

collection_db = fixtures.collection_db
fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
worker_settings = fixtures.worker_settings
start_worker = fixtures.start_worker

# Before analysis was linear, each of these answers took 10 s to analyse, blocking the worker.
ATTACK = {
    "reply with 3. and forty thousand digits": "3." + "1" * 40_000,
    "the same, then an at sign": "3." + "1" * 40_000 + "@",
}
BYSTANDER_PROMPT = "best crm for startups"
# How much slower the bystander's run may be while the attacker's answers are analysed: a
# generous bound (the attack once made it 60 times slower) over a noisy shared machine.
MAX_SLOWDOWN = 10.0
# Runs this short are mostly scheduling noise: shorter ones count as this long.
SHORT_RUN_SECONDS = 0.25
RUN_END_TIMEOUT = 120.0


async def ended(db: Database, run_id: str) -> Run:
    """The run once it has ended (polled; at most `RUN_END_TIMEOUT` seconds)."""
    deadline = time.monotonic() + RUN_END_TIMEOUT
    while True:
        run = await load_run(db, run_id)
        if run.end_time is not None:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        await asyncio.sleep(0.02)


def seconds(run: Run) -> float:
    """From the run's creation to its end, as the worker recorded it."""
    assert run.end_time is not None
    return (run.end_time - run.create_time).total_seconds()


async def bystander_run(
    db: Database, broker: dramatiq.Broker, workspace_id: str, attack: str = ""
) -> float:
    """Seconds the bystander's run takes, started just after the run ``attack`` (when given)."""
    bystander = await insert_run(db, workspace_id)
    await dispatch_pending_runs(db, broker, run_ids=[attack, bystander] if attack else [bystander])
    return seconds(await ended(db, bystander))


async def test_an_answer_built_to_be_slow_to_analyse_does_not_stall_another_tenant(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    for prompt, answer in ATTACK.items():
        fake_provider.script(prompt, answer)
    attacker = await make_workspace(collection_db, prompts=tuple(ATTACK), name="Mallory")
    bystander = await make_workspace(collection_db, prompts=(BYSTANDER_PROMPT,))
    worker = start_worker()
    await bystander_run(collection_db, worker.broker, bystander)  # warm up: connections, caches

    alone = await bystander_run(collection_db, worker.broker, bystander)
    attack = await insert_run(collection_db, attacker)
    attacked = await bystander_run(collection_db, worker.broker, bystander, attack)
    await drained(worker)

    assert attacked <= MAX_SLOWDOWN * max(alone, SHORT_RUN_SECONDS), (
        f"the bystander's run took {attacked:.2f} s beside the attack, {alone:.2f} s alone"
    )
    # The attacker's answers were analysed all the same.
    assert (await load_run(collection_db, attack)).status == "succeeded"
    probes = await load_probes(collection_db, attack)
    assert [(p.status, p.text == ATTACK[p.prompt_text]) for p in probes] == [
        ("succeeded", True)
    ] * 4


async def test_an_answer_too_long_to_analyse_is_stored_failed_with_the_reason(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    too_long = "Acme " * (MAX_ANSWER_CHARS // 5) + "!"
    fake_provider.script("say acme a lot", too_long, [("https://acme.com/", "Acme")])
    workspace = await make_workspace(
        collection_db, prompts=("say acme a lot", BYSTANDER_PROMPT), providers=("openai",)
    )
    worker = start_worker()
    run_id = await insert_run(collection_db, workspace)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    run = await load_run(collection_db, run_id)
    assert run.status == "partial"
    answered, failed = await load_probes(collection_db, run_id)  # by prompt
    assert (failed.prompt_text, failed.status) == ("say acme a lot", "failed")
    assert failed.error == (
        f"answer not analysed: answer too long to analyse ({len(too_long):,} characters; "
        f"at most {MAX_ANSWER_CHARS:,})"
    )
    # What the provider said is kept; nothing is claimed about it.
    assert failed.text == too_long
    assert failed.citations == [
        {"url": "https://acme.com/", "title": "Acme", "domain": "acme.com", "brand": True}
    ]
    assert (failed.brand_mentioned, failed.brand_rank, failed.competitors) == (False, 0, [])
    assert failed.model and failed.attempts == 1
    assert answered.status == "succeeded"


async def test_an_answer_over_the_analysis_time_limit_is_stored_failed_with_the_reason(
    collection_db: Database, fake_provider: FakeProviderServer, start_worker: StartWorker
) -> None:
    # Hundreds of thousands of hosts: far more than a millisecond of CPU to analyse.
    slow = "acme.com, " * (MAX_ANSWER_CHARS // 10)
    fake_provider.script("list acme a lot", slow)
    workspace = await make_workspace(collection_db, prompts=("list acme a lot",))
    worker = start_worker(analysis_time_limit_seconds=0.001)
    run_id = await insert_run(collection_db, workspace)

    await dispatch_pending_runs(collection_db, worker.broker, run_ids=[run_id])
    await drained(worker)

    run = await load_run(collection_db, run_id)
    assert run.status == "failed"
    probes = await load_probes(collection_db, run_id)
    assert [(p.status, p.error, p.text == slow) for p in probes] == [
        ("failed", "answer not analysed: answer analysis exceeded its time limit (0.001 s)", True)
    ] * 2

"""Tenants with rows in every table a read can show, and the strings that identify them
(no tests here).

`populate` gives a `World` answers (probes), audit events, invitations, a schedule and more
prompts, through the API where the API makes them. `identifying_strings` lists every string
stored in a tenant's rows (ids, names, emails, prompt texts, answers, codes...), so a check
can show that none of them reaches another tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from service.app import App
from tests.support.builders import insert_probe
from tests.support.security.access_matrix import TABLE
from tests.support.security.calls import invoke, methods_by_path
from tests.support.security.snapshots import snapshots
from tests.support.security.world import World

# Calls that leave a tenant's mark in the tables that reads show (each audited, too).
POPULATING = [
    "/beacon.v1.WorkspaceService/UpdateWorkspace",
    "/beacon.v1.MembershipService/AddMember",
    "/beacon.v1.MembershipService/InviteOrganizationMember",
    "/beacon.v1.ScheduleService/SetSchedule",
    "/beacon.v1.PromptService/AddPrompts",
]
# Shorter strings are too common to identify anyone ("owner", "openai", "UTC").
MIN_LENGTH = 8


async def populate(app: App, channel: grpc.aio.Channel, world: World) -> None:
    """Answers of two providers on the world's ended run, and the POPULATING calls made by
    the world's caller (who must be allowed them)."""
    marker = uuid.uuid4().hex
    # Cited under a source named after the workspace (the access matrix asks for its URLs),
    # and listing a name of its own (a competitor suggestion).
    host = f"{world.workspace_id.replace('_', '-')}.example"
    for provider in ("openai", "anthropic"):
        await insert_probe(
            app,
            world.ended_run_id,
            world.prompt_id,
            provider,
            prompt_text=f"prompt {marker}",
            text=f"Answer {provider} {marker}: ask https://{marker}.example/\n1. **N{marker}**",
            model=f"model-{marker}",
            citations=[
                {"url": f"https://{host}/{marker}", "title": marker, "domain": host, "brand": False}
            ],
        )
    for path in POPULATING:
        outcome = await invoke(
            channel, methods_by_path()[path], TABLE[path].request(world), world.metadata
        )
        assert outcome.code == grpc.StatusCode.OK, f"{path}: {outcome.describe()}"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


async def identifying_strings(app: App, *worlds: World) -> list[set[str]]:
    """Per world, every string of its tenant's rows that is long enough to identify it."""
    found = []
    for snap in await snapshots(app, *worlds):
        found.append(
            {
                text
                for rows in snap.rows.values()
                for row in rows
                for text in _strings(row)
                if len(text) >= MIN_LENGTH
            }
        )
    return found


def as_text(messages: list[Message]) -> str:
    """Responses as readable text (every string field as it was sent)."""
    return "\n".join(text_format.MessageToString(m, as_utf8=True) for m in messages)

"""A taken slug gets a suffix that reveals nothing: repeated collisions give suffixes that
neither count (`-000002`, `-000003`) nor step from one another (`-k3x9q0`, `-k3x9q1`), so a
caller cannot tell how many others chose the name, nor guess the next one.

The shape (`-` and six lowercase letters or digits) is checked elsewhere; a counter has that
shape too. Random draws from 36 characters differ almost everywhere and spread over the
alphabet: two of six characters differing in fewer than two places has a chance of about
1e-7, and seven of them using fewer than 12 distinct characters far less.
"""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace
from typing import Any

from beacon.v1 import workspace_service_pb2 as ws_pb
from tests.support import unique
from tests.support.builders import new_organization, new_workspace

SUFFIXED = re.compile(r"-([a-z0-9]{6})")
COLLISIONS = 7


def suffixes_of(base: str, slugs: list[str]) -> list[str]:
    """The suffixes of the slugs other than `base` itself (each must be `base-xxxxxx`)."""
    suffixes = []
    for slug in slugs:
        if slug == base:
            continue
        assert slug.startswith(base), slugs
        match = SUFFIXED.fullmatch(slug.removeprefix(base))
        assert match, slugs
        suffixes.append(match.group(1))
    return suffixes


def assert_unpredictable(suffixes: list[str]) -> None:
    assert len(suffixes) == COLLISIONS and len(set(suffixes)) == COLLISIONS, suffixes
    for first, second in itertools.combinations(suffixes, 2):
        differing = sum(a != b for a, b in zip(first, second, strict=True))
        assert differing >= 2, f"{first} and {second} step from one to the other: {suffixes}"
    assert len(set("".join(suffixes))) >= 12, f"suffixes from a narrow alphabet: {suffixes}"


async def test_repeated_workspace_name_collisions_get_unpredictable_suffixes(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    org = await new_organization(stubs, owner)
    name = unique("Same Team ")
    slugs = [
        (await new_workspace(stubs, owner, name=name, organization_id=org.id)).workspace.slug
        for _ in range(COLLISIONS + 1)
    ]
    assert_unpredictable(suffixes_of(name.lower().replace(" ", "-"), slugs))


async def test_repeated_organization_name_collisions_get_unpredictable_suffixes(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    name = unique("Same Org ")
    slugs = [
        (await new_organization(stubs, await new_user(), name)).slug for _ in range(COLLISIONS + 1)
    ]
    assert_unpredictable(suffixes_of(name.lower().replace(" ", "-"), slugs))


async def test_workspaces_restored_onto_a_taken_slug_get_unpredictable_suffixes(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    org = await new_organization(stubs, owner)
    slug = unique("taken-")
    deleted = []
    for _ in range(COLLISIONS):
        made = await new_workspace(stubs, owner, slug=slug, organization_id=org.id)
        await stubs.workspaces.DeleteWorkspace(
            ws_pb.DeleteWorkspaceRequest(workspace_id=made.workspace.id), metadata=owner.metadata
        )
        deleted.append(made.workspace.id)
    await new_workspace(stubs, owner, slug=slug, organization_id=org.id)
    restored = [
        (
            await stubs.workspaces.UndeleteWorkspace(
                ws_pb.UndeleteWorkspaceRequest(workspace_id=workspace_id),
                metadata=owner.metadata,
            )
        ).slug
        for workspace_id in deleted
    ]
    assert_unpredictable(suffixes_of(slug, restored))

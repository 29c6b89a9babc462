"""A database error is logged without the values bound to its statement: they are people's
emails and names, which the logs never hold."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy import text

from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.auth.tokens import mint_dev_token
from service.config import Settings
from service.logs import JsonFormatter
from tests.platform.assertions import expect_refusal

# Only users whose email starts so are refused by the trigger: other tests sharing the
# database never meet it.
DOOMED = "dberror-"
POSTGRES_TRIGGER = [
    f"""CREATE FUNCTION refuse_doomed_users() RETURNS trigger AS $$
    BEGIN
        IF NEW.email LIKE '{DOOMED}%' THEN
            -- A message quoting the value, as PostgreSQL's own often do.
            RAISE EXCEPTION 'the test refuses %', NEW.email
                USING DETAIL = 'Key (email)=(' || NEW.email || ')';
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER refuse_doomed_users BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION refuse_doomed_users()""",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS refuse_doomed_users ON users",
    "DROP FUNCTION IF EXISTS refuse_doomed_users()",
]
# SQLite's RAISE() is a constraint error (retried as a race); an oversized blob is a
# DataError, which nothing translates: the call fails INTERNAL and is logged.
SQLITE_TRIGGER = [
    f"""CREATE TRIGGER refuse_doomed_users BEFORE INSERT ON users
    WHEN NEW.email LIKE '{DOOMED}%'
    BEGIN SELECT zeroblob(2000000000); END"""
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS refuse_doomed_users"]


@pytest.fixture
async def doomed_users(app: App) -> AsyncIterator[None]:
    """Inserting a user whose email starts with DOOMED fails in the database."""
    create, drop = (
        (SQLITE_TRIGGER, SQLITE_DROP)
        if app.db.is_sqlite
        else (
            POSTGRES_TRIGGER,
            POSTGRES_DROP,
        )
    )
    async with app.db.transaction() as session:
        for statement in create:
            await session.execute(text(statement))
    try:
        yield
    finally:
        async with app.db.transaction() as session:
            for statement in drop:
                await session.execute(text(statement))


async def test_a_database_error_is_logged_without_its_parameters(
    doomed_users: None,
    stubs: SimpleNamespace,
    settings: Settings,
    app: App,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    email = f"{DOOMED}{uuid.uuid4().hex[:12]}@example.com"
    name = f"Private Person {uuid.uuid4().hex[:8]}"
    token = mint_dev_token(settings, email=email, name=name)
    await expect_refusal(
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        stubs.organizations.ListMyOrganizations(
            org_pb.ListMyOrganizationsRequest(), metadata=(("authorization", f"Bearer {token}"),)
        ),
    )
    [logged] = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "beacon.errors"
    ]
    # What an operator needs is there: the statement, the error's code, where it was raised.
    assert logged["statement"].startswith("INSERT INTO users")
    assert logged["error_code"] == ("SQLITE_TOOBIG" if app.db.is_sqlite else "P0001")
    assert "ensure_user" in logged["frames"]
    for line in map(JsonFormatter().format, caplog.records):
        assert email not in line and name not in line
        assert email.split("@")[0] not in line

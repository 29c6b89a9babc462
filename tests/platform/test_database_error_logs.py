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
from sqlalchemy.exc import DBAPIError

from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.auth.identity import ensure_user
from service.auth.tokens import Claims, mint_dev_token
from service.config import Settings
from service.logs import JsonFormatter
from tests.support.assertions import expect_refusal

# Only users whose email starts so are refused by the trigger: other tests sharing the
# database never meet it.
DOOMED = "dberror-"


def trigger_statements(sqlite: bool, name: str) -> tuple[list[str], list[str]]:
    """The statements that make inserting a DOOMED user fail, and those that undo them."""
    if sqlite:
        # SQLite's RAISE() is a constraint error (retried as a race); an oversized blob is
        # a DataError, which nothing translates: the call fails INTERNAL and is logged.
        return [
            f"""CREATE TRIGGER {name} BEFORE INSERT ON users
            WHEN NEW.email LIKE '{DOOMED}%'
            BEGIN SELECT zeroblob(2000000000); END"""
        ], [f"DROP TRIGGER IF EXISTS {name}"]
    return [
        f"""CREATE FUNCTION {name}() RETURNS trigger AS $$
        BEGIN
            IF NEW.email LIKE '{DOOMED}%' THEN
                -- A message quoting the value, as PostgreSQL's own often do.
                RAISE EXCEPTION 'the test refuses %', NEW.email
                    USING DETAIL = 'Key (email)=(' || NEW.email || ')';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        f"""CREATE TRIGGER {name} BEFORE INSERT ON users
        FOR EACH ROW EXECUTE FUNCTION {name}()""",
    ], [f"DROP TRIGGER IF EXISTS {name} ON users", f"DROP FUNCTION IF EXISTS {name}()"]


@pytest.fixture
async def doomed_users(app: App) -> AsyncIterator[None]:
    """Inserting a user whose email starts with DOOMED fails in the database."""
    create, drop = trigger_statements(app.db.is_sqlite, f"refuse_doomed_{uuid.uuid4().hex[:8]}")
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
    for line in map(JsonFormatter().format, caplog.records):
        assert email not in line and name not in line
        assert email.split("@")[0] not in line
    [logged] = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "beacon.errors"
    ]
    # What an operator needs is there: the statement, the error's code, where it was raised.
    assert logged["statement"].startswith("INSERT INTO users")
    assert logged["error_code"] == ("SQLITE_TOOBIG" if app.db.is_sqlite else "P0001")
    assert "ensure_user" in logged["frames"]


async def test_the_servers_database_errors_never_show_bound_values(
    doomed_users: None, settings: Settings, app: App
) -> None:
    """Whatever else logs a database error (workers, the ticker, a library) prints the
    exception: the server's engine keeps the values out of it."""
    email = f"{DOOMED}{uuid.uuid4().hex[:12]}@example.com"
    claims = Claims(
        issuer=settings.auth_dev_issuer,
        subject=f"dev|{email}",
        email=email,
        email_verified=True,
        name="Private Person",
    )
    with pytest.raises(DBAPIError) as raised:
        await ensure_user(app.db, claims)
    shown = str(raised.value)
    assert "INSERT INTO users" in shown and "parameters hidden" in shown
    assert email.split("@")[0] not in shown.replace(str(raised.value.orig), "")


async def test_an_http_request_meeting_the_database_down_is_503_not_500() -> None:
    """The soak's PostgreSQL restart caught uploads checking their URL: 500 then, 503 with
    Retry-After now (like gRPC's UNAVAILABLE)."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from sqlalchemy.exc import DBAPIError

    from service.http.server import database_unavailable

    async def down(_request: web.Request) -> web.StreamResponse:
        raise DBAPIError("SELECT 1", None, ConnectionRefusedError(111, "refused"))

    response = await database_unavailable(make_mocked_request("POST", "/uploads/f"), down)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"

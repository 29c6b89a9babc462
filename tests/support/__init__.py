"""What the tests share; no module here is a test, and no test module is imported by another.

    tests/support/__init__.py   URLs of the shared services, unique names, RPC error helpers
    app.py                      the app under test: settings, databases, users, stubs
    builders.py                 the one set of builders (rows, API calls, inputs)
    processes.py                real processes (`beacon`, redis, rabbitmq) and `eventually`
    pipeline.py                 ticker/worker fixtures, in-process broker and worker
    fleet.py                    the fault suites' fleet of processes
    brokers.py                  RabbitMQ availability and private vhosts
    fakes/                      the fake AI providers (the provider stand-in)
    probes.py, assertions.py    the platform suites' probe servers and refusal checks
    hostile_images.py           decompression bombs and broken images
    report_oracle.py            reports counted from every answer: what the rollups must equal
    security/                   the access matrix (TABLE), worlds, calls, snapshots, hostile input

Test modules live beside it in tests/<area>/ and hold only test_*.py and conftest.py; bench/
imports from tests only this package.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.domain.actor import Actor

DETAIL_TYPES = {
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "BadRequest": error_details_pb2.BadRequest,
    "RetryInfo": error_details_pb2.RetryInfo,
    "QuotaFailure": error_details_pb2.QuotaFailure,
    "PreconditionFailure": error_details_pb2.PreconditionFailure,
}

PG_ADMIN_URL = os.environ.get(
    "BEACON_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BEACON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        address = (parts.hostname or "127.0.0.1", parts.port or default_port)
        with socket.create_connection(address, 1):
            return True
    except OSError:
        return False


def postgres_missing() -> list[str]:
    """What keeps the PostgreSQL + Redis backend from running (empty: nothing)."""
    missing = []
    if not reachable(PG_ADMIN_URL, 5432):
        missing.append(f"PostgreSQL is not reachable at {redact(PG_ADMIN_URL)}")
    if not reachable(REDIS_URL, 6379):
        missing.append(f"Redis is not reachable at {redact(REDIS_URL)}")
    return missing


def postgres_available() -> bool:
    return not postgres_missing()


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def actor_of(user_id: str, action: str) -> Actor:
    """The user as the caller of a domain command serving the RPC `action` (its full name)."""
    return Actor(
        actor_id=user_id,
        user_id=user_id,
        service_key_id=None,
        request_id=unique("req-"),
        action=action,
    )


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@dataclass
class RpcFailure:
    """A failed call's code, message and rich-status details by type name."""

    code: grpc.StatusCode
    message: str
    details: dict[str, Any]
    trailers: dict[str, str]


def failure(error: grpc.aio.AioRpcError) -> RpcFailure:
    """Decodes a grpc error's google.rpc.Status details."""
    details: dict[str, Any] = {}
    trailers = {k: v for k, v in (error.trailing_metadata() or ())}
    status: status_pb2.Status | None = rpc_status.from_call(error)
    if status is not None:
        for item in status.details:
            for name, cls in DETAIL_TYPES.items():
                if item.Is(cls.DESCRIPTOR):
                    message = cls()
                    item.Unpack(message)
                    details[name] = message
    return RpcFailure(error.code(), error.details() or "", details, trailers)


async def expect_error(code: grpc.StatusCode, awaitable: Any) -> RpcFailure:
    """Awaits a call that must fail with `code`; returns the decoded failure."""
    try:
        await awaitable
    except grpc.aio.AioRpcError as error:
        got = failure(error)
        assert got.code == code, f"expected {code}, got {got.code}: {got.message}"
        return got
    raise AssertionError(f"expected {code}, the call succeeded")

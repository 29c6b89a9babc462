"""RabbitMQ for the tests: the server of BEACON_TEST_AMQP_URL, and a virtual host per use.

Each use gets a virtual host of its own (created and deleted through the management API when
it answers, otherwise with `rabbitmqctl`), so tests never see each other's queues nor touch
anything else on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from tests.support import REDIS_URL, reachable
from tests.support.processes import delete_namespace

AMQP_URL = os.environ.get("BEACON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_PORT = 15672


def rabbitmq_available() -> bool:
    return reachable(AMQP_URL, 5672)


def with_vhost(url: str, vhost: str) -> str:
    """`url` on virtual host `vhost` (the URL's path, percent-encoded)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


@contextlib.asynccontextmanager
async def temporary_vhost(prefix: str = "beacon-test") -> AsyncIterator[str]:
    """The test server's URL on a new virtual host, deleted with its queues afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = _ManagementApi() if reachable(_management_url(), MANAGEMENT_PORT) else _Rabbitmqctl()
    await admin.add(vhost)
    try:
        yield with_vhost(AMQP_URL, vhost)
    finally:
        await admin.delete(vhost)


def _credentials() -> tuple[str, str]:
    parts = urlsplit(AMQP_URL)
    return unquote(parts.username or "guest"), unquote(parts.password or "guest")


def _management_url() -> str:
    return f"http://{urlsplit(AMQP_URL).hostname or '127.0.0.1'}:{MANAGEMENT_PORT}"


class _ManagementApi:
    async def add(self, vhost: str) -> None:
        user, _ = _credentials()
        async with self._client() as client:
            (await client.put(f"/api/vhosts/{quote(vhost, safe='')}")).raise_for_status()
            permissions = {"configure": ".*", "write": ".*", "read": ".*"}
            path = f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}"
            (await client.put(path, json=permissions)).raise_for_status()

    async def delete(self, vhost: str) -> None:
        async with self._client() as client:
            (await client.delete(f"/api/vhosts/{quote(vhost, safe='')}")).raise_for_status()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=_management_url(), auth=_credentials(), timeout=10)


class _Rabbitmqctl:
    async def add(self, vhost: str) -> None:
        await self._run("add_vhost", vhost)
        await self._run("set_permissions", "-p", vhost, _credentials()[0], ".*", ".*", ".*")

    async def delete(self, vhost: str) -> None:
        await self._run("delete_vhost", vhost)

    async def _run(self, *args: str) -> None:
        binary = shutil.which("rabbitmqctl")
        if binary is None:
            raise AssertionError(
                "RabbitMQ answers but neither its management API nor rabbitmqctl is available "
                "to create a virtual host for the tests"
            )
        process = await asyncio.create_subprocess_exec(
            binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise AssertionError(f"rabbitmqctl {args[0]} failed:\n{output.decode()}")


@contextlib.asynccontextmanager
async def broker_url(broker: str, **options: str) -> AsyncIterator[str]:
    """A URL of `broker` on a namespace (Redis) or virtual host (RabbitMQ) of its own, with
    `options` in its query; the namespace or virtual host is deleted afterwards."""
    query = "".join(f"&{name}={value}" for name, value in options.items())
    if broker == "rabbitmq":
        async with temporary_vhost("beacon-e2e") as url:
            yield f"{url}?{query[1:]}" if query else url
        return
    namespace = f"beacon-e2e-{uuid.uuid4().hex[:10]}"
    try:
        yield f"{REDIS_URL}?namespace={namespace}{query}"
    finally:
        await delete_namespace(namespace)

"""Server-side request forgery: what a delivery refuses to reach, one test per case.

Deliveries are attempted by the workers' own code (`workers.webhooks.post`) against a real
HTTP receiver on 127.0.0.1; a refused address is never connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.config import Settings
from service.domain.errors import InvalidArgument
from service.domain.notifications.secrets import new_secret
from service.domain.notifications.targets import parse_endpoint_url
from tests.support.receiver import Receiver, running_receiver
from workers.webhooks import Request, _read_capped, build_client, post

REFUSED = {
    "127.0.0.1": "loopback",
    "127.10.0.1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "224.0.0.1": "multicast",
    "0.0.0.0": "unspecified",
    "100.64.0.1": "non-public",
    "[::1]": "loopback",
    "[fe80::1]": "link-local",
    "[fc00::1]": "private",
    "[ff02::1]": "multicast",
    "[::ffff:127.0.0.1]": "loopback",
    "[::ffff:169.254.169.254]": "link-local",
    "[64:ff9b::a9fe:a9fe]": "link-local",
    "[2002:a9fe:a9fe::]": "link-local",
}


def settings(**over: object) -> Settings:
    values: dict[str, object] = {"webhook_allow_http": True, "webhook_timeout_seconds": 5.0}
    values.update(over)
    return Settings(**values)  # type: ignore[arg-type]


def request(url: str) -> Request:
    return Request(url=url, message_id="msg_test", body='{"type":"ping"}', secrets=[new_secret()])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


@pytest.mark.parametrize("host", list(REFUSED))
async def test_a_non_public_address_is_refused(host: str) -> None:
    strict = settings()
    async with build_client(strict) as client:
        attempt = await post(client, strict, request(f"http://{host}:8080/hook"))
    assert attempt.final and attempt.http_status == 0
    assert REFUSED[host] in attempt.error and "SSRF" in attempt.error


async def test_a_name_resolving_to_loopback_is_refused_and_never_reached(
    receiver: Receiver,
) -> None:
    strict = settings()
    async with build_client(strict) as client:
        attempt = await post(client, strict, request(f"http://localhost:{receiver.port}/x"))
    assert attempt.final and "loopback" in attempt.error
    assert receiver.received == []


async def test_the_operator_may_allow_private_addresses(receiver: Receiver) -> None:
    allowed = settings(webhook_allow_private=True)
    async with build_client(allowed) as client:
        attempt = await post(client, allowed, request(f"http://localhost:{receiver.port}/x"))
    assert attempt.succeeded
    (seen,) = receiver.received
    assert seen.headers["host"] == f"localhost:{receiver.port}"  # the name, not the address


async def test_http_urls_are_refused_outside_dev() -> None:
    strict = settings(webhook_allow_http=False)
    with pytest.raises(InvalidArgument) as refused:
        parse_endpoint_url("http://hooks.example.com/x", allow_http=False)
    assert refused.value.violations[0].field == "url"
    async with build_client(strict) as client:
        attempt = await post(client, strict, request("http://hooks.example.com/x"))
    assert attempt.final and "https" in attempt.error


@pytest.mark.parametrize(
    "url", ["https://user:pw@hooks.example.com/x", "ftp://hooks.example.com/x", "https:///x"]
)
def test_urls_with_credentials_other_schemes_or_no_host_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_endpoint_url(url, allow_http=True)


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    allowed = settings(webhook_allow_private=True)
    receiver.scripts["moved"] = [307]
    async with build_client(allowed) as client:
        attempt = await post(client, allowed, request(receiver.url("moved")))
    assert attempt.http_status == 307 and not attempt.succeeded
    assert "redirects are not followed" in attempt.error
    assert [r.path for r in receiver.received] == ["moved"]


async def test_a_response_body_is_read_up_to_the_cap(receiver: Receiver) -> None:
    allowed = settings(webhook_allow_private=True, webhook_max_response_bytes=4096)
    receiver.scripts["huge"] = [299]  # 8 MiB
    async with build_client(allowed) as client:
        attempt = await post(client, allowed, request(receiver.url("huge")))
        async with client.stream("POST", receiver.url("huge"), content=b"{}") as response:
            read = await _read_capped(response, 4096)
    assert attempt.succeeded
    assert read == 4096


async def test_an_attempt_ends_at_the_time_limit(receiver: Receiver) -> None:
    quick = settings(webhook_allow_private=True, webhook_timeout_seconds=0.5)
    receiver.holding["slow"] = asyncio.Event()
    async with build_client(quick) as client:
        attempt = await post(client, quick, request(receiver.url("slow")))
    assert attempt.http_status == 0 and "no answer within 0.5 s" in attempt.error
    assert not attempt.final  # retried later

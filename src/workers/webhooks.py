"""Webhook attempts: sign, resolve, check every address, POST to the checked one, record.

The ticker claims due deliveries (`service.domain.notifications.deliveries.claim_due`) and
sends them here in batches. For each one the worker:

- loads it while its lease holds, and the endpoint's secrets (decrypted with
  BEACON_WEBHOOK_SECRET_KEY; the previous secret too during a rotation: one signature each);
- resolves the URL's host now, and refuses the attempt when any of its addresses is not a
  public unicast address (`targets.address_refusal`) unless BEACON_WEBHOOK_ALLOW_PRIVATE;
- connects to the address it checked (the URL is rewritten to it; `Host` and the TLS server
  name keep the host name), so a second DNS answer cannot send the request elsewhere;
- follows no redirect, reads at most `webhook_max_response_bytes` of the answer, and gives
  the whole attempt `webhook_timeout_seconds`;
- records the outcome while it still holds the lease (a later claim owns it otherwise).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import dramatiq
import httpx
from standardwebhooks.webhooks import Webhook

from service.broker import send_messages
from service.clock import utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import WebhookEndpoint
from service.domain.errors import FailedPrecondition
from service.domain.notifications import deliveries, digests, endpoints, events
from service.domain.notifications.deliveries import Attempt, refused
from service.domain.notifications.secrets import SecretBox, SecretDecryptionError
from service.domain.notifications.targets import address_refusal, split_target
from service.messages import webhook_messages

log = logging.getLogger(__name__)

USER_AGENT = "Beacon-Webhooks/1"


@dataclass(frozen=True, slots=True)
class Request:
    """One attempt's request, as loaded under the lease."""

    url: str
    message_id: str
    body: str
    secrets: list[str]


def sign(secrets: Sequence[str], message_id: str, moment: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret, space-separated."""
    return " ".join(Webhook(secret).sign(message_id, moment, body) for secret in secrets)


def build_client(settings: Settings) -> httpx.AsyncClient:
    """The client of a batch: no redirects, no proxies from the environment, the timeout."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        headers={"user-agent": USER_AGENT},
    )


async def deliver_batch(
    db: Database, settings: Settings, claims: Sequence[Sequence[str]]
) -> list[str | None]:
    """Makes one attempt of each claimed delivery, concurrently; their statuses after it."""
    rng = random.Random()
    async with build_client(settings) as client:
        return list(
            await asyncio.gather(
                *(
                    deliver_one(db, settings, client, delivery_id, token, rng)
                    for delivery_id, token in claims
                )
            )
        )


async def deliver_one(
    db: Database,
    settings: Settings,
    client: httpx.AsyncClient,
    delivery_id: str,
    token: str,
    rng: random.Random,
) -> str | None:
    """One attempt of one delivery; its status after it (None: the lease was lost)."""
    now = utcnow()
    async with db.transaction(write=False) as session:
        found = await deliveries.claimed(session, delivery_id, token)
        if found is None:
            return None
        delivery, endpoint = found
        prepared = _prepare(
            settings, delivery.event_type, delivery.message_id, delivery.body, endpoint, now
        )
    if isinstance(prepared, Attempt):
        attempt = prepared
    else:
        attempt = await post(client, settings, prepared)
    async with db.transaction() as session:
        status = await deliveries.record_attempt(
            session, delivery_id, token, attempt, settings=settings, now=utcnow(), rng=rng
        )
    log.info(
        "webhook delivery %s: %s (HTTP %d%s)",
        delivery_id,
        status or "lease lost",
        attempt.http_status,
        f", {attempt.error}" if attempt.error else "",
    )
    return status


def _prepare(
    settings: Settings,
    event_type: str,
    message_id: str,
    body: str,
    endpoint: WebhookEndpoint,
    now: datetime,
) -> Request | Attempt:
    if not endpoint.enabled and event_type != events.PING:
        return refused("the endpoint is disabled")
    try:
        box = SecretBox.from_settings(settings)
        secrets = endpoints.signing_secrets(endpoint, box, now)
    except FailedPrecondition:
        return Attempt(0, "BEACON_WEBHOOK_SECRET_KEY is not set on the worker", 0)
    except SecretDecryptionError as error:
        return Attempt(0, f"the signing secret cannot be read: {error}", 0)
    return Request(endpoint.url, message_id, body, secrets)


async def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of `host` (a literal address is its own)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


async def checked_address(
    settings: Settings, host: str, port: int
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | Attempt:
    """The address to connect to, or the refused attempt saying why."""
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError) as error:
        return Attempt(0, f"cannot resolve {host}: {error}", 0)
    if not addresses:
        return Attempt(0, f"{host} has no address", 0)
    if not settings.webhook_allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                return refused(f"{host} resolves to a {reason}; refused (SSRF protection)")
    return addresses[0]


async def post(client: httpx.AsyncClient, settings: Settings, request: Request) -> Attempt:
    """POSTs the signed body to a checked address of the URL's host."""
    parts, host, port = split_target(request.url)
    if parts.scheme != "https" and not (parts.scheme == "http" and settings.webhook_allow_http):
        return refused("only https:// URLs are delivered")
    started = time.monotonic()
    address = await checked_address(settings, host, port)
    if isinstance(address, Attempt):
        return address
    literal = f"[{address}]" if address.version == 6 else str(address)
    target = parts._replace(netloc=f"{literal}:{port}").geturl()
    moment = utcnow()
    headers = {
        "host": parts.netloc.rsplit("@", 1)[-1],
        "content-type": "application/json",
        "webhook-id": request.message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": sign(request.secrets, request.message_id, moment, request.body),
    }
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            async with client.stream(
                "POST",
                target,
                content=request.body.encode(),
                headers=headers,
                extensions=extensions,
            ) as response:
                await _read_capped(response, settings.webhook_max_response_bytes)
                status = response.status_code
    except TimeoutError:
        return Attempt(0, f"no answer within {settings.webhook_timeout_seconds:g} s", _ms(started))
    except httpx.HTTPError as failure:
        return Attempt(0, f"{type(failure).__name__}: {failure}"[:300], _ms(started))
    why = "" if 200 <= status < 300 else f"HTTP {status}"
    if 300 <= status < 400:
        why += " (redirects are not followed)"
    return Attempt(status, why, _ms(started))


async def _read_capped(response: httpx.Response, cap: int) -> int:
    """Reads at most `cap` bytes of the body (the rest is dropped with the connection)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= cap:
            break
    return min(read, cap)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def sweep(db: Database, settings: Settings, broker: dramatiq.Broker, now: datetime) -> int:
    """The ticker's part: sends the due digests' events, then claims due deliveries (up to
    `webhook_batch_size`) and hands them to the workers; how many deliveries were sent."""
    async with db.transaction() as session:
        await digests.send_due_digests(session, now, settings.webhook_batch_size)
    async with db.transaction() as session:
        claims = await deliveries.claim_due(
            session, now, lease=deliveries.lease_for(settings), limit=settings.webhook_batch_size
        )
    await asyncio.to_thread(send_messages, broker, webhook_messages(claims))
    if claims:
        log.info("webhooks: %d deliveries handed to the workers", len(claims))
    return len(claims)

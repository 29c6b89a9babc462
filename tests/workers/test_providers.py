"""Provider adapters against the fake provider server, and odd response shapes via MockTransport."""

from __future__ import annotations

import asyncio
import pickle
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.providers import BY_NAME, NAMES
from tests.support.fakes.dialects import DIALECTS, served_model
from tests.support.fakes.provider_server import FakeProviderServer, Fault, default_config
from workers.providers import Answer, Citation, ProviderConfig, ProviderError, build_adapter
from workers.providers.base import error_message, retry_after_from_headers

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Which CRM do small agencies use?"
TEXT = "Acme is the usual pick for small agencies. HubSpot suits pipeline-heavy teams."
SCRIPTED_CITATIONS = [
    ("https://www.acme.com/crm?utm_source=newsletter&utm_medium=mail", "Acme CRM"),
    ("https://blog.hubspot.com/best-crm?ref=1", "Best CRM | HubSpot"),
    ("https://www.acme.com/crm?utm_source=newsletter&utm_medium=mail", "Acme CRM again"),
]
# Every provider variant the adapters support: (provider, api).
VARIANTS = [(name, "") for name in NAMES] + [("openai", "chat")]
VARIANT_IDS = [f"{name}-{api}" if api else name for name, api in VARIANTS]


@pytest.fixture(scope="session")
async def fake_providers() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer() as server:
        yield server


@pytest.fixture
def fake(fake_providers: FakeProviderServer) -> Iterator[FakeProviderServer]:
    fake_providers.reset()
    yield fake_providers
    fake_providers.reset()


@pytest.fixture(scope="session")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(limits=limits) as client:
        yield client


async def ask(
    fake: FakeProviderServer,
    client: httpx.AsyncClient,
    name: str,
    prompt: str = PROMPT,
    **config: Any,
) -> Answer:
    return await build_adapter(fake.config(name, **config), client).ask(prompt)


async def failure(
    fake: FakeProviderServer, client: httpx.AsyncClient, name: str, **config: Any
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await ask(fake, client, name, **config)
    assert caught.value.provider == name
    return caught.value


# Answers


@pytest.mark.parametrize(("name", "api"), VARIANTS, ids=VARIANT_IDS)
async def test_answer_has_text_model_and_deduplicated_citations(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str, api: str
) -> None:
    fake.script(PROMPT, TEXT, SCRIPTED_CITATIONS)

    answer = await ask(fake, http_client, name, api=api)

    assert answer.text == TEXT
    # Cohere's v2 response does not name the model, so the configured one stands.
    expected_model = BY_NAME[name].model
    assert answer.model == (expected_model if name == "cohere" else served_model(expected_model))
    assert [citation.domain for citation in answer.citations] == ["acme.com", "blog.hubspot.com"]
    if name == "google":  # grounding URLs are Google redirects; the title names the site
        assert all(
            c.url.startswith("https://vertexaisearch.cloud.google.com/") for c in answer.citations
        )
        assert [c.title for c in answer.citations] == ["acme.com", "blog.hubspot.com"]
    else:
        assert answer.citations == (
            Citation("https://www.acme.com/crm", "Acme CRM", "acme.com"),
            Citation(
                "https://blog.hubspot.com/best-crm?ref=1", "Best CRM | HubSpot", "blog.hubspot.com"
            ),
        )
    assert answer.latency_ms >= 0
    assert fake.requests(name, PROMPT) == 1


@pytest.mark.parametrize("name", NAMES)
async def test_unscripted_prompt_is_echoed_with_its_hosts_cited(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    answer = await ask(fake, http_client, name, "Is acme.com better than Monday.com?")

    assert "Is acme.com better than Monday.com?" in answer.text
    assert [citation.domain for citation in answer.citations] == ["acme.com", "monday.com"]


async def test_anthropic_paused_turn_is_resumed(
    fake: FakeProviderServer, http_client: httpx.AsyncClient
) -> None:
    fake.script(PROMPT, TEXT, SCRIPTED_CITATIONS[:1])
    fake.inject("anthropic", Fault("pause_turn"))

    answer = await ask(fake, http_client, "anthropic")

    assert answer.text == TEXT
    assert [citation.domain for citation in answer.citations] == ["acme.com"]
    assert fake.requests("anthropic", PROMPT) == 2


# Errors


@pytest.mark.parametrize("name", NAMES)
async def test_rate_limit_is_retryable_with_the_wait_the_provider_asked_for(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    fake.inject(name, Fault("rate_limit", retry_after=2))

    error = await failure(fake, http_client, name)

    assert error.status == 429
    assert error.retryable
    assert error.retry_after is not None
    if name == "mistral":  # an HTTP date: whole seconds, rounded up by the server
        assert 1 <= error.retry_after <= 3
    else:
        assert error.retry_after == pytest.approx(2.0)
    # The adapter did not retry by itself.
    assert fake.requests(name) == 1


@pytest.mark.parametrize("name", ["openai", "anthropic", "google"])
async def test_spent_quota_is_permanent(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    fake.inject(name, Fault("quota_exhausted", retry_after=30))

    error = await failure(fake, http_client, name)

    assert (error.status, error.retryable, error.retry_after) == (429, False, None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["server_error", "overloaded"])
async def test_server_errors_are_retryable(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str, kind: Any
) -> None:
    fake.inject(name, Fault(kind))

    error = await failure(fake, http_client, name)

    expected = 500 if kind == "server_error" else (529 if name == "anthropic" else 503)
    assert (error.status, error.retryable) == (expected, True)
    assert error.message  # the provider's own wording, not just a status


AUTH_MESSAGES = {
    "openai": (401, "Incorrect API key provided"),
    "anthropic": (401, "invalid x-api-key"),
    "google": (400, "API key not valid"),  # Gemini rejects bad keys with 400 INVALID_ARGUMENT
    "perplexity": (401, "Invalid API key provided"),
    "mistral": (401, "Unauthorized"),
    "cohere": (401, "invalid api token"),
}


@pytest.mark.parametrize("name", NAMES)
async def test_wrong_key_is_permanent_with_the_providers_message(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    error = await failure(fake, http_client, name, api_key="wrong")

    status, message = AUTH_MESSAGES[name]
    assert (error.status, error.retryable, error.retry_after) == (status, False, None)
    assert error.message.startswith(message)


MISSING = {
    "openai": "response.output is missing",
    "anthropic": "response.content is missing",
    "google": "response.candidates is missing",
    "perplexity": "response.choices is missing",
    "mistral": "response.outputs is missing",
    "cohere": "response.message is missing",
}


@pytest.mark.parametrize("name", NAMES)
async def test_malformed_success_is_permanent_and_names_what_is_missing(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    fake.inject(name, Fault("malformed"), Fault("invalid_json"))

    wrong_shape = await failure(fake, http_client, name)
    not_json = await failure(fake, http_client, name)

    assert not wrong_shape.retryable
    assert wrong_shape.message == f"malformed response: {MISSING[name]}"
    assert (not_json.retryable, not_json.message) == (False, "malformed response: body is not JSON")


@pytest.mark.parametrize("name", NAMES)
async def test_timeout_is_retryable(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    fake.inject(name, Fault("hang"))

    error = await failure(fake, http_client, name, timeout=0.2)

    assert (error.status, error.retryable) == (None, True)
    assert error.message.startswith("no response within 0.2s")


async def test_refused_connection_is_retryable(http_client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = default_config("openai", "key", base_url=f"http://127.0.0.1:{port}/v1")

    with pytest.raises(ProviderError) as caught:
        await build_adapter(config, http_client).ask(PROMPT)

    assert caught.value.retryable
    assert caught.value.message.startswith("connection failed")


def test_provider_error_survives_pickling() -> None:
    error = ProviderError("openai", "slow down", status=429, retryable=True, retry_after=1.5)

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.provider, copy.message, copy.status, copy.retryable, copy.retry_after) == (
        "openai",
        "slow down",
        429,
        True,
        1.5,
    )
    assert str(copy) == "openai: slow down (HTTP 429)"


def test_unknown_provider_or_api_is_refused(http_client: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        build_adapter(ProviderConfig("bard", "key", "https://x", "m"), http_client)
    with pytest.raises(ValueError, match="openai api"):
        build_adapter(default_config("openai", "key", api="assistants"), http_client)


# Response shapes the fake server does not produce, through a mock transport


async def ask_mocked(name: str, response: httpx.Response, api: str = "") -> Answer:
    config = default_config(name, "key", api=api)
    transport = httpx.MockTransport(lambda request: response)
    async with httpx.AsyncClient(transport=transport) as client:
        return await build_adapter(config, client).ask(PROMPT)


async def error_mocked(name: str, response: httpx.Response) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await ask_mocked(name, response)
    return caught.value


async def test_perplexity_falls_back_to_legacy_citation_urls() -> None:
    body = {
        "model": "sonar",
        "choices": [{"message": {"role": "assistant", "content": "<think>hm</think>\nAcme[1]."}}],
        "citations": ["https://www.acme.com/?utm_source=perplexity", "https://hubspot.com/"],
    }

    answer = await ask_mocked("perplexity", httpx.Response(200, json=body))

    assert answer.text == "Acme[1]."  # the reasoning preamble is not part of the answer
    assert answer.citations == (
        Citation("https://www.acme.com/", "", "acme.com"),
        Citation("https://hubspot.com/", "", "hubspot.com"),
    )


async def test_mistral_plain_string_content_has_no_citations() -> None:
    body = {"outputs": [{"type": "message.output", "model": "mistral-x", "content": "Acme."}]}

    answer = await ask_mocked("mistral", httpx.Response(200, json=body))

    assert (answer.text, answer.model, answer.citations) == ("Acme.", "mistral-x", ())


async def test_gemini_without_grounding_metadata_has_no_citations() -> None:
    body = {
        "candidates": [
            {"content": {"parts": [{"text": "thinking", "thought": True}, {"text": "Acme."}]}}
        ]
    }

    answer = await ask_mocked("google", httpx.Response(200, json=body))

    # No modelVersion: the configured model stands.
    assert (answer.text, answer.model, answer.citations) == ("Acme.", "gemini-2.5-flash", ())


async def test_gemini_blocked_prompt_is_permanent() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}}

    error = await error_mocked("google", httpx.Response(200, json=body))

    assert (error.message, error.retryable) == ("prompt blocked: SAFETY", False)


async def test_gemini_retry_hint_from_message_and_daily_quota() -> None:
    minute = {"error": {"code": 429, "message": "Quota exceeded. Please retry in 38.5s."}}
    daily = {
        "error": {
            "code": 429,
            "message": "Quota exceeded. Please retry in 3s.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}],
                }
            ],
        }
    }

    per_minute = await error_mocked("google", httpx.Response(429, json=[minute]))
    per_day = await error_mocked("google", httpx.Response(429, json=daily))

    assert (per_minute.retryable, per_minute.retry_after) == (True, 38.5)
    assert (per_day.retryable, per_day.retry_after) == (False, None)


async def test_openai_refusal_is_the_answer_text() -> None:
    body = {
        "model": "gpt-5",
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't."}]}],
    }

    answer = await ask_mocked("openai", httpx.Response(200, json=body))

    assert (answer.text, answer.citations) == ("I can't.", ())


async def test_openai_should_retry_header_overrides_the_status() -> None:
    response = httpx.Response(
        400, json={"error": {"message": "try again"}}, headers={"x-should-retry": "true"}
    )

    error = await error_mocked("openai", response)

    assert (error.status, error.retryable) == (400, True)


async def test_cohere_tool_sources_are_citations() -> None:
    source = {
        "type": "tool",
        "id": "t1",
        "tool_output": {"url": "https://acme.com/a", "title": "A"},
    }
    body = {
        "message": {
            "content": [{"type": "text", "text": "Acme."}],
            "citations": [{"sources": [source, {"type": "document", "document": {"id": "x"}}]}],
        }
    }

    answer = await ask_mocked("cohere", httpx.Response(200, json=body))

    assert answer.citations == (Citation("https://acme.com/a", "A", "acme.com"),)


async def test_non_json_error_page_becomes_the_message() -> None:
    error = await error_mocked("anthropic", httpx.Response(502, text="<html>Bad gateway</html>"))

    assert (error.status, error.retryable, error.message) == (502, True, "<html>Bad gateway</html>")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "m1", "type": "t"}}, "m1"),
        ({"type": "error", "error": {"type": "rate_limit_error", "message": "m2"}}, "m2"),
        ([{"error": {"code": 429, "message": "m3"}}], "m3"),
        ({"object": "error", "message": "m4", "type": "rate_limited"}, "m4"),
        (
            {"detail": [{"loc": ["body", "model"], "msg": "Field required"}]},
            "body.model: Field required",
        ),
        ({"message": "invalid api token"}, "invalid api token"),
        ({"unexpected": 1}, ""),
        ("not an object", ""),
    ],
)
def test_error_message_reads_every_providers_error_shape(body: object, message: str) -> None:
    assert error_message(body) == message


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "Wed, 01 Jan 2025 00:00:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 31 Dec 2024 23:59:00 GMT"}, 0.0),  # already past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_after_from_headers(headers, now=now) == seconds


# The fake server itself


@pytest.mark.parametrize("name", NAMES)
async def test_fake_rejects_malformed_requests_in_the_providers_shape(
    fake: FakeProviderServer, http_client: httpx.AsyncClient, name: str
) -> None:
    route = next(iter(DIALECTS[name].routes.values())).replace("{model}", "gemini-2.5-flash")
    headers = {
        "Authorization": f"Bearer {fake.api_key}",
        "x-api-key": fake.api_key,
        "x-goog-api-key": fake.api_key,
        "anthropic-version": "2023-06-01",
    }

    response = await http_client.post(f"{fake.url}/{name}{route}", json={}, headers=headers)

    assert response.status_code == (422 if name == "mistral" else 400)
    assert error_message(response.json())
    assert fake.requests(name) == 1


async def test_hanging_request_is_visible_until_released(
    fake: FakeProviderServer, http_client: httpx.AsyncClient
) -> None:
    fake.inject("openai", Fault("hang", prompt="stuck"))
    stuck = asyncio.create_task(ask(fake, http_client, "openai", "stuck"))

    async with asyncio.timeout(5):
        await fake.wait_for_requests(1, "openai", "stuck")
    assert fake.in_flight == 1
    other = await ask(fake, http_client, "openai", "free")  # the fault targets one prompt only
    fake.release_hangs()

    with pytest.raises(ProviderError) as caught:
        await stuck
    assert caught.value.status == 500
    assert "free" in other.text


async def test_hundreds_of_requests_are_held_concurrently(
    fake: FakeProviderServer, http_client: httpx.AsyncClient
) -> None:
    count = 300
    fake.inject("perplexity", *[Fault("hang")] * count)
    adapter = build_adapter(fake.config("perplexity"), http_client)
    calls = [asyncio.create_task(adapter.ask(f"prompt {index}")) for index in range(count)]

    async with asyncio.timeout(60):
        await fake.wait_for_requests(count, "perplexity")
    held = fake.in_flight
    fake.release_hangs()
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert held == count
    assert all(isinstance(result, ProviderError) and result.status == 500 for result in results)
    assert fake.requests("perplexity", "prompt 7") == 1


async def test_control_endpoint_steers_the_server(
    fake: FakeProviderServer, http_client: httpx.AsyncClient
) -> None:
    changes = {
        "scripts": [
            {
                "prompt": PROMPT,
                "text": "Scripted.",
                "citations": [{"url": "https://acme.com/", "title": "Acme"}],
                "provider": "cohere",
            }
        ],
        "faults": {"cohere": [{"kind": "server_error"}]},
        "latency": {"mistral": 0.01},
    }
    posted = await http_client.post(f"{fake.url}/_control", json=changes)
    assert posted.json()["pending_faults"]["cohere"] == 1

    error = await failure(fake, http_client, "cohere")
    answer = await ask(fake, http_client, "cohere")
    state = (await http_client.get(f"{fake.url}/_control")).json()

    assert error.status == 500
    assert (answer.text, answer.citations[0].domain) == ("Scripted.", "acme.com")
    assert state["requests"]["cohere"] == 2
    assert state["latency"] == {"*": 0.0, "mistral": 0.01}
    assert {"provider": "cohere", "prompt": PROMPT, "count": 2} in state["prompts"]
    bad = await http_client.post(f"{fake.url}/_control", json={"faults": {"x": []}})
    assert bad.status_code == 400


async def test_fake_server_runs_as_a_subprocess(http_client: httpx.AsyncClient) -> None:
    process = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-m",
            "tests.support.fakes.provider_server",
            "--port",
            "0",
            "--latency",
            "0.01",
        ),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            base = (await process.stdout.readline()).decode().strip()
        config = default_config("mistral", "fake-key", base_url=f"{base}/mistral/v1")

        answer = await build_adapter(config, http_client).ask("hello from afar")

        assert "hello from afar" in answer.text
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            assert await process.wait() == 0


@pytest.mark.parametrize(
    ("error", "summary"),
    [
        (
            ProviderError("openai", "slow down, key sk-1 on org acme", status=429),
            "provider rate limit (429)",
        ),
        (
            ProviderError("openai", "internal at api.example.net", status=503),
            "provider error (503)",
        ),
        (
            ProviderError("openai", "Invalid API key sk-1", status=401),
            "provider authentication failed (401)",
        ),
        (
            ProviderError("openai", "bad field 'x'", status=400),
            "provider rejected the request (400)",
        ),
        (ProviderError("openai", "no response within 5s", kind="timeout"), "timeout"),
        (ProviderError("openai", "[Errno 111] 10.0.0.7", kind="connection"), "connection failed"),
        (
            ProviderError("openai", "body is not JSON", status=200, kind="malformed"),
            "malformed provider response (200)",
        ),
    ],
)
def test_the_summary_tenants_see_names_a_category_and_status_only(
    error: ProviderError, summary: str
) -> None:
    assert error.summary == summary
    assert pickle.loads(pickle.dumps(error)).summary == summary

"""Types and HTTP plumbing shared by every provider adapter.

An adapter sends one prompt to one provider and returns the answer text, the model that wrote it
and the web citations it carries. Adapters never retry: a failure is raised as `ProviderError`,
whose ``retryable`` and ``retry_after`` tell the worker what to do next.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from email.utils import parsedate_to_datetime
from typing import Final, Literal, Protocol

import httpx

from workers.providers.urls import normalize_domain, strip_tracking

# Statuses worth retrying, as the official SDKs do (408/409/429 and every 5xx, including 529).
RETRYABLE_STATUSES: Final = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """How to reach one provider: credentials, endpoint, model and API variant (the
    defaults of each provider are in the registry, `service.providers`; the adapters, `workers.providers.ADAPTERS`)."""

    name: str
    api_key: str
    base_url: str
    model: str
    timeout: float = 60.0
    api: str = ""


@dataclass(frozen=True, slots=True)
class Citation:
    """A web source the answer cites; ``domain`` is the lowercase host without ``www.``."""

    url: str
    title: str
    domain: str

    @classmethod
    def from_url(cls, url: str, title: str = "", domain: str = "") -> Citation:
        """Build a citation with ``utm_*`` parameters removed and the domain taken from the URL.

        ``domain`` overrides the URL's host, for providers whose URLs are redirects.
        """
        clean = strip_tracking(url.strip())
        return cls(url=clean, title=title.strip(), domain=normalize_domain(domain or clean))


@dataclass(frozen=True, slots=True)
class Location:
    """Where the prompt is asked from (a market): ISO 3166-1 alpha-2 country, optional region,
    city and BCP 47 language. Adapters whose API takes a location send it; none rewrites the
    prompt."""

    country: str
    region: str = ""
    city: str = ""
    language: str = ""

    def approximate(self) -> dict[str, str]:
        """The ``{"type": "approximate", country, region?, city?}`` object of OpenAI's and
        Anthropic's web search tools."""
        return {"type": "approximate", **self.place()}

    def place(self) -> dict[str, str]:
        """Country, region and city, without the empty ones."""
        values = {"country": self.country, "region": self.region, "city": self.city}
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True, slots=True)
class Usage:
    """What a provider reported using for one answer.

    ``cost_micros`` is the provider's own cost figure (Perplexity's ``usage.cost``) in
    micro-units of USD, None when it gives none; ``billed`` keeps other provider figures
    (Cohere's ``billed_units``) as reported.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    search_calls: int = 0
    cost_micros: int | None = None
    billed: Mapping[str, int] | None = None

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost_micros is not None or other.cost_micros is not None:
            cost = (self.cost_micros or 0) + (other.cost_micros or 0)
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.search_calls + other.search_calls,
            cost,
            other.billed or self.billed,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """One provider's answer to one prompt; ``market_applied`` says whether the provider's
    API took the location it was asked from."""

    text: str
    model: str
    citations: tuple[Citation, ...]
    latency_ms: int
    usage: Usage = Usage()
    market_applied: bool = False


FailureKind = Literal["http", "timeout", "connection", "request", "malformed", "blocked"]
KIND_SUMMARIES: Final[Mapping[str, str]] = {
    "http": "provider error",
    "timeout": "timeout",
    "connection": "connection failed",
    "request": "request failed",
    "malformed": "malformed provider response",
    "blocked": "prompt blocked by the provider",
}


class ProviderError(Exception):
    """A failed call: ``message`` is the provider's own wording when it sent one.

    ``kind`` says what went wrong (an HTTP error status, a timeout, ...); ``retryable`` says
    whether the same request may succeed later; ``retry_after`` is the wait in seconds the
    provider asked for, if it said.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        kind: FailureKind = "http",
    ) -> None:
        # All fields go to Exception.args so the error survives pickling between processes.
        super().__init__(provider, message, status, retryable, retry_after, kind)
        self.provider = provider
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind

    @property
    def summary(self) -> str:
        """What tenants are shown: a category and the HTTP status when there was one, e.g.
        "provider rate limit (429)". Never the provider's message (which may echo the request,
        the account or internal details) nor the host called; those are for the worker log."""
        category = KIND_SUMMARIES[self.kind]
        if self.status is None:
            return category
        if self.kind == "http":
            category = _http_category(self.status)
        return f"{category} ({self.status})"

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.provider}: {self.message}{status}"


def _http_category(status: int) -> str:
    if status == 429:
        return "provider rate limit"
    if status in (401, 403):
        return "provider authentication failed"
    if status == 408:
        return "timeout"
    if 400 <= status < 500:
        return "provider rejected the request"
    return "provider error"


class ProviderAdapter(Protocol):
    """Asks one provider one prompt at a time, from ``location`` when given."""

    name: str

    async def ask(self, prompt: str, location: Location | None = None) -> Answer: ...


class ResponseShapeError(Exception):
    """A successful response whose body lacks something the adapter needs."""


class Json:
    """Read-only view of a decoded JSON value that knows its path, for precise error messages.

    ``node[key]``, `elements` and `text` insist on the expected shape and raise
    `ResponseShapeError` naming the path otherwise; `get`, `each` and `string` tolerate absence.
    """

    __slots__ = ("path", "value")

    def __init__(self, value: object, path: str = "response") -> None:
        self.value = value
        self.path = path

    def __getitem__(self, key: str) -> Json:
        if not isinstance(self.value, dict):
            raise ResponseShapeError(f"{self.path} is not an object")
        if self.value.get(key) is None:
            raise ResponseShapeError(f"{self.path}.{key} is missing")
        return Json(self.value[key], f"{self.path}.{key}")

    def get(self, key: str) -> Json | None:
        if not isinstance(self.value, dict) or self.value.get(key) is None:
            return None
        return Json(self.value[key], f"{self.path}.{key}")

    def elements(self) -> list[Json]:
        if not isinstance(self.value, list):
            raise ResponseShapeError(f"{self.path} is not a list")
        return [Json(item, f"{self.path}[{index}]") for index, item in enumerate(self.value)]

    def each(self, key: str) -> Iterator[Json]:
        """The elements of the list at ``key``; nothing when it is absent or not a list."""
        node = self.get(key)
        if node is not None and isinstance(node.value, list):
            yield from node.elements()

    def text(self) -> str:
        if not isinstance(self.value, str):
            raise ResponseShapeError(f"{self.path} is not a string")
        return self.value

    def string(self, key: str) -> str:
        """The string at ``key``, or ``""`` when it is absent or not a string."""
        node = self.get(key)
        return node.value if node is not None and isinstance(node.value, str) else ""

    @property
    def kind(self) -> str:
        """The object's ``type`` field, which every provider uses to tag blocks."""
        return self.string("type")


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """What an adapter reads from a successful response body."""

    text: str
    model: str
    citations: Sequence[Citation]
    usage: Usage = Usage()


@dataclass(frozen=True, slots=True)
class ErrorHints:
    """What an adapter reads from a provider-specific error body."""

    permanent: bool = False
    retry_after: float | None = None


def unique_citations(citations: Iterable[Citation]) -> tuple[Citation, ...]:
    """Citations with an URL, first appearance of each URL only, in order."""
    seen: dict[str, Citation] = {}
    for citation in citations:
        if citation.url and citation.url not in seen:
            seen[citation.url] = citation
    return tuple(seen.values())


def count(node: Json | None, key: str) -> int:
    """The non-negative integer at ``key`` of ``node`` (0 when absent or not an integer)."""
    if node is None:
        return 0
    found = node.get(key)
    value = found.value if found is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def dollars_to_micros(value: object) -> int | None:
    """A provider's dollar figure (a JSON number) in micro-units, rounded half up; None when
    it is not a non-negative number. Through `str` and `Decimal`, never binary floats."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    micros = Decimal(str(value)) * 1_000_000
    return int(micros.to_integral_value(rounding=ROUND_HALF_UP))


def chat_usage(body: Json) -> Usage:
    """Tokens of an OpenAI-style chat completion's ``usage``."""
    usage = body.get("usage")
    return Usage(count(usage, "prompt_tokens"), count(usage, "completion_tokens"))


def chat_message(body: Json) -> Json:
    """The first choice's message of an OpenAI-style chat completion."""
    choices = body["choices"].elements()
    if not choices:
        raise ResponseShapeError("response.choices is empty")
    return choices[0]["message"]


def error_message(body: object) -> str:
    """The human message from any of the providers' error bodies, or ``""``.

    Shapes: ``{"error": {"message"}}`` (OpenAI, Anthropic, Gemini, Perplexity),
    ``{"message"}`` (Cohere, Mistral), ``{"detail": [{"loc", "msg"}]}`` (Mistral 422).
    """
    if isinstance(body, list) and body:
        body = body[0]  # Gemini wraps errors in an array on some endpoints.
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body.get("message"), str):
        return str(body["message"])
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(_validation_issue(item) for item in detail)
    return ""


def _validation_issue(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = ".".join(str(part) for part in item.get("loc") or ())
    message = str(item.get("msg", ""))
    return f"{location}: {message}" if location else message


def retry_after_from_headers(
    headers: Mapping[str, str], now: datetime | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date).

    ``headers`` must look names up case-insensitively (`httpx.Headers`) or use lowercase keys.
    """
    milliseconds = _non_negative(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 and number != float("inf") else None


class HttpAdapter:
    """Base of the adapters: one JSON POST per question, errors classified one way for all.

    Subclasses set ``name`` and implement `_path`, `_payload` and `_parse`; they override
    `_headers` for non-Bearer auth and `_error_hints` for provider-specific error bodies.
    Those whose API takes a location override `_located` (to say whether it does for this
    configuration) and add it in `_payload`; the others ignore it.
    """

    name: str

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client

    async def ask(self, prompt: str, location: Location | None = None) -> Answer:
        started = time.perf_counter()
        where = location if location is not None and self._located() else None
        try:
            parsed = await self._exchange(prompt, where)
        except ResponseShapeError as exc:
            raise ProviderError(self.name, f"malformed response: {exc}", kind="malformed") from exc
        return Answer(
            text=parsed.text,
            model=parsed.model,
            citations=unique_citations(parsed.citations),
            latency_ms=round((time.perf_counter() - started) * 1000),
            usage=parsed.usage,
            market_applied=where is not None,
        )

    def _located(self) -> bool:
        """Whether this provider's API (as configured) takes the location asked from."""
        return False

    async def _exchange(self, prompt: str, location: Location | None) -> ParsedAnswer:
        return self._parse(await self._post(self._path(), self._payload(prompt, location)))

    def _path(self) -> str:
        raise NotImplementedError

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        raise NotImplementedError

    def _parse(self, body: Json) -> ParsedAnswer:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def _error_hints(self, body: Json) -> ErrorHints:
        return ErrorHints()

    async def _post(self, path: str, payload: Mapping[str, object]) -> Json:
        url = self.config.base_url.rstrip("/") + path
        try:
            response = await self._client.post(
                url, json=payload, headers=self._headers(), timeout=self.config.timeout
            )
        except httpx.TimeoutException as exc:
            message = f"no response within {self.config.timeout:g}s ({type(exc).__name__})"
            raise ProviderError(self.name, message, retryable=True, kind="timeout") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
            message = f"connection failed: {exc or type(exc).__name__}"
            raise ProviderError(self.name, message, retryable=True, kind="connection") from exc
        except httpx.HTTPError as exc:  # a bad URL or protocol: retrying cannot help
            raise ProviderError(self.name, f"request failed: {exc}", kind="request") from exc
        if not response.is_success:
            raise self._http_error(response)
        try:
            return Json(response.json())
        except ValueError as exc:
            raise ProviderError(
                self.name,
                "malformed response: body is not JSON",
                status=response.status_code,
                kind="malformed",
            ) from exc

    def _http_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            body: object = response.json()
        except ValueError:
            body = None
        message = error_message(body) or response.text.strip()[:300] or f"HTTP {status}"
        retryable = status in RETRYABLE_STATUSES or status >= 500
        should_retry = response.headers.get("x-should-retry")
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        hints = self._error_hints(Json(body))
        retryable = retryable and not hints.permanent
        retry_after = retry_after_from_headers(response.headers)
        if retry_after is None:
            retry_after = hints.retry_after
        return ProviderError(
            self.name,
            message,
            status=status,
            retryable=retryable,
            retry_after=retry_after if retryable else None,
        )

"""Google Gemini ``generateContent`` with the ``google_search`` tool."""

from __future__ import annotations

import re

from workers.providers.base import (
    Citation,
    ErrorHints,
    HttpAdapter,
    Json,
    Location,
    ParsedAnswer,
    ProviderError,
    ResponseShapeError,
    Usage,
    count,
)
from workers.providers.urls import normalize_domain

# Grounding URIs point at this Google redirector; the chunk title carries the real domain.
REDIRECT_HOST = "vertexaisearch.cloud.google.com"
_RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)s")


class GoogleAdapter(HttpAdapter):
    """Asks Gemini with Google Search grounding."""

    name = "google"

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.config.api_key}

    def _path(self) -> str:
        return f"/models/{self.config.model.removeprefix('models/')}:generateContent"

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        return {
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "tools": [{"google_search": {}}],
        }

    def _parse(self, body: Json) -> ParsedAnswer:
        candidates = body.get("candidates")
        if candidates is None or not candidates.elements():
            feedback = body.get("promptFeedback")
            reason = feedback.string("blockReason") if feedback is not None else ""
            if reason:
                raise ProviderError(self.name, f"prompt blocked: {reason}", kind="blocked")
            raise ResponseShapeError("response.candidates is missing")
        candidate = candidates.elements()[0]
        if candidate.get("content") is None:
            finish = candidate.string("finishReason") or "unknown"
            raise ResponseShapeError(f"{candidate.path}.content is missing (finishReason {finish})")
        text = "".join(
            part.string("text")
            for part in candidate["content"].each("parts")
            if part.get("thought") is None
        )
        grounding = candidate.get("groundingMetadata")
        chunks = grounding.each("groundingChunks") if grounding is not None else iter(())
        citations = [_citation(web) for chunk in chunks if (web := chunk.get("web")) is not None]
        usage = body.get("usageMetadata")
        # Grounding is billed per grounded prompt: one search when the model searched.
        searched = grounding is not None and any(True for _ in grounding.each("webSearchQueries"))
        spent = Usage(
            count(usage, "promptTokenCount") + count(usage, "toolUsePromptTokenCount"),
            count(usage, "candidatesTokenCount") + count(usage, "thoughtsTokenCount"),
            1 if searched else 0,
        )
        model = body.string("modelVersion") or self.config.model
        return ParsedAnswer(text, model, citations, spent)

    def _error_hints(self, body: Json) -> ErrorHints:
        if isinstance(body.value, list) and body.value:
            body = body.elements()[0]
        error = body.get("error")
        if error is None:
            return ErrorHints()
        details = list(error.each("details"))
        # A daily quota's retryDelay is meaningless: it resets hours later.
        daily = any(
            "PerDay" in violation.string("quotaId")
            for detail in details
            for violation in detail.each("violations")
        )
        delays = [
            parse_duration(detail.string("retryDelay"))
            for detail in details
            if detail.string("@type").endswith("google.rpc.RetryInfo")
        ]
        retry_after = next((delay for delay in delays if delay is not None), None)
        if retry_after is None:
            retry_after = retry_in_message(error.string("message"))
        return ErrorHints(permanent=daily, retry_after=retry_after)


def _citation(web: Json) -> Citation:
    uri, title = web.string("uri"), web.string("title")
    redirected = normalize_domain(uri) == REDIRECT_HOST
    domain_like = "." in title and " " not in title.strip()
    return Citation.from_url(uri, title, domain=title if redirected and domain_like else "")


def parse_duration(value: str) -> float | None:
    """Seconds in a protobuf JSON duration such as ``"38s"`` or ``"1.5s"``."""
    match = _DURATION.fullmatch(value.strip())
    return float(match.group(1)) if match else None


def retry_in_message(message: str) -> float | None:
    """Seconds in Gemini's "Please retry in 38.5s." (or "in 620ms") message text."""
    match = _RETRY_IN.search(message)
    if match is None:
        return None
    amount = float(match.group(1))
    return amount / 1000 if match.group(2).lower() == "ms" else amount

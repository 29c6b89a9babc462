"""Perplexity Sonar chat completions; search is always on for ``sonar*`` models."""

from __future__ import annotations

import re

from workers.providers.base import (
    Citation,
    HttpAdapter,
    Json,
    Location,
    ParsedAnswer,
    Usage,
    chat_message,
    chat_usage,
    count,
    dollars_to_micros,
)

# Reasoning models put their chain of thought in the content before the answer.
_THINKING = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


class PerplexityAdapter(HttpAdapter):
    """Asks Perplexity; citations come from ``search_results``, else the legacy URL list."""

    name = "perplexity"

    def _path(self) -> str:
        return "/chat/completions"

    def _located(self) -> bool:
        return True

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        payload: dict[str, object] = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
        }
        if location is not None:
            payload["web_search_options"] = {"user_location": location.place()}
        return payload

    def _parse(self, body: Json) -> ParsedAnswer:
        text = _THINKING.sub("", chat_message(body)["content"].text(), count=1)
        results = list(body.each("search_results"))
        if results:
            citations = [
                Citation.from_url(hit.string("url"), hit.string("title")) for hit in results
            ]
        else:
            citations = [
                Citation.from_url(url.value)
                for url in body.each("citations")
                if isinstance(url.value, str)
            ]
        return ParsedAnswer(text, body["model"].text(), citations, _usage(body))


def _usage(body: Json) -> Usage:
    """Tokens, searches and Perplexity's own cost (``usage.cost.total_cost``, dollars)."""
    tokens = chat_usage(body)
    usage = body.get("usage")
    cost = usage.get("cost") if usage is not None else None
    total = cost.get("total_cost") if cost is not None else None
    return Usage(
        tokens.input_tokens,
        tokens.output_tokens,
        count(usage, "num_search_queries"),
        dollars_to_micros(total.value) if total is not None else None,
    )

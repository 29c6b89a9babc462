"""Cohere v2 chat.

Cohere v2 has no built-in web search, so this is a plain chat; citations are read when the
answer carries document or tool sources with a URL.
"""

from __future__ import annotations

from workers.providers.base import Citation, HttpAdapter, Json, Location, ParsedAnswer, Usage, count


class CohereAdapter(HttpAdapter):
    """Asks Cohere Command."""

    name = "cohere"

    def _path(self) -> str:
        return "/chat"

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        return {"model": self.config.model, "messages": [{"role": "user", "content": prompt}]}

    def _parse(self, body: Json) -> ParsedAnswer:
        message = body["message"]
        text = "".join(
            part["text"].text() for part in message["content"].elements() if part.kind == "text"
        )
        citations = [
            Citation.from_url(source.string("url"), source.string("title"))
            for cited in message.each("citations")
            for entry in cited.each("sources")
            if (source := entry.get("document") or entry.get("tool_output")) is not None
        ]
        # The v2 response does not name the model that answered.
        return ParsedAnswer(text, self.config.model, citations, _usage(body))


def _usage(body: Json) -> Usage:
    """Cohere bills ``usage.billed_units`` (fewer than ``usage.tokens``): those are priced."""
    usage = body.get("usage")
    billed = usage.get("billed_units") if usage is not None else None
    units = {
        key: count(billed, key)
        for key in ("input_tokens", "output_tokens", "search_units", "classifications")
        if count(billed, key)
    }
    return Usage(
        count(billed, "input_tokens"), count(billed, "output_tokens"), billed=units or None
    )

"""Anthropic Messages API with the ``web_search_20250305`` server tool."""

from __future__ import annotations

from workers.providers.base import (
    Citation,
    ErrorHints,
    HttpAdapter,
    Json,
    Location,
    ParsedAnswer,
    ResponseShapeError,
    Usage,
    count,
)

API_VERSION = "2023-06-01"
MAX_TOKENS = 2048
MAX_SEARCHES = 5
# A long server-tool turn stops with ``pause_turn``; it is resumed by sending it back.
MAX_CONTINUATIONS = 3


class AnthropicAdapter(HttpAdapter):
    """Asks Claude with web search enabled."""

    name = "anthropic"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.config.api_key, "anthropic-version": API_VERSION}

    def _path(self) -> str:
        return "/messages"

    def _located(self) -> bool:
        return True

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        return self._request([{"role": "user", "content": prompt}], location)

    def _request(
        self, messages: list[dict[str, object]], location: Location | None
    ) -> dict[str, object]:
        tool: dict[str, object] = {
            "type": "web_search_20250305",
            "name": "web_search",
            "max_uses": MAX_SEARCHES,
        }
        if location is not None:
            tool["user_location"] = location.approximate()
        return {
            "model": self.config.model,
            "max_tokens": MAX_TOKENS,
            "messages": messages,
            "tools": [tool],
        }

    async def _exchange(self, prompt: str, location: Location | None) -> ParsedAnswer:
        question: dict[str, object] = {"role": "user", "content": prompt}
        blocks: list[Json] = []
        body = await self._post(self._path(), self._payload(prompt, location))
        blocks.extend(body["content"].elements())
        usage = _usage(body)
        for _ in range(MAX_CONTINUATIONS):
            if body.string("stop_reason") != "pause_turn":
                break
            partial: dict[str, object] = {
                "role": "assistant",
                "content": [block.value for block in blocks],
            }
            body = await self._post(self._path(), self._request([question, partial], location))
            blocks.extend(body["content"].elements())
            usage += _usage(body)
        return self._answer(blocks, body["model"].text(), usage)

    def _answer(self, blocks: list[Json], model: str, usage: Usage) -> ParsedAnswer:
        texts = [block for block in blocks if block.kind == "text"]
        if not texts:
            raise ResponseShapeError("response.content has no text block")
        citations = [
            Citation.from_url(cited.string("url"), cited.string("title"))
            for block in texts
            for cited in block.each("citations")
            if cited.kind == "web_search_result_location"
        ]
        text = "".join(block["text"].text() for block in texts)
        return ParsedAnswer(text, model, citations, usage)

    def _error_hints(self, body: Json) -> ErrorHints:
        # The monthly spend cap is a 429 too, but it lasts until the limit is raised.
        error = body.get("error")
        details = error.get("details") if error is not None else None
        capped = (
            details is not None and details.string("error_code") == "enforced_spend_limit_reached"
        )
        return ErrorHints(permanent=capped)


def _usage(body: Json) -> Usage:
    """Tokens and web searches of one Messages response (every call of a resumed turn is
    billed)."""
    usage = body.get("usage")
    tools = usage.get("server_tool_use") if usage is not None else None
    return Usage(
        count(usage, "input_tokens"),
        count(usage, "output_tokens"),
        count(tools, "web_search_requests"),
    )

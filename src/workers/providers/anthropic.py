"""Anthropic Messages API with the ``web_search_20250305`` server tool."""

from __future__ import annotations

from workers.providers.base import (
    Citation,
    ErrorHints,
    HttpAdapter,
    Json,
    ParsedAnswer,
    ResponseShapeError,
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

    def _payload(self, prompt: str) -> dict[str, object]:
        return self._request([{"role": "user", "content": prompt}])

    def _request(self, messages: list[dict[str, object]]) -> dict[str, object]:
        return {
            "model": self.config.model,
            "max_tokens": MAX_TOKENS,
            "messages": messages,
            "tools": [
                {"type": "web_search_20250305", "name": "web_search", "max_uses": MAX_SEARCHES}
            ],
        }

    async def _exchange(self, prompt: str) -> ParsedAnswer:
        question: dict[str, object] = {"role": "user", "content": prompt}
        blocks: list[Json] = []
        body = await self._post(self._path(), self._payload(prompt))
        blocks.extend(body["content"].elements())
        for _ in range(MAX_CONTINUATIONS):
            if body.string("stop_reason") != "pause_turn":
                break
            partial: dict[str, object] = {
                "role": "assistant",
                "content": [block.value for block in blocks],
            }
            body = await self._post(self._path(), self._request([question, partial]))
            blocks.extend(body["content"].elements())
        return self._answer(blocks, body["model"].text())

    def _answer(self, blocks: list[Json], model: str) -> ParsedAnswer:
        texts = [block for block in blocks if block.kind == "text"]
        if not texts:
            raise ResponseShapeError("response.content has no text block")
        citations = [
            Citation.from_url(cited.string("url"), cited.string("title"))
            for block in texts
            for cited in block.each("citations")
            if cited.kind == "web_search_result_location"
        ]
        return ParsedAnswer("".join(block["text"].text() for block in texts), model, citations)

    def _error_hints(self, body: Json) -> ErrorHints:
        # The monthly spend cap is a 429 too, but it lasts until the limit is raised.
        error = body.get("error")
        details = error.get("details") if error is not None else None
        capped = (
            details is not None and details.string("error_code") == "enforced_spend_limit_reached"
        )
        return ErrorHints(permanent=capped)

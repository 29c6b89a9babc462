"""OpenAI: the Responses API with the ``web_search`` tool, or plain Chat Completions.

``ProviderConfig.api == "chat"`` selects Chat Completions, for OpenAI's ``*-search-*`` models and
for OpenAI-compatible self-hosted servers (which have no search tool, so no citations).
"""

from __future__ import annotations

import httpx

from workers.providers.base import (
    Citation,
    ErrorHints,
    HttpAdapter,
    Json,
    Location,
    ParsedAnswer,
    ProviderConfig,
    ResponseShapeError,
    Usage,
    chat_message,
    chat_usage,
    count,
)

APIS = ("", "responses", "chat")


class OpenAIAdapter(HttpAdapter):
    """Asks OpenAI, or any server speaking its Chat Completions API."""

    name = "openai"

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        if config.api not in APIS:
            raise ValueError(f"openai api must be 'responses' or 'chat', not {config.api!r}")
        super().__init__(config, client)
        self._chat = config.api == "chat"

    def _path(self) -> str:
        return "/chat/completions" if self._chat else "/responses"

    def _located(self) -> bool:
        # Chat Completions take a location only with the search models (gpt-5-search-api,
        # gpt-4o-search-preview...); other chat models and compatible servers do not search.
        return not self._chat or "search" in self.config.model

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        if self._chat:
            payload: dict[str, object] = {
                "model": self.config.model,
                "messages": [{"role": "user", "content": prompt}],
            }
            if location is not None:
                payload["web_search_options"] = {
                    "user_location": {"type": "approximate", "approximate": location.place()}
                }
            return payload
        tool: dict[str, object] = {"type": "web_search"}
        if location is not None:
            tool["user_location"] = location.approximate()
        return {"model": self.config.model, "input": prompt, "tools": [tool], "store": False}

    def _parse(self, body: Json) -> ParsedAnswer:
        return self._parse_chat(body) if self._chat else self._parse_responses(body)

    def _parse_responses(self, body: Json) -> ParsedAnswer:
        messages = [item for item in body["output"].elements() if item.kind == "message"]
        if not messages:
            status = body.string("status") or "unknown"
            raise ResponseShapeError(f"response.output has no message item (status {status})")
        texts: list[str] = []
        citations: list[Citation] = []
        for message in messages:
            for part in message["content"].elements():
                if part.kind == "output_text":
                    texts.append(part["text"].text())
                    citations.extend(
                        Citation.from_url(note.string("url"), note.string("title"))
                        for note in part.each("annotations")
                        if note.kind == "url_citation"
                    )
                elif part.kind == "refusal":
                    texts.append(part.string("refusal"))
        usage = body.get("usage")
        searches = sum(1 for item in body["output"].elements() if item.kind == "web_search_call")
        spent = Usage(count(usage, "input_tokens"), count(usage, "output_tokens"), searches)
        return ParsedAnswer("".join(texts), body["model"].text(), citations, spent)

    def _parse_chat(self, body: Json) -> ParsedAnswer:
        message = chat_message(body)
        refusal = message.string("refusal")
        text = refusal if refusal and message.get("content") is None else message["content"].text()
        citations = [
            Citation.from_url(found.string("url"), found.string("title"))
            for note in message.each("annotations")
            if (found := note.get("url_citation")) is not None
        ]
        usage = chat_usage(body)
        if "search" in self.config.model:
            # A search model searches once per request (billed per call).
            usage = Usage(usage.input_tokens, usage.output_tokens, 1)
        return ParsedAnswer(text, body["model"].text(), citations, usage)

    def _error_hints(self, body: Json) -> ErrorHints:
        # An exhausted quota comes as a 429 like rate limits, but waiting does not fix it.
        error = body.get("error")
        exhausted = error is not None and "insufficient_quota" in (
            error.string("code"),
            error.string("type"),
        )
        return ErrorHints(permanent=exhausted)

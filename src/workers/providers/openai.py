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
    ParsedAnswer,
    ProviderConfig,
    ResponseShapeError,
    chat_message,
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

    def _payload(self, prompt: str) -> dict[str, object]:
        if self._chat:
            return {"model": self.config.model, "messages": [{"role": "user", "content": prompt}]}
        return {
            "model": self.config.model,
            "input": prompt,
            "tools": [{"type": "web_search"}],
            "store": False,
        }

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
        return ParsedAnswer("".join(texts), body["model"].text(), citations)

    def _parse_chat(self, body: Json) -> ParsedAnswer:
        message = chat_message(body)
        refusal = message.string("refusal")
        text = refusal if refusal and message.get("content") is None else message["content"].text()
        citations = [
            Citation.from_url(found.string("url"), found.string("title"))
            for note in message.each("annotations")
            if (found := note.get("url_citation")) is not None
        ]
        return ParsedAnswer(text, body["model"].text(), citations)

    def _error_hints(self, body: Json) -> ErrorHints:
        # An exhausted quota comes as a 429 like rate limits, but waiting does not fix it.
        error = body.get("error")
        exhausted = error is not None and "insufficient_quota" in (
            error.string("code"),
            error.string("type"),
        )
        return ErrorHints(permanent=exhausted)

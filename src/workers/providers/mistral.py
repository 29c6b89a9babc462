"""Mistral Conversations API with the ``web_search`` connector.

Chat Completions cannot search, so the adapter uses ``/v1/conversations`` with ``store: false``
(nothing kept on Mistral's side).
"""

from __future__ import annotations

from workers.providers.base import (
    Citation,
    HttpAdapter,
    Json,
    Location,
    ParsedAnswer,
    ResponseShapeError,
    Usage,
    count,
)


class MistralAdapter(HttpAdapter):
    """Asks Mistral with web search; ``tool_reference`` chunks are the citations."""

    name = "mistral"

    def _path(self) -> str:
        return "/conversations"

    def _payload(self, prompt: str, location: Location | None = None) -> dict[str, object]:
        return {
            "model": self.config.model,
            "inputs": prompt,
            "tools": [{"type": "web_search"}],
            "store": False,
        }

    def _parse(self, body: Json) -> ParsedAnswer:
        entries = [entry for entry in body["outputs"].elements() if entry.kind == "message.output"]
        if not entries:
            raise ResponseShapeError("response.outputs has no message.output entry")
        texts: list[str] = []
        citations: list[Citation] = []
        for entry in entries:
            content = entry["content"]
            if isinstance(content.value, str):  # a plain string when nothing is cited
                texts.append(content.value)
                continue
            for chunk in content.elements():
                if chunk.kind == "text":
                    texts.append(chunk["text"].text())
                elif chunk.kind == "tool_reference" and chunk.string("url"):
                    citations.append(Citation.from_url(chunk.string("url"), chunk.string("title")))
        usage = body.get("usage")
        connectors = usage.get("connectors") if usage is not None else None
        spent = Usage(
            # Search results read by the model are billed as connector tokens, on input.
            count(usage, "prompt_tokens") + count(usage, "connector_tokens"),
            count(usage, "completion_tokens"),
            count(connectors, "web_search") + count(connectors, "web_search_premium"),
        )
        return ParsedAnswer(
            "".join(texts), entries[-1].string("model") or self.config.model, citations, spent
        )

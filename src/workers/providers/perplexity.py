"""Perplexity Sonar chat completions; search is always on for ``sonar*`` models."""

from __future__ import annotations

import re

from workers.providers.base import Citation, HttpAdapter, Json, ParsedAnswer, chat_message

# Reasoning models put their chain of thought in the content before the answer.
_THINKING = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


class PerplexityAdapter(HttpAdapter):
    """Asks Perplexity; citations come from ``search_results``, else the legacy URL list."""

    name = "perplexity"

    def _path(self) -> str:
        return "/chat/completions"

    def _payload(self, prompt: str) -> dict[str, object]:
        return {"model": self.config.model, "messages": [{"role": "user", "content": prompt}]}

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
        return ParsedAnswer(text, body["model"].text(), citations)

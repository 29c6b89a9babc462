"""The six providers' request and response formats, as spoken by the fake provider server.

Each `Dialect` checks authentication and request shape the way its provider does, renders a
scripted answer with citations in the provider's response shape, and renders errors in the
provider's own error body. Shapes follow /work/shared/PROVIDERS.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from time import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    """The answer the fake gives: text plus ``(url, title)`` citations."""

    text: str
    citations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Call:
    """What the fake read from a valid request."""

    prompt: str
    model: str
    continuation: bool = False  # an Anthropic request resuming a paused turn


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer; a ``str`` body is sent verbatim as (possibly broken) JSON."""

    status: int
    body: object
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return web.Response(
            status=self.status,
            text=text,
            content_type="application/json",
            headers=dict(self.headers),
        )


class BadRequest(Exception):
    """The request is not shaped as the provider requires."""


def served_model(model: str) -> str:
    """The dated snapshot name the fake reports for a requested model alias."""
    return f"{model}-20260101"


def _ident(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
    return f"{prefix}{digest}"


def _bare_domain(url: str) -> str:
    return (urlsplit(url).hostname or "").removeprefix("www.")


def _pieces(answer: ScriptedAnswer) -> list[tuple[str, list[tuple[str, str]]]]:
    """The text cut at sentence ends, each piece with the citations it carries (round-robin)."""
    texts = [piece for piece in re.split(r"(?<=[.!?])(?=\s)", answer.text) if piece] or [""]
    pieces: list[tuple[str, list[tuple[str, str]]]] = [(text, []) for text in texts]
    for index, citation in enumerate(answer.citations):
        pieces[index % len(pieces)][1].append(citation)
    return pieces


def _text_of(content: object) -> str | None:
    """Text of a message content: a string or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def _require_model(payload: JsonDict) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required")
    return model


def _user_prompt(messages: object, name: str) -> tuple[str, bool]:
    """The last user message's text, and whether an assistant turn follows it."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"{name}: must be a non-empty list of messages")
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"{name}: every message must be an object")
        if message.get("role") == "user":
            text = _text_of(message.get("content"))
            if text is None:
                raise BadRequest(f"{name}: user message content must be text")
            last = messages[-1]
            return text, isinstance(last, dict) and last.get("role") == "assistant"
    raise BadRequest(f"{name}: no user message")


def _input_call(payload: JsonDict, key: str) -> Call:
    """A request whose ``key`` holds the prompt as a string or as a list of messages."""
    model = _require_model(payload)
    given = payload.get(key)
    if isinstance(given, str):
        return Call(given, model)
    prompt, _ = _user_prompt(given, key)
    return Call(prompt, model)


class Dialect:
    """One provider's formats. Defaults are the OpenAI-style ones that several providers share."""

    name: str = ""
    routes: Mapping[str, str] = {}  # route key -> path below /{name}
    overloaded_status = 503

    def authorized(self, request: web.Request, api_key: str) -> bool:
        return request.headers.get("Authorization") == f"Bearer {api_key}"

    def parse(self, route: str, request: web.Request, payload: JsonDict) -> Call:
        prompt, _ = _user_prompt(payload.get("messages"), "messages")
        return Call(prompt, _require_model(payload))

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        raise NotImplementedError

    def error_body(self, status: int, kind: str, message: str) -> JsonDict:
        return {"error": {"message": message, "type": kind, "param": None, "code": kind}}

    def unauthorized(self) -> Reply:
        return Reply(401, self.error_body(401, "invalid_api_key", "Invalid API key provided."))

    def bad_request(self, message: str) -> Reply:
        return Reply(400, self.error_body(400, "invalid_request_error", message))

    def rate_limited(self, retry_after: float, quota: bool) -> Reply:
        if quota:
            return Reply(429, self.error_body(429, "insufficient_quota", "Quota exhausted."))
        body = self.error_body(429, "rate_limit_exceeded", "Rate limit exceeded.")
        return Reply(429, body, {"Retry-After": f"{retry_after:g}"})

    def server_error(self, overloaded: bool) -> Reply:
        if overloaded:
            status, kind, message = self.overloaded_status, "overloaded", "Service overloaded."
        else:
            status, kind, message = 500, "server_error", "The server had an error."
        return Reply(status, self.error_body(status, kind, message))

    def paused(self, call: Call) -> JsonDict:
        raise BadRequest(f"{self.name} has no paused turns")


class OpenAIDialect(Dialect):
    name = "openai"
    routes = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}

    def parse(self, route: str, request: web.Request, payload: JsonDict) -> Call:
        if route == "chat":
            return super().parse(route, request, payload)
        return _input_call(payload, "input")

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        # OpenAI tags citation URLs with utm_source=openai.
        cited = [
            (f"{url}{'&' if '?' in url else '?'}utm_source=openai", t)
            for url, t in answer.citations
        ]
        span = {"start_index": 0, "end_index": len(answer.text)}
        if route == "chat":
            notes = [
                {"type": "url_citation", "url_citation": {**span, "url": url, "title": title}}
                for url, title in cited
            ]
            message = {
                "role": "assistant",
                "content": answer.text,
                "refusal": None,
                "annotations": notes,
            }
            return {
                "id": _ident("chatcmpl-", call.prompt),
                "object": "chat.completion",
                "model": served_model(call.model),
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60},
            }
        search = {
            "type": "web_search_call",
            "id": _ident("ws_", call.prompt),
            "status": "completed",
            "action": {
                "type": "search",
                "query": call.prompt,
                "sources": [{"type": "url", "url": url} for url, _ in cited],
            },
        }
        text: JsonDict = {
            "type": "output_text",
            "text": answer.text,
            "annotations": [
                {"type": "url_citation", **span, "url": url, "title": title} for url, title in cited
            ],
        }
        message = {
            "type": "message",
            "id": _ident("msg_", call.prompt),
            "status": "completed",
            "role": "assistant",
            "content": [text],
        }
        return {
            "id": _ident("resp_", call.prompt),
            "object": "response",
            "status": "completed",
            "model": served_model(call.model),
            "output": [search, message],
            "usage": {"input_tokens": 10, "output_tokens": 50, "total_tokens": 60},
        }

    def unauthorized(self) -> Reply:
        message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        body = self.error_body(401, "invalid_api_key", message)
        body["error"]["type"] = "invalid_request_error"
        return Reply(401, body)

    def rate_limited(self, retry_after: float, quota: bool) -> Reply:
        reply = super().rate_limited(retry_after, quota)
        if quota:
            return reply
        headers = {**reply.headers, "retry-after-ms": f"{retry_after * 1000:g}"}
        return Reply(reply.status, reply.body, headers)


class AnthropicDialect(Dialect):
    name = "anthropic"
    routes = {"messages": "/v1/messages"}
    overloaded_status = 529

    def authorized(self, request: web.Request, api_key: str) -> bool:
        return request.headers.get("x-api-key") == api_key

    def parse(self, route: str, request: web.Request, payload: JsonDict) -> Call:
        if not request.headers.get("anthropic-version"):
            raise BadRequest("anthropic-version: header is required")
        if not isinstance(payload.get("max_tokens"), int):
            raise BadRequest("max_tokens: Field required")
        prompt, continuation = _user_prompt(payload.get("messages"), "messages")
        return Call(prompt, _require_model(payload), continuation)

    def _message(self, call: Call, content: list[JsonDict], stop_reason: str) -> JsonDict:
        return {
            "id": _ident("msg_", call.prompt, stop_reason),
            "type": "message",
            "role": "assistant",
            "model": served_model(call.model),
            "content": content,
            "stop_reason": stop_reason,
            "usage": {
                "input_tokens": 100,
                "output_tokens": 50,
                "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
            },
        }

    def _search_blocks(self, call: Call, answer: ScriptedAnswer) -> list[JsonDict]:
        tool_id = _ident("srvtoolu_", call.prompt)
        results = [
            {"type": "web_search_result", "title": title, "url": url, "encrypted_content": "x"}
            for url, title in answer.citations
        ]
        return [
            {
                "type": "server_tool_use",
                "id": tool_id,
                "name": "web_search",
                "input": {"query": call.prompt},
            },
            {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": results},
        ]

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        texts: list[JsonDict] = []
        for text, cited in _pieces(answer):
            block: JsonDict = {"type": "text", "text": text}
            if cited:
                block["citations"] = [
                    {
                        "type": "web_search_result_location",
                        "url": url,
                        "title": title,
                        "cited_text": text[:150],
                        "encrypted_index": "x",
                    }
                    for url, title in cited
                ]
            texts.append(block)
        searches = [] if call.continuation else self._search_blocks(call, answer)
        return self._message(call, searches + texts, "end_turn")

    def paused(self, call: Call) -> JsonDict:
        answer = ScriptedAnswer("", ())
        return self._message(call, self._search_blocks(call, answer)[:1], "pause_turn")

    def error_body(self, status: int, kind: str, message: str) -> JsonDict:
        types = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
        types |= {500: "api_error", 529: "overloaded_error"}
        error = {"type": types.get(status, "api_error"), "message": message}
        return {"type": "error", "error": error, "request_id": _ident("req_", message)}

    def unauthorized(self) -> Reply:
        return Reply(401, self.error_body(401, "", "invalid x-api-key"))

    def rate_limited(self, retry_after: float, quota: bool) -> Reply:
        if not quota:
            return super().rate_limited(retry_after, quota)
        body = self.error_body(
            429, "", "You have reached your specified workspace API usage limits."
        )
        body["error"]["details"] = {"error_code": "enforced_spend_limit_reached"}
        return Reply(429, body)


class GoogleDialect(Dialect):
    name = "google"
    routes = {"generate": "/v1beta/models/{model}:generateContent"}

    def authorized(self, request: web.Request, api_key: str) -> bool:
        given = request.headers.get("x-goog-api-key") or request.query.get("key")
        return given == api_key

    def parse(self, route: str, request: web.Request, payload: JsonDict) -> Call:
        contents = payload.get("contents")
        if not isinstance(contents, list) or not contents or not isinstance(contents[-1], dict):
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
        prompt = _text_of(contents[-1].get("parts"))
        if prompt is None:
            raise BadRequest("* GenerateContentRequest.contents[0].parts: must contain text")
        return Call(prompt, request.match_info["model"])

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        chunks = [
            {
                "web": {
                    "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/"
                    + base64.urlsafe_b64encode(url.encode()).decode().rstrip("="),
                    "title": _bare_domain(url),
                }
            }
            for url, _ in answer.citations
        ]
        supports = [
            {
                "segment": {
                    "startIndex": 0,
                    "endIndex": len(answer.text.encode()),
                    "text": answer.text,
                },
                "groundingChunkIndices": list(range(len(chunks))),
            }
        ]
        candidate: JsonDict = {
            "content": {"role": "model", "parts": [{"text": answer.text}]},
            "finishReason": "STOP",
            "groundingMetadata": {
                "webSearchQueries": [call.prompt],
                "groundingChunks": chunks,
                "groundingSupports": supports if chunks else [],
            },
        }
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 50,
                "totalTokenCount": 270,
                "toolUsePromptTokenCount": 210,
            },
            "modelVersion": served_model(call.model),
        }

    def error_body(self, status: int, kind: str, message: str) -> JsonDict:
        names = {
            400: "INVALID_ARGUMENT",
            429: "RESOURCE_EXHAUSTED",
            500: "INTERNAL",
            503: "UNAVAILABLE",
        }
        return {
            "error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}
        }

    def unauthorized(self) -> Reply:
        # Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401.
        body = self.error_body(400, "", "API key not valid. Please pass a valid API key.")
        body["error"]["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ]
        return Reply(400, body)

    def rate_limited(self, retry_after: float, quota: bool) -> Reply:
        period = "PerDay" if quota else "PerMinute"
        message = f"You exceeded your current quota. Please retry in {retry_after:g}s."
        body = self.error_body(429, "", message)
        body["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": f"GenerateRequests{period}PerProjectPerModel-FreeTier"}],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{retry_after:g}s",
            },
        ]
        return Reply(429, body)


class PerplexityDialect(Dialect):
    name = "perplexity"
    routes = {"chat": "/chat/completions"}

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        message = {"role": "assistant", "content": answer.text}
        return {
            "id": _ident("", call.prompt),
            "object": "chat.completion",
            "created": 1_767_225_600,
            "model": served_model(call.model),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": message,
                    "delta": {"role": "assistant", "content": ""},
                }
            ],
            "citations": [url for url, _ in answer.citations],
            "search_results": [
                {"title": title, "url": url, "date": "2026-01-01", "snippet": "…", "source": "web"}
                for url, title in answer.citations
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 50,
                "total_tokens": 60,
                "search_context_size": "medium",
                "citation_tokens": 0,
                "num_search_queries": 1,
                "cost": {
                    "input_tokens_cost": 0.00003,
                    "output_tokens_cost": 0.00075,
                    "request_cost": 0.006,
                    "total_cost": 0.00678,
                },
            },
        }

    def error_body(self, status: int, kind: str, message: str) -> JsonDict:
        return {"error": {"message": message, "type": kind, "code": status}}


class MistralDialect(Dialect):
    name = "mistral"
    routes = {"conversations": "/v1/conversations"}

    def parse(self, route: str, request: web.Request, payload: JsonDict) -> Call:
        return _input_call(payload, "inputs")

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        content: str | list[JsonDict] = answer.text
        if answer.citations:
            content = []
            for text, cited in _pieces(answer):
                content.append({"type": "text", "text": text})
                content.extend(
                    {"type": "tool_reference", "tool": "web_search", "title": title, "url": url}
                    for url, title in cited
                )
        search = {
            "object": "entry",
            "type": "tool.execution",
            "name": "web_search",
            "arguments": json.dumps({"query": call.prompt}),
            "id": _ident("tool_exec_", call.prompt),
        }
        message = {
            "object": "entry",
            "type": "message.output",
            "role": "assistant",
            "id": _ident("msg_", call.prompt),
            "model": served_model(call.model),
            "content": content,
        }
        return {
            "object": "conversation.response",
            "conversation_id": _ident("conv_", call.prompt),
            "outputs": [search, message],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 50,
                "total_tokens": 1060,
                "connector_tokens": 1000,
                "connectors": {"web_search": 1},
            },
        }

    def error_body(self, status: int, kind: str, message: str) -> JsonDict:
        return {"object": "error", "message": message, "type": kind, "param": None, "code": None}

    def bad_request(self, message: str) -> Reply:
        detail = [{"loc": ["body"], "msg": message, "type": "value_error"}]
        return Reply(422, {"detail": detail})

    def unauthorized(self) -> Reply:
        return Reply(401, self.error_body(401, "unauthorized", "Unauthorized"))

    def rate_limited(self, retry_after: float, quota: bool) -> Reply:
        # Mistral says when to come back with an HTTP date.
        body = self.error_body(429, "rate_limited", "Rate limit exceeded")
        when = formatdate(math.ceil(time() + retry_after), usegmt=True)
        return Reply(429, body, {} if quota else {"Retry-After": when})


class CohereDialect(Dialect):
    name = "cohere"
    routes = {"chat": "/v2/chat"}

    def render(self, route: str, call: Call, answer: ScriptedAnswer) -> JsonDict:
        citations = [
            {
                "start": 0,
                "end": len(answer.text),
                "text": answer.text,
                "type": "TEXT_CONTENT",
                "sources": [
                    {
                        "type": "document",
                        "id": f"doc:{index}",
                        "document": {
                            "id": f"doc:{index}",
                            "title": title,
                            "url": url,
                            "snippet": "…",
                        },
                    }
                ],
            }
            for index, (url, title) in enumerate(answer.citations)
        ]
        message = {
            "role": "assistant",
            "content": [{"type": "text", "text": answer.text}],
            "citations": citations,
        }
        return {
            "id": _ident("", call.prompt),
            "finish_reason": "COMPLETE",
            "message": message,
            "usage": {
                "billed_units": {"input_tokens": 10, "output_tokens": 50},
                "tokens": {"input_tokens": 210, "output_tokens": 60},
            },
        }

    def error_body(self, status: int, kind: str, message: str) -> JsonDict:
        return {"id": _ident("", message), "message": message}

    def unauthorized(self) -> Reply:
        return Reply(401, self.error_body(401, "", "invalid api token"))


DIALECTS: Mapping[str, Dialect] = {
    dialect.name: dialect
    for dialect in (
        OpenAIDialect(),
        AnthropicDialect(),
        GoogleDialect(),
        PerplexityDialect(),
        MistralDialect(),
        CohereDialect(),
    )
}

# Where each provider's API lives below its prefix, matching the registry's default base URLs
# (service.providers).
API_ROOTS: Mapping[str, str] = {
    "openai": "/v1",
    "anthropic": "/v1",
    "google": "/v1beta",
    "perplexity": "",
    "mistral": "/v1",
    "cohere": "/v2",
}


def citation_pairs(items: Sequence[object]) -> tuple[tuple[str, str], ...]:
    """``(url, title)`` pairs from ``{"url", "title"}`` objects or ``[url, title]`` lists."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, dict):
            pairs.append((str(item["url"]), str(item.get("title", ""))))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            pairs.append((str(item[0]), str(item[1])))
        else:
            raise ValueError(f"citation must be {{url, title}} or [url, title], not {item!r}")
    return tuple(pairs)

"""The wire protocols of the hosted providers, as far as their SDKs read them.

Each protocol turns a scripted reply into what the provider would send: the frames
of its stream (split into prelude, one frame per text delta, closing frames), the
body of its errors, and where its requests carry the API key.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


def token_text(i: int) -> str:
    """The text of the i-th delta of every fake stream."""
    return f"w{i} "


def expected_text(n: int) -> str:
    return "".join(token_text(i) for i in range(n))


def count_words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


@dataclass
class Frames:
    prelude: list[bytes] = field(default_factory=list)
    tokens: list[bytes] = field(default_factory=list)
    closing: list[bytes] = field(default_factory=list)


def sse(data: Any, event: str | None = None, sep: bytes = b"\n\n") -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return (head + f"data: {payload}").encode() + sep


class Protocol:
    name: str
    #: what the provider's base URL ends with after the server's address
    base_path: str
    stream_content_type = "text/event-stream"

    def route(self, method: str, path: str) -> str | None:
        """"stream" or another route name this protocol answers, or None."""
        raise NotImplementedError

    def key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"message": message, "type": _openai_error_type(status),
                          "param": None, "code": None}}

    def error_event(self, status: int, message: str) -> bytes:
        """An error reported inside a stream that began with 200."""
        return sse(self.error_body(status, message))

    def prompt_tokens(self, body: dict) -> int:
        return count_words(*(m.get("content") or "" for m in body.get("messages", [])))

    def frames(self, body: dict, tokens: int, finish: str, usage: bool) -> Frames:
        raise NotImplementedError

    def json_reply(self, route: str, body: dict) -> dict:
        raise NotImplementedError(route)


def _openai_error_type(status: int) -> str:
    return {401: "invalid_request_error", 429: "rate_limit_exceeded",
            400: "invalid_request_error"}.get(status, "server_error")


class OpenAIProtocol(Protocol):
    name = "openai"
    base_path = "/v1"
    chat_path = "/v1/chat/completions"

    def route(self, method: str, path: str) -> str | None:
        if method == "POST" and path == self.chat_path:
            return "stream"
        if method == "POST" and path == "/v1/embeddings":
            return "embeddings"
        return None

    def _chunk(self, body: dict, choices: list, **extra: Any) -> dict:
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model"),
                "system_fingerprint": "fp_fake", "choices": choices, **extra}

    def _usage(self, body: dict, tokens: int) -> dict:
        prompt = self.prompt_tokens(body)
        return {"prompt_tokens": prompt, "completion_tokens": tokens,
                "total_tokens": prompt + tokens}

    def frames(self, body: dict, tokens: int, finish: str, usage: bool) -> Frames:
        with_usage = usage and (body.get("stream_options") or {}).get("include_usage")
        extra = {"usage": None} if with_usage else {}

        def choice(delta: dict, finish_reason: str | None = None) -> list:
            return [{"index": 0, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}]

        out = Frames()
        out.prelude.append(sse(self._chunk(body, choice({"role": "assistant", "content": ""}),
                                           **extra)))
        for i in range(tokens):
            out.tokens.append(sse(self._chunk(body, choice({"content": token_text(i)}),
                                              **extra)))
        out.closing.append(sse(self._final_chunk(body, choice({}, finish), tokens, usage, extra)))
        if with_usage:
            out.closing.append(sse(self._chunk(body, [], usage=self._usage(body, tokens))))
        out.closing.append(sse("[DONE]"))
        return out

    def _final_chunk(self, body: dict, choices: list, tokens: int, usage: bool,
                     extra: dict) -> dict:
        return self._chunk(body, choices, **extra)

    def json_reply(self, route: str, body: dict) -> dict:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, text in enumerate(texts):
            vector = [float(len(text)), float(i), 0.25, -1.0]
            if body.get("encoding_format") == "base64":
                packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                data.append({"object": "embedding", "index": i, "embedding": packed})
            else:
                data.append({"object": "embedding", "index": i, "embedding": vector})
        prompt = count_words(*texts)
        return {"object": "list", "data": data, "model": body.get("model"),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


class XAIProtocol(OpenAIProtocol):
    name = "xai"


class GroqProtocol(OpenAIProtocol):
    """OpenAI's chunks under /openai/v1, usage in the final chunk's `x_groq`."""

    name = "groq"
    base_path = ""
    chat_path = "/openai/v1/chat/completions"

    def _final_chunk(self, body: dict, choices: list, tokens: int, usage: bool,
                     extra: dict) -> dict:
        if not usage:
            return self._chunk(body, choices)
        u = self._usage(body, tokens)
        u.update(queue_time=0.001, prompt_time=0.001, completion_time=0.01, total_time=0.012)
        return self._chunk(body, choices, x_groq={"id": "req_fake", "usage": u})


class AnthropicProtocol(Protocol):
    name = "anthropic"
    base_path = ""
    _types = {400: "invalid_request_error", 401: "authentication_error",
              403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
              500: "api_error", 529: "overloaded_error"}

    def route(self, method: str, path: str) -> str | None:
        return "stream" if method == "POST" and path == "/v1/messages" else None

    def key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None:
        # The API takes `x-api-key`; recent SDKs send the key as a bearer token instead.
        return headers.get("x-api-key") or super().key_of(headers, query)

    def error_body(self, status: int, message: str) -> dict:
        return {"type": "error",
                "error": {"type": self._types.get(status, "api_error"), "message": message}}

    def error_event(self, status: int, message: str) -> bytes:
        return sse(self.error_body(status, message), "error")

    def prompt_tokens(self, body: dict) -> int:
        system = body.get("system") or ""
        return count_words(system, *(m.get("content") or "" for m in body.get("messages", [])))

    def frames(self, body: dict, tokens: int, finish: str, usage: bool) -> Frames:
        prompt = self.prompt_tokens(body) if usage else 0
        out = Frames()
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "content": [],
                   "model": body.get("model"), "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": prompt, "output_tokens": 1 if usage else 0}}
        out.prelude += [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse({"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}, "content_block_start"),
            sse({"type": "ping"}, "ping"),
        ]
        for i in range(tokens):
            out.tokens.append(sse({"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": token_text(i)}},
                                  "content_block_delta"))
        stop_reason = "max_tokens" if finish == "length" else "end_turn"
        out.closing += [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta",
                 "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                 "usage": {"output_tokens": tokens if usage else 0}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]
        return out


class GeminiProtocol(Protocol):
    name = "google"
    base_path = "/"
    _path = re.compile(r"^/v1(beta)?/models/(?P<model>[^/:]+):streamGenerateContent$")
    _status = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
               503: "UNAVAILABLE"}

    def route(self, method: str, path: str) -> str | None:
        return "stream" if method == "POST" and self._path.match(path) else None

    def key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key")

    def error_body(self, status: int, message: str) -> dict:
        return {"error": {"code": status, "message": message,
                          "status": self._status.get(status, "UNKNOWN")}}

    def error_event(self, status: int, message: str) -> bytes:
        return sse(self.error_body(status, message), sep=b"\r\n\r\n")

    def prompt_tokens(self, body: dict) -> int:
        texts = [p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", [])]
        system = body.get("systemInstruction") or {}
        texts += [p.get("text", "") for p in system.get("parts", [])]
        return count_words(*texts)

    def frames(self, body: dict, tokens: int, finish: str, usage: bool) -> Frames:
        prompt = self.prompt_tokens(body)

        def chunk(text: str, **candidate: Any) -> bytes:
            data: dict[str, Any] = {
                "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                "index": 0, **candidate}],
                "modelVersion": "fake-gemini", "responseId": "resp_fake",
            }
            if usage:
                data["usageMetadata"] = {"promptTokenCount": prompt,
                                         "totalTokenCount": prompt}
            return sse(data, sep=b"\r\n\r\n")

        out = Frames()
        out.tokens = [chunk(token_text(i)) for i in range(tokens)]
        last = json.loads(chunk("", finishReason="MAX_TOKENS" if finish == "length" else "STOP")
                          .decode()[len("data: "):])
        if usage:
            last["usageMetadata"] = {"promptTokenCount": prompt, "candidatesTokenCount": tokens,
                                     "totalTokenCount": prompt + tokens}
        out.closing.append(sse(last, sep=b"\r\n\r\n"))
        return out


PROTOCOLS: dict[str, type[Protocol]] = {
    p.name: p for p in (OpenAIProtocol, XAIProtocol, GroqProtocol, AnthropicProtocol,
                        GeminiProtocol)
}


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"

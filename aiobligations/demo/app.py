"""The demo service: an OpenAI-compatible Starlette app over the toy models."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ConfigurationError
from .models import DEFAULT_IMAGE_SIZE, IMAGE_SIZES, ToyChatModel, ToyImageModel

__all__ = ["MAX_BODY_BYTES", "build_app"]

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body the demo reads; larger ones get 413."""

# An oversized body is still read (and discarded) up to this much, so that the client, which is
# busy sending it, is not cut off by a reset before it can read the 413.
_DRAIN_BYTES = 64 * MAX_BODY_BYTES
_CREATED = 1764331200  # A fixed date for the model list: 2025-11-28.
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_MAX_PROMPT = 4000
_KINDS = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}
_JSON_TYPES = {
    str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "an object"
}
_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aiobligations demo</title>
</head>
<body>
<main>
<h1>aiobligations demo</h1>
<p>This is a small AI service with toy models and no model weights: a deterministic chat model
(<code>toy-1</code>) and a procedural image generator (<code>toy-image-1</code>).
Its API is OpenAI-compatible, so the official <code>openai</code> client works against it
with <code>base_url="http://HOST:PORT/v1"</code>.</p>
<ul>
<li><code>GET /v1/models</code></li>
<li><code>POST /v1/chat/completions</code> (with or without <code>"stream": true</code>)</li>
<li><code>POST /v1/images/generations</code> (<code>response_format</code> <code>b64_json</code>;
<code>size</code> 1024x1024 by default, or any size OpenAI accepts)</li>
</ul>
<p>Every answer is AI-generated. Every image carries a visible caption (AI生成), an invisible
watermark, the GB 45438 metadata label and C2PA content credentials. Read how this service works and how to ask for an explanation on
the <a href="/ai/transparency">transparency page</a>.</p>
</main>
</body>
</html>
"""


class _BadRequest(Exception):
    """A request the demo refuses, with its status and JSON error code."""

    def __init__(self, message: str, *, code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _read_json(request: Request) -> dict[str, Any]:
    """Read the body, at most :data:`MAX_BODY_BYTES`, and parse it as a JSON object."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES
    body, received = bytearray(), 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > MAX_BODY_BYTES:
            too_large = True
        if too_large:
            if received > _DRAIN_BYTES:
                break
            continue
        body += chunk
    if too_large:
        raise _BadRequest(
            f"the request body is larger than {MAX_BODY_BYTES} bytes", code="payload_too_large", status=413
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers invalid JSON and invalid UTF-8; absurd nesting raises RecursionError.
        raise _BadRequest("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise _BadRequest("the request body must be a JSON object")
    try:
        # JSON can spell lone surrogates ("\ud800") that no UTF-8 reply or hash can carry.
        json.dumps(data, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        raise _BadRequest("the request body contains invalid Unicode or is nested too deeply") from None
    return data


def _optional(data: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    """Return ``data[key]`` if present and not null, checked against ``kind``; else ``default``."""
    value = data.get(key)
    if value is None:
        return default
    # bool is an int in Python, but true is not a number in JSON.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _BadRequest(f"{key} must be {_KINDS[kind]}, got {_JSON_TYPES.get(type(value), type(value).__name__)}")
    return value


_MODELS = (ToyChatModel.name, ToyImageModel.name)


def _no_such_model(model: str) -> str:
    return f"the model {model[:100]!r} does not exist; the models are {', '.join(_MODELS)}"


def _check_model(data: Mapping[str, Any], expected: str, *, default: str | None = None) -> str:
    model: str | None = _optional(data, "model", str, default)
    if model is None:
        raise _BadRequest("model is required")
    if model not in _MODELS:
        raise _BadRequest(_no_such_model(model), code="model_not_found", status=404)
    if model != expected:
        raise _BadRequest(f"the model {model!r} does not support this endpoint; use {expected!r}")
    return model


def _check_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if messages is None:
        raise _BadRequest("messages is required")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _BadRequest(f"messages[{i}] must be an object with role and content")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise _BadRequest(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}")
        content = message.get("content")
        if content is None and role == "assistant":
            continue
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise _BadRequest(f"messages[{i}].content[{j}] must be a text part; only text is supported")
        elif not isinstance(content, str):
            raise _BadRequest(f"messages[{i}].content must be a string or a list of text parts")
    return messages


def _chunk(base: Mapping[str, Any], delta: Mapping[str, Any], finish: str | None, usage: bool) -> bytes:
    event = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage:
        event["usage"] = None  # OpenAI sends a null usage on every chunk but the last when asked for it.
    return _sse(event)


def _sse(event: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def build_app(*, stream_delay: float = 0.02) -> Starlette:
    """Build the demo service: toy models behind OpenAI-compatible routes, unwrapped.

    Routes: ``GET /``, ``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/chat/completions``
    (streamed with ``"stream": true``) and ``POST /v1/images/generations``. Every error is JSON
    ``{"error": {"code": ..., "message": ...}}`` with a 4xx status.

    Args:
        stream_delay: Seconds to wait between streamed tokens, like a real model.

    .. versionadded:: 0.1.0
    """
    if stream_delay < 0:
        raise ConfigurationError(f"stream_delay must be zero or more seconds, got {stream_delay!r}")
    chat, images = ToyChatModel(), ToyImageModel()
    model_cards = {
        name: {"id": name, "object": "model", "created": _CREATED, "owned_by": "aiobligations-demo"}
        for name in (chat.name, images.name)
    }

    async def home(request: Request) -> Response:
        return HTMLResponse(_HTML)

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": list(model_cards.values())})

    async def retrieve_model(request: Request) -> Response:
        card = model_cards.get(request.path_params["model"])
        if card is None:
            return _error(404, "model_not_found", _no_such_model(request.path_params["model"]))
        return JSONResponse(card)

    async def chat_completions(request: Request) -> Response:
        data = await _read_json(request)
        model = _check_model(data, chat.name)
        messages = _check_messages(data)
        stream = _optional(data, "stream", bool, False)
        options = _optional(data, "stream_options", dict, None)
        if options is not None and not stream:
            raise _BadRequest("stream_options is only allowed when stream is true")
        include_usage = _optional(options or {}, "include_usage", bool, False)
        if _optional(data, "n", int, 1) != 1:
            raise _BadRequest("only n=1 is supported")
        limit = _optional(data, "max_completion_tokens", int, None)
        if limit is None:
            limit = _optional(data, "max_tokens", int, None)
        if limit is not None and limit < 1:
            raise _BadRequest(f"max_tokens must be a positive integer, got {limit}")

        tokens = chat.tokens(chat.complete(messages))
        finish = "stop"
        if limit is not None and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        content = "".join(tokens)
        usage = chat.usage(messages, content)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
        base["system_fingerprint"] = "fp_toy1"
        if not stream:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
            return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

        base["object"] = "chat.completion.chunk"

        async def events() -> AsyncIterator[bytes]:
            yield _chunk(base, {"role": "assistant", "content": "", "refusal": None}, None, include_usage)
            for i, token in enumerate(tokens):
                if i:
                    await asyncio.sleep(stream_delay)
                yield _chunk(base, {"content": token}, None, include_usage)
            yield _chunk(base, {}, finish, include_usage)
            if include_usage:
                yield _sse({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def image_generations(request: Request) -> Response:
        data = await _read_json(request)
        model = _check_model(data, images.name, default=images.name)
        prompt = _optional(data, "prompt", str, None)
        if prompt is None or not prompt.strip():
            raise _BadRequest("prompt is required and must not be empty")
        if len(prompt) > _MAX_PROMPT:
            raise _BadRequest(f"prompt must be at most {_MAX_PROMPT} characters, got {len(prompt)}")
        n = _optional(data, "n", int, 1)
        if not 1 <= n <= 4:
            raise _BadRequest(f"n must be between 1 and 4, got {n}")
        size = _optional(data, "size", str, DEFAULT_IMAGE_SIZE)
        if size not in IMAGE_SIZES:
            raise _BadRequest(f"size must be one of {', '.join(IMAGE_SIZES)}, got {size!r}")
        if _optional(data, "response_format", str, "b64_json") != "b64_json":
            raise _BadRequest("only b64_json is supported as response_format", code="unsupported_response_format")
        if _optional(data, "stream", bool, False):
            raise _BadRequest("streaming is not supported for images")

        # Drawing a large image takes a few milliseconds of CPU: keep it off the event loop.
        pngs = [await run_in_threadpool(images.generate, prompt, size, variant=i) for i in range(n)]
        revised = " ".join(prompt.split())
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(png).decode(), "revised_prompt": revised} for png in pngs],
            },
            # An image answer's body names no model: the header does, for a request that named none.
            headers={"OpenAI-Model": model},
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, _BadRequest):
            return _error(exc.status, exc.code, exc.message)
        if not isinstance(exc, HTTPException):  # pragma: no cover - registered only for these two.
            raise exc
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, exc.detail, exc.headers)

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/images/generations", image_generations, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, _BadRequest: http_error})

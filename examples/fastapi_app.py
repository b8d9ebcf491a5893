"""A FastAPI model server made compliant with one line: ``app.add_middleware(ObligationsMiddleware, ...)``.

Run it (needs ``pip install fastapi uvicorn``)::

    python examples/fastapi_app.py [FOLDER] [--port 8000]

It serves an OpenAI-compatible ``POST /v1/chat/completions`` (with and without ``"stream": true``)
on http://127.0.0.1:8000, answered by the demo's toy model. The profile is the one named by
``AIOBLIGATIONS_CONFIG``, else ``FOLDER/aiobligations.toml``, which ``aiobligations init`` writes
there first when it is missing (with no FOLDER, into a new temporary folder). Try::

    curl -i http://127.0.0.1:8000/v1/chat/completions -H 'content-type: application/json' \\
         -d '{"model": "toy-1", "messages": [{"role": "user", "content": "Hello"}]}'

The answer carries ``AI-Disclosure`` and ``AI-Interaction-Id`` headers and an ``ai_disclosure``
field; the interaction is in the ledger; ``/ai/transparency`` explains the service.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from aiobligations import Obligations
from aiobligations.demo import ToyChatModel
from aiobligations.keys import init_project
from aiobligations.middleware import CONFIG_ENV, ObligationsMiddleware


def open_obligations(folder: str | os.PathLike[str] | None = None) -> Obligations:
    """The profile named by ``AIOBLIGATIONS_CONFIG``, else ``folder``'s, written there if missing."""
    if os.environ.get(CONFIG_ENV):
        return Obligations.from_file(os.environ[CONFIG_ENV])
    target = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="aiobligations-fastapi-"))
    if not (target / "aiobligations.toml").exists():
        init_project(target)  # What `aiobligations init FOLDER` does: a profile and development keys.
    return Obligations.from_file(target / "aiobligations.toml")


class ChatRequest(BaseModel):
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False


def create_app(obligations: Obligations) -> FastAPI:
    """The model server. It owns ``obligations``: stopping the server flushes and closes the ledger."""
    model = ToyChatModel()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Close here, not after uvicorn returns: on SIGTERM uvicorn re-raises the signal once it
        # has stopped, and the process would end before a later flush.
        obligations.close()

    app = FastAPI(title="Toy chat", lifespan=lifespan)

    # The one line: every AI route now discloses AI and leaves evidence in the ledger.
    app.add_middleware(ObligationsMiddleware, obligations=obligations)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> Any:
        reply = model.complete(request.messages)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
        if not request.stream:
            message = {"role": "assistant", "content": reply}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            usage = model.usage(request.messages, reply)
            return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}

        async def events() -> AsyncIterator[str]:
            # The middleware puts its notice in a first SSE comment and passes each chunk on at once.
            for token in model.tokens(reply):
                delta = {"index": 0, "delta": {"content": token}, "finish_reason": None}
                yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [delta]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}  # Not an AI route: the middleware leaves it alone.

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="where the profile is, or is written (default: a temporary folder)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    obligations = open_obligations(args.folder)
    print(f"ledger: {obligations.profile.ledger.path}", flush=True)
    uvicorn.run(create_app(obligations), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

"""A Starlette app with an HTML answer page and a JSON API, wrapped with ``app.add_middleware``.

Run it::

    python examples/starlette_app.py [FOLDER] [--port 8000]

and open http://127.0.0.1:8000/ask?q=Hello in a browser: the AI's answer comes with a banner that
says it is AI-generated, links to ``/ai/transparency`` and gives the interaction number to quote.
``POST /v1/chat/completions`` answers the same question as JSON, with the disclosure headers and an
``ai_disclosure`` field. The profile is the one named by ``AIOBLIGATIONS_CONFIG``, else
``FOLDER/aiobligations.toml``, which ``aiobligations init`` writes there first when it is missing
(with no FOLDER, into a new temporary folder).
"""

from __future__ import annotations

import argparse
import html
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from aiobligations import Obligations
from aiobligations.demo import ToyChatModel
from aiobligations.keys import init_project
from aiobligations.middleware import CONFIG_ENV, DEFAULT_AI_ROUTES, ObligationsMiddleware, RoutePolicy
from aiobligations.middleware import Route as AIRoute


def open_obligations(folder: str | os.PathLike[str] | None = None) -> Obligations:
    """The profile named by ``AIOBLIGATIONS_CONFIG``, else ``folder``'s, written there if missing."""
    if os.environ.get(CONFIG_ENV):
        return Obligations.from_file(os.environ[CONFIG_ENV])
    target = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="aiobligations-starlette-"))
    if not (target / "aiobligations.toml").exists():
        init_project(target)  # What `aiobligations init FOLDER` does: a profile and development keys.
    return Obligations.from_file(target / "aiobligations.toml")


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Ask the toy model</title></head>
<body>
<main style="max-width:40em;margin:2em auto;font:18px/1.5 system-ui,sans-serif">
<h1>Your question</h1>
<p>{question}</p>
<h2>The answer</h2>
<p id="answer">{answer}</p>
</main>
</body>
</html>
"""


def create_app(obligations: Obligations) -> Starlette:
    """The app. It owns ``obligations``: stopping the server flushes and closes the ledger."""
    model = ToyChatModel()

    async def ask(request: Request) -> HTMLResponse:
        question = request.query_params.get("q", "Hello")
        answer = model.complete([{"role": "user", "content": question}])
        return HTMLResponse(PAGE.format(question=html.escape(question), answer=html.escape(answer)))

    async def chat_completions(request: Request) -> JSONResponse:
        messages = (await request.json())["messages"]
        reply = model.complete(messages)
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        return JSONResponse({"object": "chat.completion", "model": model.name, "choices": [choice],
                             "usage": model.usage(messages, reply)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        obligations.close()  # Flush the ledger before uvicorn returns (and re-raises SIGTERM).

    app = Starlette(
        routes=[Route("/ask", ask), Route("/v1/chat/completions", chat_completions, methods=["POST"])],
        lifespan=lifespan,
    )

    # The OpenAI-compatible routes are AI routes by default; the answer page is one too, so it gets
    # the headers, a banner at the top of <body> and an interaction record.
    policy = RoutePolicy([*DEFAULT_AI_ROUTES, AIRoute("/ask", methods=frozenset({"GET"}))])
    app.add_middleware(ObligationsMiddleware, obligations=obligations, policy=policy)
    # The same, declared up front: Starlette(..., middleware=[Middleware(ObligationsMiddleware,
    # obligations=obligations, policy=policy)]).
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

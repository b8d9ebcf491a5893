"""How a user's code type-checks against aiobligations: mypy checks this file, pytest never runs it.

``python -m mypy`` (``[tool.mypy]`` in pyproject.toml) checks it with the package, and
tests/test_typing.py runs that check in the suite. Three kinds of lines keep the public API's types
honest:

- an assignment to an annotated variable fails if a result changes to another type;
- ``assert_type`` fails if a result changes at all, to ``Any`` included (an ``Any`` would pass any
  assignment);
- a misuse marked ``# type: ignore[code]`` must stay an error of that code: with
  ``warn_unused_ignores``, mypy fails if the API loosens until the misuse passes.

The functions are never called: they only have to type-check.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import assert_type

import structlog
from starlette.applications import Starlette

from aiobligations import Obligations
from aiobligations.adapters import LedgerHandler, LedgerProcessor, current_trace_ids
from aiobligations.inference import Interaction, current_interaction
from aiobligations.labels.labeller import Labelled, Labeller
from aiobligations.ledger import Ledger, VerifyReport
from aiobligations.middleware import ObligationsMiddleware, RoutePolicy
from aiobligations.middleware.types import Receive, Scope, Send
from aiobligations.requests import Explanation, Request, RequestDesk
from aiobligations.testing import Disclosure, TestHub, hub


async def plain_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI application."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def the_hub_from_a_profile() -> None:
    """``Obligations.from_file`` and what the hub holds."""
    obligations: Obligations = Obligations.from_file("aiobligations.toml")
    assert_type(obligations, Obligations)
    with Obligations.from_file("aiobligations.toml", keys=lambda name: None) as opened:
        assert_type(opened, Obligations)
    ledger: Ledger = obligations.ledger
    labeller: Labeller = obligations.labeller
    desk: RequestDesk = obligations.requests
    assert_type(obligations.requests, RequestDesk)
    notice: str = obligations.notice
    erased: int = obligations.erase_subject("user-1")
    print(ledger, labeller, desk, notice, erased)
    Obligations.from_file("aiobligations.toml", keys="not a callback")  # type: ignore[arg-type]
    Obligations.from_file("aiobligations.toml", ledger_path="x")  # type: ignore[call-arg]


def the_ledger(obligations: Obligations) -> None:
    """Appending a record returns its index; reading one returns the record."""
    index: int = obligations.ledger.append({"kind": "risk", "summary": "prompt injection seen"})
    assert_type(obligations.ledger.append({"kind": "risk"}, timeout=5.0), int)
    size: int = obligations.ledger.flush(timeout=30)
    checkpoint: str = obligations.ledger.sign_checkpoint()
    obligations.submit({"kind": "risk", "summary": "a record handed over without waiting"})
    print(index, size, checkpoint)
    obligations.ledger.append("not a record")  # type: ignore[arg-type]


def the_logging_adapters(obligations: Obligations) -> None:
    """Log records and structlog events copied into the ledger, typed as each library expects."""
    handler: logging.Handler = LedgerHandler(obligations.ledger, level=logging.WARNING, personal_keys=["email"])
    logging.getLogger("app").addHandler(handler)
    structlog.configure(processors=[LedgerProcessor(obligations.ledger), structlog.processors.JSONRenderer()])
    trace_id, span_id = current_trace_ids()
    assert_type(trace_id, str | None)
    print(span_id)
    LedgerHandler(obligations)  # type: ignore[arg-type]


def the_middleware(obligations: Obligations) -> None:
    """``ObligationsMiddleware(app, obligations=...)``, directly and through Starlette."""
    wrapped: ObligationsMiddleware = ObligationsMiddleware(plain_app, obligations=obligations)
    assert_type(ObligationsMiddleware(Starlette(), obligations=obligations, policy=RoutePolicy(),
                                      failure="fail_closed"), ObligationsMiddleware)
    app = Starlette()
    # Starlette checks the options against the middleware's own signature (ParamSpec).
    app.add_middleware(ObligationsMiddleware, obligations=obligations, capture_limit=1 << 16)
    print(wrapped)
    ObligationsMiddleware(plain_app, obligations=obligations, failure="fail_opne")  # type: ignore[arg-type]
    ObligationsMiddleware(plain_app, obligations)  # type: ignore[call-arg]
    app.add_middleware(ObligationsMiddleware, obligations="aiobligations.toml")  # type: ignore[arg-type]


def the_decorator(obligations: Obligations) -> None:
    """``@obligations.inference`` keeps the decorated function's signature, bare or with options."""

    @obligations.inference
    def summarise(text: str) -> str:
        interaction: Interaction | None = current_interaction()
        return text[:10] + (interaction.id if interaction is not None else "")

    @obligations.inference(subject="user_id", capture_limit=4096)
    async def answer(question: str, user_id: str) -> str:
        return question

    @obligations.inference(name="stream")
    def stream(prompt: str) -> Iterator[str]:
        yield prompt

    @obligations.inference
    async def astream(prompt: str) -> AsyncIterator[str]:
        yield prompt

    short: str = summarise("a long text")
    print(short, answer("why?", user_id="u-1"), list(stream("p")), astream("p"))
    summarise(42)  # type: ignore[arg-type]
    obligations.inference(subject=3)  # type: ignore[call-overload]


def labels_and_explanations(obligations: Obligations, image: bytes) -> None:
    """``obligations.label(...)`` and the explainer the request desk calls."""
    labelled: bytes = obligations.label(image, "image/png", interaction_id="0190-…")
    evidence: Labelled = obligations.label_with_evidence(image, explicit=True, watermark=False)
    assert_type(obligations.label(image), bytes)

    @obligations.explainer
    def explain(record: dict[str, object]) -> Explanation | None:
        return Explanation("The model answered from the documents it was given.", {"model": "m-1"})

    request: Request = obligations.requests.ask("0190-…", "user-1", "why this answer?")
    print(labelled, evidence, explain, request)
    obligations.label("text, not bytes")  # type: ignore[arg-type]
    obligations.label(image, implicit="yes")  # type: ignore[arg-type]


def the_testing_helpers() -> None:
    """``aiobligations.testing``: a throwaway hub and what the code under test recorded."""
    with hub(disclosure={"language": "en"}) as test_hub:
        assert_type(test_hub, TestHub)
        obligations: Obligations = test_hub.obligations
        records: list[dict[str, object]] = test_hub.records("interaction")
        disclosures: list[Disclosure] = test_hub.disclosures()
        first_contact: bool = disclosures[0].first_contact
        report: VerifyReport = test_hub.verify()
        print(obligations, records, first_contact, report.checkpoint_size)
    with hub(disclosure="en"):  # type: ignore[arg-type]
        pass

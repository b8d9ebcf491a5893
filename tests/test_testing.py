"""aiobligations.testing: the helper users put in their own test suites."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aiobligations.errors import ConfigurationError
from aiobligations.middleware import ObligationsMiddleware
from aiobligations.testing import TestHub, hub


async def _app(scope, receive, send):  # type: ignore[no-untyped-def]
    await receive()
    body = json.dumps({"model": "m", "choices": [{"message": {"content": "hi"}}]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def _call(app, path: str) -> dict:  # type: ignore[no-untyped-def]
    sent = []

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b'{"model": "m"}', "more_body": False}

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", b"application/json")],
             "query_string": b"", "client": ("127.0.0.1", 1234)}
    await app(scope, receive, send)
    return {"status": sent[0]["status"], "headers": dict(sent[0]["headers"]), "body": b"".join(
        m.get("body", b"") for m in sent[1:])}


def test_a_hub_records_what_the_app_did_and_cleans_up() -> None:
    """Interactions and their disclosures read back; the ledger verifies; the folder is removed."""
    with hub(disclosure={"language": "en"}) as test_hub:
        assert isinstance(test_hub, TestHub)
        folder = test_hub.folder
        app = ObligationsMiddleware(_app, obligations=test_hub.obligations)
        response = asyncio.run(_call(app, "/v1/chat/completions"))
        assert response["status"] == 200 and b"ai-disclosure" in response["headers"]
        [disclosure] = test_hub.disclosures()
        assert disclosure.header and disclosure.status == 200
        assert disclosure.interaction_id == response["headers"][b"ai-interaction-id"].decode()
        test_hub.obligations.submit({"kind": "risk", "summary": "checked"})
        assert [r["summary"] for r in test_hub.records("risk")] == ["checked"]
        assert test_hub.verify().end == 2
        assert test_hub.obligations.ledger.writer_pid is None  # A thread, no writer process.
    assert not Path(folder).exists()


def test_a_bad_table_is_named() -> None:
    """A table merged over the defaults is validated like a profile file."""
    with pytest.raises(ConfigurationError, match="language"), hub(disclosure={"language": "fr"}):
        pass
    with pytest.raises(ConfigurationError, match="must be a table"), hub(service="x"):  # type: ignore[arg-type]
        pass

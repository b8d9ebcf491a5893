"""@obligations.inference: the four kinds of function, outcomes, hooks and sealing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aiobligations import Obligations
from aiobligations.inference import current_interaction
from aiobligations.keys import init_project


@pytest.fixture
def obligations(tmp_path: Path):
    hub = Obligations.from_file(init_project(tmp_path))
    yield hub
    hub.close()


def interactions(hub: Obligations) -> list[dict]:
    size = hub.ledger.flush()
    return [r for r in (hub.ledger.read(i) for i in range(size)) if r["kind"] == "interaction"]


def test_sync_call_is_recorded_with_its_subject_sealed(obligations) -> None:
    seen = {}

    @obligations.inference(subject="user_id")
    def summarise(text: str, user_id: str) -> str:
        interaction = current_interaction()
        seen["id"], seen["notice"] = interaction.id, interaction.notice
        interaction.fields["model"] = "toy-1"
        return text.upper()

    assert "HELLO" == summarise("hello", user_id="u-1")

    (record,) = interactions(obligations)
    assert (seen["id"], "completed", "toy-1") == (record["interaction_id"], record["outcome"], record["model"])
    assert "人工智能" in seen["notice"] or "AI" in seen["notice"]
    assert {"args": ["hello"], "kwargs": {"user_id": "u-1"}} == record["personal"]["input"]
    assert "HELLO" == record["personal"]["output"]
    assert current_interaction() is None


def test_async_generator_and_generator_collect_their_items(obligations) -> None:
    @obligations.inference(subject=lambda prompt, who: who)
    async def tokens(prompt: str, who: str):
        for token in prompt.split():
            yield token

    @obligations.inference(subject="who")
    def numbers(n: int, who: str):
        yield from range(n)

    async def consume() -> list[str]:
        return [t async for t in tokens("a b c", "u-2")]

    assert ["a", "b", "c"] == asyncio.run(consume())
    assert [0, 1, 2] == list(numbers(3, who="u-3"))

    first, second = interactions(obligations)
    assert ["a", "b", "c"] == first["personal"]["output"]
    assert [0, 1, 2] == second["personal"]["output"]


def test_errors_and_early_closes_are_recorded_and_reraised(obligations) -> None:
    @obligations.inference
    async def broken() -> None:
        raise RuntimeError("model down")

    @obligations.inference
    def endless():
        while True:
            yield 1

    with pytest.raises(RuntimeError, match="model down"):
        asyncio.run(broken())
    stream = endless()
    next(stream)
    stream.close()

    failed, closed = interactions(obligations)
    assert ("error", "RuntimeError") == (failed["outcome"], failed["error"])
    assert "closed early" == closed["outcome"]
    # Without a subject nothing can be sealed: inputs and outputs are left out, not stored in clear.
    assert "personal" not in failed and "skipped" in failed["capture"]


def test_output_hooks_transform_what_is_returned(obligations) -> None:
    obligations.output_hooks.append(lambda interaction, value: f"[AI生成] {value}")

    @obligations.inference(subject="who")
    def answer(who: str) -> str:
        return "42"

    assert "[AI生成] 42" == answer(who="u-4")
    (record,) = interactions(obligations)
    assert "[AI生成] 42" == record["personal"]["output"]

"""A batch job outside HTTP: ``@obligations.inference`` gives each model call the same disclosure and evidence.

Run it::

    python examples/batch_job.py [FOLDER]

It summarises a few queued jobs, one call per job, then streams one more answer token by token
from an async generator. Each call becomes one ``interaction`` record in the ledger, its inputs and
output sealed under the person's own key (``subject="user_id"`` names the argument that says who).
Inside a call, ``current_interaction()`` gives the interaction's id and the notice to show the
person. The profile is the one named by ``AIOBLIGATIONS_CONFIG``, else ``FOLDER/aiobligations.toml``,
which ``aiobligations init`` writes there first when it is missing (with no FOLDER, into a new
temporary folder).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiobligations import Obligations
from aiobligations.demo import ToyChatModel
from aiobligations.inference import current_interaction
from aiobligations.keys import init_project
from aiobligations.middleware import CONFIG_ENV

JOBS = [
    {"user_id": "user-1001", "text": "Summarise the tenancy agreement I uploaded yesterday."},
    {"user_id": "user-1002", "text": "你好"},
    {"user_id": "user-1001", "text": "What is the notice period?"},
]


def open_obligations(folder: str | os.PathLike[str] | None = None) -> Obligations:
    """The profile named by ``AIOBLIGATIONS_CONFIG``, else ``folder``'s, written there if missing."""
    if os.environ.get(CONFIG_ENV):
        return Obligations.from_file(os.environ[CONFIG_ENV])
    target = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="aiobligations-batch-"))
    if not (target / "aiobligations.toml").exists():
        init_project(target)  # What `aiobligations init FOLDER` does: a profile and development keys.
    return Obligations.from_file(target / "aiobligations.toml")


def make_tasks(obligations: Obligations) -> tuple[Callable[..., dict[str, Any]], Callable[..., AsyncIterator[str]]]:
    """The job's two model calls, decorated with the hub's ``inference``."""
    model = ToyChatModel()

    @obligations.inference(subject="user_id")
    def summarise(text: str, *, user_id: str) -> dict[str, Any]:
        interaction = current_interaction()
        assert interaction is not None  # Always set inside a decorated call.
        messages = [{"role": "user", "content": text}]
        summary = model.complete(messages)
        # Extra facts for the record: which model answered, and how many tokens it took.
        usage = model.usage(messages, summary)
        interaction.fields.update(model=model.name, usage={"input_tokens": usage["prompt_tokens"],
                                                             "output_tokens": usage["completion_tokens"]})
        # Whatever delivers the summary (an e-mail, a report) shows the notice and the id with it.
        return {"summary": summary, "notice": interaction.notice, "interaction_id": interaction.id}

    @obligations.inference(subject="user_id")
    async def stream_answer(text: str, *, user_id: str) -> AsyncIterator[str]:
        interaction = current_interaction()
        assert interaction is not None
        interaction.fields["model"] = model.name
        # The notice goes first, before any AI-generated text reaches the person.
        yield f"[{interaction.notice} {interaction.id}]\n"
        for token in model.tokens(model.complete([{"role": "user", "content": text}])):
            await asyncio.sleep(0)  # A real model would await its next token here.
            yield token

    return summarise, stream_answer


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in stream]


def run(obligations: Obligations, jobs: list[dict[str, str]] = JOBS) -> tuple[list[dict[str, Any]], list[str]]:
    """Summarise every job, then stream an answer to the last one; return both outputs."""
    summarise, stream_answer = make_tasks(obligations)
    results = [summarise(job["text"], user_id=job["user_id"]) for job in jobs]
    streamed = asyncio.run(collect(stream_answer(jobs[-1]["text"], user_id=jobs[-1]["user_id"])))
    return results, streamed


def main() -> int:
    with open_obligations(sys.argv[1] if len(sys.argv) > 1 else None) as obligations:
        results, streamed = run(obligations)
        for job, result in zip(JOBS, results, strict=True):
            print(f"{job['user_id']}: {result['summary']}\n  {result['notice']} ({result['interaction_id']})")
        print("streamed:", "".join(streamed))
        size = obligations.ledger.flush()
    print(f"the ledger at {obligations.profile.ledger.path} holds {size} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())

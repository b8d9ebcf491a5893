"""Operators over HTTP (bearer tokens from the environment) and the rate limits on the subject's POSTs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobligations.middleware.requests import (
    RateLimit,
    RateLimiter,
    RequestEndpoints,
    load_operator_tokens,
    token_digest,
)
from structlog.testing import capture_logs

from aiobligations import Obligations
from aiobligations.demo import build_app, wrap
from aiobligations.errors import ConfigurationError
from aiobligations.interaction import uuid7
from aiobligations.keys import init_project

TOKEN = "op-token-canary-4b1d9e0f7a"
OTHER_TOKEN = "op-token-canary-other-77c2"
WRONG = "not-an-operator-token-0000"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
ALICE = {"X-Subject": "alice"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Obligations]:
    obligations = Obligations.from_file(init_project(tmp_path))
    yield obligations
    obligations.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def subject_of(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-subject":
            return value.decode()
    return None


def endpoints(hub: Obligations, clock: Clock, **options: Any) -> RequestEndpoints:
    tokens = load_operator_tokens({"OPS": f"op-1:{TOKEN}, op-2:{OTHER_TOKEN}"}, "OPS")
    return RequestEndpoints(lambda: hub.requests, prefix="/ai", subject_of=subject_of,
                            operator_tokens=tokens, clock=clock, **options)


def interaction(hub: Obligations, subject: str = "alice") -> str:
    interaction_id = str(uuid7())
    hub.ledger.append({"kind": "interaction", "interaction_id": interaction_id, "subject": subject,
                       "personal": {"input": "why was my loan refused?", "output": "no"}})
    return interaction_id


def run(app: Any, flow: Any, client: tuple[str, int] = ("203.0.113.7", 5000)) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await flow(http)

    return asyncio.run(main())


def test_operator_lists_answers_rejects_and_resolves(hub: Obligations, clock: Clock) -> None:
    app = endpoints(hub, clock)
    first, second = interaction(hub), interaction(hub)

    async def flow(http: httpx.AsyncClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        a = (await http.post("/ai/explanations", headers=ALICE,
                             json={"interaction_id": first, "question": "Why?"})).json()["id"]
        b = (await http.post("/ai/explanations", headers=ALICE,
                             json={"interaction_id": second, "question": "And this?"})).json()["id"]
        out["ids"] = (a, b)
        out["queue"] = await http.get("/ai/operator/requests", headers=OPERATOR)
        out["answer_early"] = await http.post(f"/ai/operator/requests/{a}/answer", headers=OPERATOR,
                                              json={"text": "too soon"})
        out["review"] = await http.post(f"/ai/operator/requests/{a}/review", headers=OPERATOR)
        out["answer"] = await http.post(f"/ai/operator/requests/{a}/answer", headers=OPERATOR,
                                        json={"text": "Your income was below the threshold.",
                                              "factors": {"income": "low"}})
        out["bad_factors"] = await http.post(f"/ai/operator/requests/{b}/answer", headers=OPERATOR,
                                             json={"text": "x", "factors": [1]})
        await http.post(f"/ai/operator/requests/{b}/review", headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
        out["reject"] = await http.post(f"/ai/operator/requests/{b}/reject", headers=OPERATOR,
                                        json={"reason": "That interaction made no decision about you."})
        out["subject_view"] = await http.get(f"/ai/explanations/{a}", headers=ALICE)
        out["complained"] = await http.post(f"/ai/explanations/{a}/complaints", headers=ALICE,
                                            json={"text": "That is not enough."})
        out["open_after_complaint"] = await http.get("/ai/operator/requests", headers=OPERATOR)
        out["resolve"] = await http.post(f"/ai/operator/requests/{a}/resolve", headers=OPERATOR,
                                         json={"outcome": "A person checked it; the answer stands."})
        out["open_at_end"] = await http.get("/ai/operator/requests", headers=OPERATOR)
        out["all"] = await http.get("/ai/operator/requests?all=1", headers=OPERATOR)
        out["full"] = await http.get(f"/ai/operator/requests/{a}", headers=OPERATOR)
        out["subject_final"] = await http.get(f"/ai/explanations/{a}", headers=ALICE)
        out["unknown"] = await http.get("/ai/operator/requests/nope", headers=OPERATOR)
        out["unknown_action"] = await http.post(f"/ai/operator/requests/{a}/delete", headers=OPERATOR, json={})
        out["wrong_method"] = await http.get(f"/ai/operator/requests/{a}/answer", headers=OPERATOR)
        out["empty_text"] = await http.post(f"/ai/operator/requests/{a}/answer", headers=OPERATOR,
                                            json={"text": ""})
        return out

    out = run(app, flow)
    a, b = out["ids"]
    assert 200 == out["queue"].status_code
    queued = out["queue"].json()["requests"]
    assert [a, b] == [r["id"] for r in queued]
    assert "Why?" == queued[0]["question"] and "received" == queued[0]["status"]
    assert 409 == out["answer_early"].status_code
    assert "invalid_transition" == out["answer_early"].json()["error"]["code"]
    assert "in_review" == out["review"].json()["status"]
    assert "answered" == out["answer"].json()["status"]
    assert 422 == out["bad_factors"].status_code
    assert "rejected" == out["reject"].json()["status"]
    assert ["op-2", "op-1"] == [s["by"] for s in out["reject"].json()["history"][1:]]

    seen = out["subject_view"].json()
    assert "Your income was below the threshold." == seen["answer"] and {"income": "low"} == seen["factors"]
    assert "history" not in seen and "question" not in seen  # Steps and operator ids are for operators.
    assert [a] == [r["id"] for r in out["open_after_complaint"].json()["requests"]]
    assert "resolved" == out["resolve"].json()["status"]
    assert [] == out["open_at_end"].json()["requests"]
    assert {a, b} == {r["id"] for r in out["all"].json()["requests"]}

    full = out["full"].json()
    history = full["history"]
    assert ["received", "in_review", "answered", "complained", "resolved"] == [s["step"] for s in history]
    assert [None, "op-1", "op-1", "subject", "op-1"] == [s["by"] for s in history]
    indices = [s["index"] for s in history]
    assert indices == sorted(indices) and all(isinstance(i, int) for i in indices)
    hub.ledger.flush()
    assert "answered" == hub.ledger.read(indices[2])["step"]
    assert "A person checked it; the answer stands." == out["subject_final"].json()["outcome"]

    assert 404 == out["unknown"].status_code and "not_found" == out["unknown"].json()["error"]["code"]
    assert 404 == out["unknown_action"].status_code
    assert 405 == out["wrong_method"].status_code
    assert 422 == out["empty_text"].status_code


def test_operator_lists_and_resolves_complaints(hub: Obligations, clock: Clock) -> None:
    app = endpoints(hub, clock)

    async def flow(http: httpx.AsyncClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        made = await http.post("/ai/complaints", headers=ALICE,
                               json={"category": "general", "text": "The bot was rude."})
        cid = made.json()["id"]
        out["list"] = await http.get("/ai/operator/complaints", headers=OPERATOR)
        out["resolve"] = await http.post(f"/ai/operator/complaints/{cid}/resolve", headers=OPERATOR,
                                         json={"outcome": "We retrained the tone filter."})
        out["again"] = await http.post(f"/ai/operator/complaints/{cid}/resolve", headers=OPERATOR,
                                       json={"outcome": "twice"})
        out["open"] = await http.get("/ai/operator/complaints", headers=OPERATOR)
        out["all"] = await http.get("/ai/operator/complaints?all=1", headers=OPERATOR)
        out["unknown"] = await http.post("/ai/operator/complaints/nope/resolve", headers=OPERATOR,
                                         json={"outcome": "x"})
        out["cid"] = cid
        return out

    out = run(app, flow)
    listed = out["list"].json()["complaints"]
    assert [out["cid"]] == [c["id"] for c in listed] and "The bot was rude." == listed[0]["text"]
    resolved = out["resolve"].json()
    assert "resolved" == resolved["status"] and "op-1" == resolved["history"][-1]["by"]
    assert 409 == out["again"].status_code
    assert [] == out["open"].json()["complaints"]
    assert [out["cid"]] == [c["id"] for c in out["all"].json()["complaints"]]
    assert 404 == out["unknown"].status_code


def test_tokens_401_403_and_never_logged(hub: Obligations, clock: Clock) -> None:
    app = endpoints(hub, clock)
    iid = interaction(hub)

    async def flow(http: httpx.AsyncClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rid = (await http.post("/ai/explanations", headers=ALICE,
                               json={"interaction_id": iid, "question": "Why?"})).json()["id"]
        out["none"] = await http.get("/ai/operator/requests")
        out["basic"] = await http.get("/ai/operator/requests", headers={"Authorization": f"Basic {TOKEN}"})
        out["wrong"] = await http.get("/ai/operator/requests", headers={"Authorization": f"Bearer {WRONG}"})
        out["wrong_step"] = await http.post(f"/ai/operator/requests/{rid}/review",
                                            headers={"Authorization": f"Bearer {WRONG}"})
        out["subject_key"] = await http.get("/ai/operator/requests", headers={**ALICE, "Authorization": "Bearer alice"})
        out["ok"] = await http.post(f"/ai/operator/requests/{rid}/review", headers=OPERATOR)
        out["rid"] = rid
        return out

    with capture_logs() as logs:
        out = run(app, flow)
    assert 401 == out["none"].status_code == out["basic"].status_code
    assert "unauthorized" == out["none"].json()["error"]["code"]
    assert out["none"].headers["www-authenticate"].startswith("Bearer")
    assert 403 == out["wrong"].status_code == out["wrong_step"].status_code == out["subject_key"].status_code
    assert "forbidden" == out["wrong"].json()["error"]["code"]
    assert 200 == out["ok"].status_code  # So the refused review above took no step.
    assert any(e.get("event") == "operator_denied" for e in logs)
    assert any(e.get("event") == "operator_step" and e.get("operator") == "op-1" for e in logs)
    text = repr(logs)
    for secret in (TOKEN, WRONG, token_digest(TOKEN)):
        assert secret not in text
    for response in out.values():
        if isinstance(response, httpx.Response):
            assert TOKEN not in response.text and WRONG not in response.text


def test_no_tokens_configured_lets_no_one_in(hub: Obligations, clock: Clock) -> None:
    app = RequestEndpoints(lambda: hub.requests, prefix="/ai", subject_of=subject_of, clock=clock)

    async def flow(http: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return (await http.get("/ai/operator/requests"),
                await http.get("/ai/operator/requests", headers=OPERATOR))

    none, some = run(app, flow)
    assert (401, 403) == (none.status_code, some.status_code)


def test_the_sixth_post_of_a_subject_is_429_until_the_bucket_refills(hub: Obligations, clock: Clock) -> None:
    app = endpoints(hub, clock)
    body = {"category": "general", "text": "Again."}

    async def flow(http: httpx.AsyncClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["burst"] = [await http.post("/ai/complaints", headers=ALICE, json=body) for _ in range(6)]
        out["bob"] = await http.post("/ai/complaints", headers={"X-Subject": "bob"}, json=body)
        clock.now += 359
        out["too_soon"] = await http.post("/ai/complaints", headers=ALICE, json=body)
        clock.now += 1  # 360 s: one request's worth at 10 an hour.
        out["refilled"] = await http.post("/ai/complaints", headers=ALICE, json=body)
        out["after"] = await http.post("/ai/complaints", headers=ALICE, json=body)
        out["ask"] = await http.post("/ai/explanations", headers=ALICE,
                                     json={"interaction_id": "x", "question": "y"})
        out["read"] = await http.get("/ai/explanations/unknown", headers=ALICE)  # GETs are not limited.
        return out

    out = run(app, flow)
    assert [201] * 5 + [429] == [r.status_code for r in out["burst"]]
    limited = out["burst"][5]
    assert {"error": {"code": "rate_limited", "message": limited.json()["error"]["message"]}} == limited.json()
    assert "360" == limited.headers["retry-after"]
    assert 201 == out["bob"].status_code
    assert 429 == out["too_soon"].status_code and "1" == out["too_soon"].headers["retry-after"]
    assert 201 == out["refilled"].status_code
    assert 429 == out["after"].status_code == out["ask"].status_code  # Every subject POST shares the bucket.
    assert 404 == out["read"].status_code


def test_the_per_address_limit(hub: Obligations, clock: Clock) -> None:
    app = endpoints(hub, clock, address_limit=RateLimit(60, 3))
    body = {"category": "general", "text": "Hello."}

    async def flow(http: httpx.AsyncClient) -> list[httpx.Response]:
        return [await http.post("/ai/complaints", headers={"X-Subject": f"s{i}"}, json=body) for i in range(4)]

    async def elsewhere(http: httpx.AsyncClient) -> httpx.Response:
        return await http.post("/ai/complaints", json=body)  # Anonymous: only the address limit applies.

    responses = run(app, flow)
    assert [201, 201, 201, 429] == [r.status_code for r in responses]
    assert "60" == responses[3].headers["retry-after"]
    assert "address" in responses[3].json()["error"]["message"]
    assert 201 == run(app, elsewhere, client=("198.51.100.9", 1)).status_code
    assert 429 == run(app, elsewhere).status_code


def test_a_429_spends_nothing_and_limits_can_be_off(hub: Obligations, clock: Clock) -> None:
    app = endpoints(hub, clock, subject_limit=RateLimit(60, 1), address_limit=RateLimit(60, 2))
    body = {"category": "general", "text": "Hello."}

    async def flow(http: httpx.AsyncClient) -> list[int]:
        codes = [(await http.post("/ai/complaints", headers=ALICE, json=body)).status_code for _ in range(3)]
        codes.append((await http.post("/ai/complaints", headers={"X-Subject": "bob"}, json=body)).status_code)
        return codes

    # Alice's refused POSTs did not spend the address's second request, so Bob still gets it.
    assert [201, 429, 429, 201] == run(app, flow)

    off = endpoints(hub, clock, subject_limit=None, address_limit=None)

    async def many(http: httpx.AsyncClient) -> set[int]:
        return {(await http.post("/ai/explanations", content=b"{",
                                      headers={**ALICE, "content-type": "application/json"})).status_code for _ in range(25)}

    assert {400} == run(off, many)


def test_rate_limiter_buckets_and_lru_eviction() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(2, 2, period=10), max_keys=2, clock=clock)
    assert 0 == limiter.acquire("a") == limiter.acquire("a")
    assert 5.0 == limiter.acquire("a")  # 2 per 10 s: one every 5 s.
    clock.now += 5
    assert 0 == limiter.acquire("a")
    limiter.acquire("b")
    limiter.acquire("c")  # Evicts "a", the least recently used.
    assert 2 == len(limiter)
    assert 0 == limiter.wait("a") and 0 < limiter.acquire("c") + 1
    with pytest.raises(ConfigurationError):
        RateLimit(0, 1)
    with pytest.raises(ConfigurationError):
        RateLimit(1, 0)
    with pytest.raises(ConfigurationError):
        RateLimiter(RateLimit(1, 1), max_keys=0)


def test_load_operator_tokens() -> None:
    loaded = load_operator_tokens({"V": f" op-1:{TOKEN} ,op-2:{OTHER_TOKEN}:with-colon"}, "V")
    assert {token_digest(TOKEN): "op-1", token_digest(f"{OTHER_TOKEN}:with-colon"): "op-2"} == loaded
    assert {} == load_operator_tokens({}, "V") == load_operator_tokens({"V": "  "}, "V")
    assert {token_digest(TOKEN): "op-1"} == load_operator_tokens(
        {"AIOBLIGATIONS_OPERATOR_TOKENS": f"op-1:{TOKEN}"})
    for bad in (f"op-1{TOKEN}", f"op-1:{TOKEN},", f":{TOKEN}", "op-1:short", f"op-1:{TOKEN},op-1:{OTHER_TOKEN}",
                f"op-1:{TOKEN},op-2:{TOKEN}", f"op 1:{TOKEN}"):
        with pytest.raises(ConfigurationError) as caught:
            load_operator_tokens({"OPS_TOKENS": bad}, "OPS_TOKENS")
        assert "OPS_TOKENS" in str(caught.value)
        assert bad not in str(caught.value) and TOKEN not in str(caught.value)
    with pytest.raises(ConfigurationError):
        RequestEndpoints(lambda: None, prefix="/ai", subject_of=subject_of,  # type: ignore[arg-type,return-value]
                         operator_tokens={TOKEN: "op-1"})  # A raw token, not a digest.


def test_the_wrapped_demo_routes_operator_paths(hub: Obligations) -> None:
    app = wrap(build_app(stream_delay=0), hub)

    async def flow(http: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return (await http.get("/ai/operator/requests"),
                await http.get("/ai/operator/requests", headers=OPERATOR))

    none, some = run(app, flow)
    assert 401 == none.status_code and "unauthorized" == none.json()["error"]["code"]
    assert 403 == some.status_code  # The demo is wired without operator tokens yet.

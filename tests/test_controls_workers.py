"""The takeover switch reaches every worker and every replica within 2 s (issue 13, Art. 52(4)).

Real multi-process servers (uvicorn ``--workers``, gunicorn with ``--preload``, whose workers fork
from a master that built the middleware), switched on and off by the ``aiobligations`` console
script while they serve; and two replica ledgers on PostgreSQL, each behind its own middleware.
Every response names the worker that served it (``X-Worker-Pid``, see :mod:`_workers_app`); the
test polls over fresh connections until each worker has answered 503 since the switch, and
measures from the time the switch's record says it was made.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_workers import (
    PID_HEADER,
    WORKERS,
    Site,
    free_port,
    gunicorn_argv,
    serving,
    until,
    uvicorn_argv,
)

from aiobligations import Obligations
from aiobligations.keys import init_project
from aiobligations.profile import load_profile

CLI_TIMEOUT = 120
PROPAGATION = 2.0  # Seconds: the bound for a switch to reach every worker.
CHAT = {"model": "toy-1", "messages": [{"role": "user", "content": "hi"}]}


def _cli(site: Site, *args: str) -> str:
    import subprocess

    from test_controls import CLI

    done = subprocess.run([CLI, *args, "--config", str(site.config)], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False, cwd=site.config.parent)
    assert 0 == done.returncode, f"{args} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def _recorded_at(output: str) -> float:
    """The wall-clock time the switch's record says it was made (``takeover on`` prints it)."""
    match = re.search(r"recorded at (\S+),", output)
    assert match, output
    return datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()


def _every_worker_answers(base_url: str, workers: set[int], status: int, since: float) -> dict[int, float]:
    """Poll over fresh connections until every worker's answers are ``status``; return, per worker,
    the wall-clock time of its first such answer (after which it never answered otherwise)."""
    first: dict[int, float] = {}

    def check() -> bool:
        with httpx.Client(base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for _ in range(6):
                response = client.post("/v1/chat/completions", json=CHAT)
                now = time.time()
                pid = int(response.headers[PID_HEADER])
                assert pid in workers, f"an unknown worker {pid} answered"
                if response.status_code == status:
                    first.setdefault(pid, now)
                else:
                    # A worker that answered `status` once must keep doing so.
                    assert pid not in first, f"worker {pid} answered {response.status_code} after {status}"
                    assert response.status_code in (200, 503), response.text
        return set(first) == workers

    until(check, 30, f"every worker to answer {status}")
    return first


def _switch_and_measure(site: Site, base_url: str, workers: set[int]) -> tuple[float, float]:
    served = httpx.post(base_url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert 200 == served.status_code, served.text
    # Measured from the record's own time: the CLI's exit and the first poll count against the bound.
    at = _recorded_at(_cli(site, "takeover", "on", "--reason", "drill", "--by", "op-1"))
    taken = _every_worker_answers(base_url, workers, 503, at)
    on_delay = max(taken.values()) - at
    refused = httpx.post(base_url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert "service_taken_over" == refused.json()["error"]["code"] and refused.headers["retry-after"]
    assert 200 == httpx.get(base_url + "/ai/transparency", timeout=30).status_code
    off_at = _recorded_at(_cli(site, "takeover", "off", "--by", "op-1"))
    back = _every_worker_answers(base_url, workers, 200, off_at)
    off_delay = max(back.values()) - off_at
    return on_delay, off_delay


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn-preload"])
def test_takeover_from_the_cli_reaches_every_worker_within_2_s(server: str, tmp_path: Path) -> None:
    """Switched on by the console script while the server runs, every worker answers 503 within 2 s
    of the record; switched off, every worker serves again."""
    from aiobligations.keys import load_signer

    config = init_project(tmp_path / "site")
    profile = load_profile(config)
    site = Site(config=config, ledger=Path(profile.ledger.path).resolve(),
                verifier_key=load_signer(profile.ledger.signing_key, profile.ledger.origin).verifier_key,
                folder=tmp_path)
    port = free_port()
    argv = (uvicorn_argv("app", port) if server == "uvicorn"
            else gunicorn_argv("app", port, preload=True))
    with serving(argv, site, server, port) as service:
        service.wait_ready()
        workers = until(lambda: service.workers() if len(service.workers()) == WORKERS else None, 60,
                        f"{WORKERS} workers")
        on_delay, off_delay = _switch_and_measure(site, service.base_url, workers)
        print(f"{server}: takeover reached all {WORKERS} workers {on_delay:.3f} s after its record; "
              f"its end {off_delay:.3f} s after its record")
        assert on_delay < PROPAGATION, f"the takeover took {on_delay:.2f} s to reach every worker"
        assert off_delay < PROPAGATION, f"the end of the takeover took {off_delay:.2f} s to reach every worker"
        service.stop(signal.SIGTERM if server != "uvicorn" else signal.SIGINT)
    with Obligations.from_file(config) as hub:
        states = [hub.ledger.read(i)["state"] for i in hub.ledger.indices_of(("control",), 0, hub.ledger.durable_size())]
        assert ["on", "off"] == states


def test_takeover_from_the_cli_reaches_every_worker_of_two_replica_servers(tmp_path: Path, pg_url: str,
                                                                            pg_schema: str) -> None:
    """Two replica servers on one PostgreSQL schema (uvicorn, 2 workers each, real processes): the
    console script, run with replica B's profile while both serve, switches on; every worker of
    both replicas answers 503 within 2 s of the record, and serves again within 2 s of the end."""
    from test_replicas import Replica, assert_clean_logs, make_site, running, stop_all

    site = make_site(tmp_path, pg_url, pg_schema)
    a, b = Replica("replica-a", site.folders[0]), Replica("replica-b", site.folders[1])
    cli_site = Site(config=b.config, ledger=b.folder / "ledger.db", verifier_key=site.verifier_key, folder=b.folder)
    with running(a, b):
        workers = {replica.name: replica.workers() for replica in (a, b)}
        delays = []
        for state, status in (("on", 503), ("off", 200)):
            args = ["takeover", "on", "--reason", "replica drill"] if state == "on" else ["takeover", "off"]
            at = _recorded_at(_cli(cli_site, *args, "--by", "op-1"))
            for replica in (a, b):
                first = _every_worker_answers(replica.base_url, workers[replica.name], status, at)
                delays.append((state, replica.name, max(first.values()) - at))
        print("; ".join(f"{state} reached every worker of {name} {delay:.3f} s after its record"
                        for state, name, delay in delays))
        assert all(delay < PROPAGATION for _, _, delay in delays), delays
        stop_all(a, b)
    assert_clean_logs(a, b)


def test_takeover_reaches_another_replica_within_2_s(tmp_path: Path, make_replica: Any) -> None:
    """Two replica ledgers on one PostgreSQL schema, each behind its own middleware: a switch made
    through replica A's operator endpoint reaches replica B within 2 s, and so does its end."""
    from test_controls import OPERATOR, TOKEN, raw_app

    from aiobligations.middleware import ObligationsMiddleware

    config = init_project(tmp_path / "site")
    profile = load_profile(config)
    import os

    os.environ["AIOBLIGATIONS_OPERATOR_TOKENS"] = f"op-7:{TOKEN}"
    try:
        a = Obligations(profile, ledger=make_replica())
        b = Obligations(profile, ledger=make_replica())
        app_a = ObligationsMiddleware(raw_app, obligations=a)
        app_b = ObligationsMiddleware(raw_app, obligations=b)
    finally:
        del os.environ["AIOBLIGATIONS_OPERATOR_TOKENS"]

    async def post(app: Any, path: str, **options: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post(path, **options)

    def status_on_b() -> int:
        return asyncio.run(post(app_b, "/v1/chat/completions", json=CHAT)).status_code

    try:
        assert 200 == status_on_b()
        switched = asyncio.run(post(app_a, "/ai/operator/takeover", headers=OPERATOR,
                                    json={"state": "on", "reason": "replica drill"}))
        assert 200 == switched.status_code and switched.json()["changed"], switched.text
        done = time.monotonic()
        until(lambda: status_on_b() == 503, 10, "replica B to answer 503")
        on_delay = time.monotonic() - done
        assert asyncio.run(post(app_a, "/v1/chat/completions", json=CHAT)).status_code == 503
        # The same switch pressed on B changes nothing: B already knows it is on.
        again = asyncio.run(post(app_b, "/ai/operator/takeover", headers=OPERATOR, json={"state": "on"}))
        assert again.json()["changed"] is False
        ended = asyncio.run(post(app_b, "/ai/operator/takeover", headers=OPERATOR, json={"state": "off"}))
        assert ended.json()["changed"] is True
        done = time.monotonic()
        until(lambda: asyncio.run(post(app_a, "/v1/chat/completions", json=CHAT)).status_code == 200, 10,
              "replica A to serve again")
        off_delay = time.monotonic() - done
        print(f"replicas: on reached B after {on_delay:.3f} s, off reached A after {off_delay:.3f} s")
        assert on_delay < PROPAGATION and off_delay < PROPAGATION
    finally:
        a.close()
        b.close()

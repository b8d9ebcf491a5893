"""Termination on real multi-process servers: a plan made by the console script reaches every worker,
and the service's own background check shreds every subject once, whichever worker gets there first.

The plan is made ``--at`` a past day, so that its end and its deletion day have passed on the real
clock the workers read: every worker must answer 410, and one ``shredded`` record must follow.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from test_controls_workers import CHAT, CLI_TIMEOUT, _cli
from test_workers import PID_HEADER, WORKERS, Site, free_port, gunicorn_argv, serving, until, uvicorn_argv

from aiobligations import Obligations
from aiobligations.keys import init_project, load_signer
from aiobligations.profile import load_profile


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn-preload"])
def test_a_past_plan_ends_every_worker_and_shreds_once(server: str, tmp_path: Path) -> None:
    """Planned by the CLI while the server runs, with its end and deletion day already past: every worker
    answers 410 within moments, the subjects are shredded once (one shredded record), and verify exits 0."""
    config = init_project(tmp_path / "site")
    profile = load_profile(config)
    site = Site(config=config, ledger=Path(profile.ledger.path).resolve(),
                verifier_key=load_signer(profile.ledger.signing_key, profile.ledger.origin).verifier_key,
                folder=tmp_path)
    port = free_port()
    argv = uvicorn_argv("app", port) if server == "uvicorn" else gunicorn_argv("app", port, preload=True)
    with serving(argv, site, server, port) as service:
        service.wait_ready()
        workers = until(lambda: service.workers() if len(service.workers()) == WORKERS else None, 60,
                        f"{WORKERS} workers")
        for _ in range(4):  # Each fresh client is a new person (a new cookie): a subject with a key.
            assert 200 == httpx.post(service.base_url + "/v1/chat/completions", json=CHAT, timeout=30).status_code

        _cli(site, "terminate", "plan", "--end", "2025-03-03", "--by", "op-1", "--at", "2025-01-02T09:00+08:00")
        planned = time.monotonic()
        gone: set[int] = set()

        def every_worker_gone() -> bool:
            with httpx.Client(base_url=service.base_url, timeout=30,
                              limits=httpx.Limits(max_keepalive_connections=0)) as client:
                for _ in range(6):
                    response = client.post("/v1/chat/completions", json=CHAT)
                    pid = int(response.headers[PID_HEADER])
                    if response.status_code == 410:
                        assert "service_terminated" == response.json()["error"]["code"]
                        gone.add(pid)
                    else:
                        assert pid not in gone, f"worker {pid} served again after answering 410"
            return gone == workers

        until(every_worker_gone, 30, "every worker to answer 410")
        print(f"{server}: every worker answered 410 {time.monotonic() - planned:.2f} s after the plan")
        page = httpx.get(service.base_url + "/ai/transparency?lang=en", timeout=30).text
        assert "Notice of the end of this service" in page

        def shredded() -> bool:
            status = json.loads(_cli(site, "terminate", "status", "--json"))
            return status["plan"]["shredded"] is not None and status["subjects_left"] == 0

        # The first worker to see the plan shreds; a request another worker served before it saw the
        # plan made a key after that, which the background check sweeps with another record.
        until(shredded, 60, "the background check to shred every subject")
        service.stop(signal.SIGTERM if server != "uvicorn" else signal.SIGINT)
    with Obligations.from_file(config) as hub:
        ledger = hub.ledger
        records = [ledger.read(i) for i in ledger.indices_of(("control",), 0, ledger.durable_size())]
        actions = [r["action"] for r in records if r.get("control") == "termination"]
        assert "plan" == actions[0] and {"shredded"} == set(actions[1:]) and len(actions) >= 2
        assert sum(r.get("subjects", 0) for r in records) >= 4
        assert [] == ledger.subject_pseudonyms()
    verified = subprocess.run([str(Path(__import__("sys").executable).with_name("aiobligations")), "verify",
                               str(site.ledger), "--config", str(config)], capture_output=True, text=True,
                              timeout=CLI_TIMEOUT, cwd=config.parent)
    assert 0 == verified.returncode, verified.stdout + verified.stderr
